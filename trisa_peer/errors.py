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
    └── SectigoError(.status)       the Sectigo IoT Manager API (or its emulator) failed
"""

from __future__ import annotations

from collections.abc import Sequence

from .steps import HandshakeStep

__all__ = [
    "CertificateError",
    "ChainVerificationError",
    "ConfigurationError",
    "DirectoryError",
    "DirectoryMismatchError",
    "DirectoryNotFoundError",
    "EnvelopeError",
    "EnvelopeRejection",
    "HandshakeError",
    "PeerNotRegisteredError",
    "RevokedError",
    "SectigoError",
    "StoreError",
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
    (common name, or ``""`` when it is not known yet), ``reason`` a short
    machine-readable code such as ``"expired"`` or ``"not-registered"``.
    """

    default_reason = "handshake-failed"

    def __init__(
        self,
        message: str,
        *,
        step: HandshakeStep,
        peer: str = "",
        reason: str | None = None,
    ) -> None:
        self.step = step
        self.peer = peer
        self.reason = reason or self.default_reason
        super().__init__(f"{step}: {message}")


class PeerNotRegisteredError(HandshakeError):
    """The directory holds no VERIFIED record for the peer."""

    default_reason = "not-registered"


class TransportSecurityError(HandshakeError):
    """The TLS handshake failed (the cause is in the message)."""

    default_reason = "tls-failed"


class ChainVerificationError(HandshakeError):
    """The certificate chain does not satisfy the TRISA policy."""

    default_reason = "chain-invalid"


class DirectoryMismatchError(HandshakeError):
    """The presented certificate is not the one the directory has on record.

    ``mismatches`` lists ``(field, presented, registered)`` triples for diagnosis
    (fingerprint, serial, public key); none of them holds secret material.
    """

    default_reason = "certificate-mismatch"

    def __init__(
        self,
        message: str,
        *,
        step: HandshakeStep,
        peer: str = "",
        reason: str | None = None,
        mismatches: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        self.mismatches = tuple(mismatches)
        super().__init__(message, step=step, peer=peer, reason=reason)


class RevokedError(HandshakeError):
    """The certificate is revoked (directory flag or CRL)."""

    default_reason = "revoked"


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


class SectigoError(TrisaPeerError):
    """The Sectigo IoT Manager API (or the local emulator) failed.

    ``status`` is the HTTP status code, or 0 when no HTTP answer was received.
    """

    def __init__(self, message: str, *, status: int = 0) -> None:
        self.status = status
        super().__init__(message)
