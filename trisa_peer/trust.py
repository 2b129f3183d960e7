"""The TRISA trust pool: root anchors and intermediates, kept apart.

cryptography's :class:`~cryptography.x509.verification.Store` treats *every* member as
a trust anchor, leaves included, so only self-signed roots go into the store;
intermediates are offered to the verifier as untrusted candidates. gRPC (BoringSSL)
gets the PEM of both, which is how it builds chains for client certificates.

Pure: imports neither grpc nor the generated protobuf code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from cryptography import x509
from cryptography.x509.verification import Store

from .certs import certs_to_pem, fingerprint
from .errors import CertificateError

__all__ = ["TrustPool", "is_self_signed"]


def is_self_signed(cert: x509.Certificate) -> bool:
    """True when the certificate is its own issuer and its signature verifies."""
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, Exception):  # InvalidSignature and friends
        return False
    return True


@dataclass(frozen=True)
class TrustPool:
    """TRISA roots (trust anchors) and intermediates (chain-building candidates).

    What is *not* checked here: whether the certificates are CAs, valid now, or strong
    enough. The verifier checks all of that for every chain it builds.
    """

    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()
    _fps: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.roots:
            raise CertificateError("trust pool holds no self-signed root certificate")
        object.__setattr__(
            self, "_fps", frozenset(fingerprint(c) for c in (*self.roots, *self.intermediates))
        )

    @classmethod
    def from_certificates(cls, certs: Iterable[x509.Certificate]) -> TrustPool:
        """Split certificates into self-signed roots and the rest (deduplicated)."""
        roots: list[x509.Certificate] = []
        inters: list[x509.Certificate] = []
        seen: set[str] = set()
        for cert in certs:
            fp = fingerprint(cert)
            if fp in seen:
                continue
            seen.add(fp)
            (roots if is_self_signed(cert) else inters).append(cert)
        return cls(tuple(roots), tuple(inters))

    @classmethod
    def load(cls, *paths: str | os.PathLike[str]) -> TrustPool:
        """Load PEM bundles, DER files or zips (see :func:`trisa_peer.certs.load_trust_pool`)."""
        from .certs import load_trust_pool

        certs = load_trust_pool(paths)
        try:
            return cls.from_certificates(certs)
        except CertificateError as exc:
            names = ", ".join(os.fspath(p) for p in paths)
            raise CertificateError(f"{names}: {exc}") from exc

    @cached_property
    def store(self) -> Store:
        return Store(list(self.roots))

    def pem(self) -> bytes:
        """Roots then intermediates, PEM: gRPC's ``root_certificates``."""
        return certs_to_pem([*self.roots, *self.intermediates])

    def __contains__(self, cert: object) -> bool:
        return isinstance(cert, x509.Certificate) and fingerprint(cert) in self._fps
