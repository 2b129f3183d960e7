"""The one exception tree of trisa-peer.

Every error this package raises on purpose derives from :class:`TrisaPeerError`;
foreign exceptions (``grpc``, ``ssl``, ``cryptography``, ``urllib``, ``sqlite3``) are
translated at one boundary per module with ``raise ... from exc``. The ``str()`` of
every error is a single line suitable for a CLI's stderr and for a gRPC status message;
it never contains key material, passwords, tokens or envelope payloads.

::

    TrisaPeerError
    ├── ConfigurationError          bad option, missing file, unusable setting
    │   └── UsageError              a command used wrongly (the CLI exits 2)
    ├── CertificateError            unreadable / malformed / wrong password / weak key
    ├── HandshakeError(.step, .peer, .reason)
    │   ├── PeerNotRegisteredError  no VERIFIED directory record for the peer
    │   ├── TransportSecurityError  the TLS handshake itself failed
    │   ├── ChainVerificationError  chain / EKU / validity / key-size policy failed
    │   ├── DirectoryMismatchError(.mismatches)  presented leaf != registered leaf
    │   └── RevokedError            directory ``revoked`` flag or CRL entry
    ├── DirectoryError              the directory could not answer (or refused)
    │   └── DirectoryNotFoundError  the directory answered: no such record
    ├── EnvelopeError               a local failure to seal / open an envelope
    │   └── EnvelopeRejection(.code, .retry)  a rejection to send back to the peer
    ├── StoreError                  persistent storage failed
    │   └── StoreConflictError      a duplicate key or broken reference
    ├── TransferError               an envelope could not be delivered (not a rejection)
    │   └── ChannelBrokenError(.retry)  the channel to the peer no longer works
    └── SectigoError(.status)       the Sectigo IoT Manager API (or its emulator) failed
        └── SectigoAPIError(.api_status, .api_message, .error_code, .timestamp)
                                    a non-2xx answer carrying a Sectigo APIError body

``HandshakeError.reason`` is a :class:`~trisa_peer.steps.Reason`. Mapping these errors
to and from gRPC status codes happens in one place, :mod:`trisa_peer.transport.status`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict, Unpack

from .steps import HandshakeStep, Reason

__all__ = [
    "CertificateError",
    "ChainVerificationError",
    "ChannelBrokenError",
    "ConfigurationError",
    "DirectoryError",
    "DirectoryMismatchError",
    "DirectoryNotFoundError",
    "EnvelopeError",
    "EnvelopeRejection",
    "HandshakeError",
    "PeerNotRegisteredError",
    "RevokedError",
    "SectigoAPIError",
    "SectigoError",
    "StoreConflictError",
    "StoreError",
    "TransferError",
    "TransportSecurityError",
    "TrisaPeerError",
    "UsageError",
]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class TrisaPeerError(Exception):
    """Base class of every error raised on purpose by trisa-peer."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigurationError(TrisaPeerError):
    """A setting, option or file path cannot be used as given."""


class UsageError(ConfigurationError):
    """A command was used wrongly (missing or conflicting options): the CLI exits 2."""


class CertificateError(TrisaPeerError):
    """Certificate or key material could not be loaded or is unacceptable."""


class HandshakeError(TrisaPeerError):
    """A peer failed one of the eight handshake steps.

    ``step`` is the :class:`HandshakeStep` that failed, ``peer`` the peer's name
    (common name, or ``""`` when it is not known yet), ``reason`` the
    :class:`~trisa_peer.steps.Reason` (each subclass has a default).
    """

    default_reason = Reason.HANDSHAKE_FAILED

    def __init__(
        self,
        message: str,
        *,
        step: HandshakeStep,
        peer: str = "",
        reason: Reason | None = None,
    ) -> None:
        self.step = step
        self.peer = peer
        self.reason: Reason = reason or self.default_reason
        super().__init__(f"{step}: {message}")


class _HandshakeFields(TypedDict, total=False):
    peer: str
    reason: Reason | None


class PeerNotRegisteredError(HandshakeError):
    """The directory holds no VERIFIED record for the peer."""

    default_reason = Reason.NOT_REGISTERED


class TransportSecurityError(HandshakeError):
    """The TLS handshake failed (the cause is in the message)."""

    default_reason = Reason.TLS_FAILED


class ChainVerificationError(HandshakeError):
    """The certificate chain does not satisfy the TRISA policy."""

    default_reason = Reason.CHAIN_INVALID


class DirectoryMismatchError(HandshakeError):
    """The presented certificate is not the one the directory has on record.

    ``mismatches`` lists ``(field, presented, registered)`` triples for diagnosis
    (fingerprint, serial, public key); none of them holds secret material.
    """

    default_reason = Reason.CERTIFICATE_MISMATCH

    def __init__(
        self,
        message: str,
        *,
        step: HandshakeStep,
        mismatches: Sequence[tuple[str, str, str]] = (),
        **fields: Unpack[_HandshakeFields],
    ) -> None:
        self.mismatches = tuple(mismatches)
        super().__init__(message, step=step, **fields)


class RevokedError(HandshakeError):
    """The certificate is revoked (directory flag or CRL)."""

    default_reason = Reason.REVOKED


class DirectoryError(TrisaPeerError):
    """The directory service failed or refused a request."""


class DirectoryNotFoundError(DirectoryError):
    """The directory answered that no such record exists."""


class EnvelopeError(TrisaPeerError):
    """A secure envelope could not be sealed or opened locally."""


class EnvelopeRejection(EnvelopeError):
    """A TRISA rejection to send back to the peer inside an error envelope.

    ``code`` is the numeric ``trisa.api.v1beta1.Error.Code``; ``retry`` says
    whether the peer may fix the problem and send again.
    """

    def __init__(self, code: int, message: str, *, retry: bool = False) -> None:
        self.code = int(code)
        self.retry = retry
        super().__init__(message)


class StoreError(TrisaPeerError):
    """Persistent storage could not be read or written."""


class StoreConflictError(StoreError):
    """A write broke a uniqueness or reference rule (e.g. a duplicate key)."""


class TransferError(TrisaPeerError):
    """A transfer could not be delivered (network or peer failure, not a rejection)."""


class ChannelBrokenError(TransferError):
    """The channel to the peer no longer works: drop it.

    ``retry`` is true when its TLS failed (e.g. the peer rotated its certificate: plan
    again from the directory, re-pin and send once more), false when the peer refused
    this node.
    """

    def __init__(self, message: str, *, retry: bool) -> None:
        self.retry = retry
        super().__init__(message)


class SectigoError(TrisaPeerError):
    """The Sectigo IoT Manager API (or the local emulator) failed.

    ``status`` is the HTTP status code, or 0 when no HTTP answer was received.
    """

    def __init__(self, message: str, *, status: int = 0) -> None:
        self.status = status
        super().__init__(message)


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
