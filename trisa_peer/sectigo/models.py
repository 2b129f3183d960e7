"""Sectigo IoT Manager constants, status normalisation and the API error type.

JSON replies are returned by the client as plain ``dict``/``list`` values with the
API's own camelCase keys (see ``spec/sectigo-api.md`` §3.1): they round-trip to the
CLI's JSON output unchanged and the directory reads the few keys it needs.
"""

from __future__ import annotations

from typing import Any

from ..errors import SectigoError

__all__ = [
    "BATCH_STATUSES",
    "COLLECTED",
    "DEFAULT_ENDPOINT",
    "PROCESSING",
    "READY_FOR_DOWNLOAD",
    "SectigoAPIError",
    "normalize_status",
]

DEFAULT_ENDPOINT = "https://iot.sectigo.com"

FAILED = "FAILED"
REJECTED = "REJECTED"
PROCESSING = "PROCESSING"
NOT_ACCEPTABLE = "NOT_ACCEPTABLE"
READY_FOR_DOWNLOAD = "READY_FOR_DOWNLOAD"
COLLECTED = "COLLECTED"
REMOVED_AFTER_EXPIRATION = "REMOVED_AFTER_EXPIRATION"
BROKEN = "BROKEN"
REVOKED = "REVOKED"

BATCH_STATUSES = (
    FAILED,
    REJECTED,
    PROCESSING,
    NOT_ACCEPTABLE,
    READY_FOR_DOWNLOAD,
    COLLECTED,
    REMOVED_AFTER_EXPIRATION,
    BROKEN,
    REVOKED,
)


def normalize_status(text: str) -> str:
    """``"Ready for download"`` → ``"READY_FOR_DOWNLOAD"`` (trim, upper-case, ``_``)."""
    return "_".join(text.strip().upper().split())


class SectigoAPIError(SectigoError):
    """A non-2xx answer that carried a Sectigo APIError body.

    ``status`` is the HTTP status; ``api_status``, ``api_message``, ``error_code`` and
    ``timestamp`` are the body's ``status``, ``message``, ``errorCode`` and
    ``timestamp`` fields (``None`` when absent).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: dict[str, Any] | None = None,
    ) -> None:
        body = body or {}
        self.api_status = _int_or_none(body.get("status"))
        msg = body.get("message")
        self.api_message = msg if isinstance(msg, str) else None
        self.error_code = _int_or_none(body.get("errorCode"))
        self.timestamp = _int_or_none(body.get("timestamp"))
        super().__init__(message, status=status)


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
