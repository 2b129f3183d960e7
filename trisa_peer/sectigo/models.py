"""Sectigo IoT Manager constants and status normalisation.

JSON replies are returned by the client as plain ``dict``/``list`` values with the
API's own camelCase keys (as upstream ``pkg/sectigo`` sends them): they round-trip to the
CLI's JSON output unchanged and the directory reads the few keys it needs.
"""

from __future__ import annotations

from ..errors import SectigoAPIError  # re-exported: defined in the one exception tree

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
