"""Directory records as the handshake sees them: frozen, protobuf-free value objects.

The directory adapter (:mod:`trisa_peer.directory`) converts GDS ``LookupReply`` messages
into :class:`PeerRecord`; the verification core never touches protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cryptography import x509

from .errors import ConfigurationError
from .netutil import split_host_port

__all__ = ["DirectoryLookup", "PeerRecord", "SupersededCertificate", "split_endpoint"]


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``"host:port"`` -> ``("host", port)``; IPv6 literals in brackets are accepted."""
    text = endpoint.strip()
    if "://" in text:
        raise ConfigurationError(f"endpoint {endpoint!r} must be host:port, without a scheme")
    try:
        return split_host_port(text)
    except ValueError:
        raise ConfigurationError(
            f"endpoint {endpoint!r} is not host:port with a port 1-65535"
        ) from None


@dataclass(frozen=True)
class SupersededCertificate:
    """The identity certificate a planned reissue replaced, still acceptable for
    binding (steps 4 and 7) until ``grace_until`` (UTC). The directory offers it only
    while the grace lasts and never once it is revoked (issue 14, docs/rotation.md)."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    grace_until: datetime


@dataclass(frozen=True)
class PeerRecord:
    """A VERIFIED VASP as the directory returned it from Lookup.

    ``identity_certificate`` is the registered mTLS leaf (``None`` when the directory
    has none), ``identity_chain`` the rest of its chain as registered, and
    ``identity_revoked`` the directory's ``revoked`` flag for it. ``signing_certificate``
    holds the envelope sealing key when one is registered. ``superseded`` is the
    previous identity certificate while its reissue grace lasts (``None`` otherwise).
    """

    id: str
    common_name: str
    endpoint: str
    registered_directory: str = ""
    identity_certificate: x509.Certificate | None = None
    identity_chain: tuple[x509.Certificate, ...] = ()
    identity_revoked: bool = False
    signing_certificate: x509.Certificate | None = None
    name: str = ""
    country: str = ""
    verified_on: str = ""
    superseded: SupersededCertificate | None = None
    fetched_at: datetime | None = field(default=None, compare=False)

    @property
    def host(self) -> str:
        return split_endpoint(self.endpoint)[0]

    @property
    def port(self) -> int:
        return split_endpoint(self.endpoint)[1]


class DirectoryLookup(Protocol):
    """What the handshake needs from a directory.

    ``lookup`` returns the VERIFIED record for a common name or id; it raises
    :class:`~trisa_peer.errors.DirectoryNotFoundError` when the directory answers that
    there is none and :class:`~trisa_peer.errors.DirectoryError` when it cannot answer.
    ``fresh=True`` bypasses any cache. ``verification_status`` explains a NotFound
    (e.g. ``"PENDING_REVIEW"``), or returns ``None`` when unknown or unreachable.
    """

    def lookup(
        self, *, common_name: str | None = None, vasp_id: str | None = None, fresh: bool = False
    ) -> PeerRecord: ...

    def verification_status(self, common_name: str) -> str | None: ...


