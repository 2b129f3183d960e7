"""Certificate-chain verification under the TRISA policy, plus CRL checks.

What :class:`ChainVerifier` checks, for a client (step 3) or server (step 6) leaf:

* the leaf and every key that signs in the chain use RSA >= 2048 bits or EC P-256/384/521
  (cryptography enforces 2048 bits only for keys that verify signatures, so the leaf's
  own key is checked here by hand);
* the leaf is inside its validity window at the injected clock's time, and so is every
  certificate of the chain built;
* the chain ends at one of the TRISA roots of the :class:`~trisa_peer.trust.TrustPool`
  (intermediates come from the peer and from the pool), within ``max_chain_depth``;
* CA certificates satisfy the web-PKI CA profile; the leaf satisfies the web-PKI
  end-entity profile except that ``extendedKeyUsage`` may be critical (real Sectigo
  TRISA leaves mark it critical) -- its *content* is still enforced: clientAuth for a
  client, serverAuth for a server, or no EKU at all;
* servers only: a SAN DNS name equals the expected host;
* CRLs configured in a :class:`CrlChecker` (files, and with a :class:`CrlSource` the
  CRLs fetched from the certificate's distribution points): each signed by the
  certificate's issuer, not stale, and not listing the serial.

What it does *not* check: that the certificate is the one the directory has on record
(:mod:`trisa_peer.binding`), the directory's ``revoked`` flag, or OCSP.

Pure: imports neither grpc nor the generated protobuf code.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.general_name import DNSName
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    VerificationError,
)

from .certs import common_name, fingerprint, format_serial
from .clock import Clock, utcnow
from .errors import CertificateError, ChainVerificationError, RevokedError
from .steps import HandshakeStep, Reason
from .trust import TrustPool

__all__ = [
    "MIN_RSA_BITS",
    "ChainVerifier",
    "CrlChecker",
    "CrlSource",
    "VerifiedChain",
    "check_key_strength",
    "dns_names",
]

MIN_RSA_BITS = 2048
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.DNSName))


def check_key_strength(cert: x509.Certificate) -> str | None:
    """Return why the certificate's key is too weak, or None when it is acceptable."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"RSA-{key.key_size} key; at least RSA-{MIN_RSA_BITS} is required"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _EC_CURVES):
            return f"EC key on {key.curve.name}; P-256, P-384 or P-521 is required"
        return None
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    return f"unsupported key type {type(key).__name__}"


def _eku_validator(
    policy: Policy, cert: x509.Certificate, ext: x509.ExtendedKeyUsage | None
) -> None:
    # Re-declaring ExtendedKeyUsage drops cryptography's built-in EKU check, so the
    # content check lives here: absent EKU passes, otherwise the verifier's purpose
    # (clientAuth or serverAuth) must be listed; anyExtendedKeyUsage does not count.
    if ext is not None and policy.extended_key_usage not in ext:
        raise ValueError("certificate's extendedKeyUsage does not allow this purpose")


def _trisa_ee_policy() -> ExtensionPolicy:
    return ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _eku_validator
    )


_EE_POLICY = _trisa_ee_policy()
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()


@dataclass(frozen=True)
class VerifiedChain:
    """A leaf that passed :class:`ChainVerifier`, with the chain that was built."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # leaf first, root last
    fingerprint: str
    common_name: str
    dns_names: tuple[str, ...]
    verified_at: datetime

    @property
    def serial_hex(self) -> str:
        return format_serial(self.leaf.serial_number)


class CrlSource(Protocol):
    """CRLs found from the certificate itself (its CRL distribution points), e.g.
    :class:`trisa_peer.crlfetch.CrlFetcher`. ``crls_for`` returns the CRLs of
    ``issuer`` covering ``cert`` (each already signature-checked against ``issuer``),
    an empty sequence when ``cert`` names no distribution point it can use, and raises
    :class:`CertificateError` when it names one but no CRL is available from it."""

    def crls_for(
        self, cert: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> Sequence[x509.CertificateRevocationList]: ...


@dataclass(frozen=True)
class CrlChecker:
    """Certificate revocation lists for TRISA issuing CAs.

    Each CRL file's signature is verified against its issuer in the trust pool when the
    checker is built; a CRL whose ``next_update`` is more than ``grace`` in the past is
    *stale* and makes every check fail closed. With a ``source``, the CRLs it finds
    from each certificate's distribution points are checked the same way (stale: fail
    closed; unavailable: fail closed with the same reason).
    """

    crls: tuple[x509.CertificateRevocationList, ...]
    grace: timedelta = timedelta(0)
    source: CrlSource | None = None

    @classmethod
    def load(
        cls,
        paths: Iterable[str | os.PathLike[str]],
        pool: TrustPool,
        *,
        grace: timedelta = timedelta(0),
        source: CrlSource | None = None,
    ) -> CrlChecker:
        crls = []
        for path in paths:
            crls.append(_load_crl(path, pool))
        return cls(tuple(crls), grace, source)

    def _fetched(
        self, cert: x509.Certificate, issuer: x509.Certificate, at: datetime,
        step: HandshakeStep, peer: str,
    ) -> Sequence[x509.CertificateRevocationList]:
        if self.source is None:
            return ()
        try:
            return self.source.crls_for(cert, issuer, at)
        except CertificateError as exc:
            raise ChainVerificationError(
                f"{exc}; refusing to trust certificates of {common_name(issuer)!r}",
                step=step, peer=peer, reason=Reason.CRL_STALE,
            ) from exc

    def check(
        self,
        chain: Sequence[x509.Certificate],
        at: datetime,
        *,
        step: HandshakeStep,
        peer: str = "",
    ) -> None:
        """Raise if any non-root certificate of ``chain`` is revoked or its CRL is stale
        (or, with a source, unavailable)."""
        for cert, issuer in itertools.pairwise(chain):
            fetched = self._fetched(cert, issuer, at, step, peer)
            for crl in (*self.crls, *fetched):
                if crl.issuer != issuer.subject:
                    continue
                next_update = crl.next_update_utc
                # RFC 5280 requires nextUpdate; a CRL without one cannot be known fresh.
                if next_update is None or next_update + self.grace < at:
                    raise ChainVerificationError(
                        f"CRL of {_cn_of_name(crl.issuer)} is stale (next update "
                        f"{_when(next_update)}); refusing to trust its certificates",
                        step=step,
                        peer=peer,
                        reason=Reason.CRL_STALE,
                    )
                entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
                if entry is not None:
                    raise RevokedError(
                        f"certificate serial {format_serial(cert.serial_number)} of "
                        f"{common_name(cert)!r} "
                        f"is on the CRL of {_cn_of_name(crl.issuer)}",
                        step=step,
                        peer=peer,
                        reason=Reason.CRL_REVOKED,
                    )


def _when(moment: datetime | None) -> str:
    return f"was {moment:%Y-%m-%dT%H:%M:%SZ}" if moment is not None else "missing"


def _cn_of_name(name: x509.Name) -> str:
    return common_name(name) or name.rfc4514_string()


def _load_crl(path: str | os.PathLike[str], pool: TrustPool) -> x509.CertificateRevocationList:
    name = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CertificateError(f"{name}: cannot read CRL: {exc.strerror}") from exc
    try:
        crl = (
            x509.load_pem_x509_crl(data)
            if b"-----BEGIN" in data
            else x509.load_der_x509_crl(data)
        )
    except ValueError as exc:
        raise CertificateError(f"{name}: not a PEM or DER CRL") from exc
    for cert in (*pool.intermediates, *pool.roots):
        if cert.subject == crl.issuer:
            pub = cert.public_key()
            signer = isinstance(pub, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
            if signer and crl.is_signature_valid(pub):  # type: ignore[arg-type]
                return crl
    raise CertificateError(
        f"{name}: CRL of {_cn_of_name(crl.issuer)} is not signed by a CA in the trust pool"
    )


def _classify(message: str) -> Reason:
    """The reason in cryptography's :class:`VerificationError` text (no error codes)."""
    text = message.lower()
    if "not valid at validation time" in text or "expired" in text:
        return Reason.EXPIRED
    if "key" in text and ("small" in text or "weak" in text or "modulus" in text):
        return Reason.WEAK_KEY
    if "extendedkeyusage" in text or "extended key usage" in text or "eku" in text:
        return Reason.EKU
    if "subject" in text and "match" in text:
        return Reason.SAN_MISMATCH
    if "exhausted" in text or "issuer" in text:
        return Reason.UNKNOWN_ISSUER
    return Reason.CHAIN_INVALID


def _unknown_issuer(
    leaf: x509.Certificate, candidates: Sequence[x509.Certificate], pool: TrustPool
) -> str:
    """Which root the chain needs (the top of what the peer and the pool offer, followed
    by issuer name) and which roots are loaded, instead of "candidates exhausted"."""
    top, seen = leaf, {leaf.subject}
    while True:
        above = next((c for c in candidates if c.subject == top.issuer and c.subject not in seen),
                     None)
        if above is None:
            break
        top = above
        seen.add(above.subject)
    loaded = ", ".join(repr(_cn_of_name(root.subject)) for root in pool.roots)
    issuer = f"issued by {_cn_of_name(leaf.issuer)!r}"
    if top is not leaf:
        issuer += f" under root {_cn_of_name(top.issuer)!r}"
    return (
        f"certificate of {common_name(leaf)!r} is {issuer}, which the trust pool does not "
        f"hold (roots loaded: {loaded}); if that CA is to be trusted, add its root "
        "certificate with --trust"
    )


class ChainVerifier:
    """Verify a presented leaf (+ chain) against a :class:`TrustPool` at a given time.

    One cryptography verifier is built per verification because cryptography freezes
    the validation time when the verifier is built (cheap: microseconds).
    """

    def __init__(
        self,
        pool: TrustPool,
        *,
        clock: Clock = utcnow,
        crl: CrlChecker | None = None,
        max_chain_depth: int = 3,
    ) -> None:
        self._state = (pool, crl)
        self.clock = clock
        self.max_chain_depth = max_chain_depth

    @property
    def pool(self) -> TrustPool:
        return self._state[0]

    @property
    def crl(self) -> CrlChecker | None:
        return self._state[1]

    def update(self, pool: TrustPool, crl: CrlChecker | None) -> None:
        """Swap trust pool and CRLs together (one assignment: no verification mixes them)."""
        self._state = (pool, crl)

    def _builder(self, at: datetime, pool: TrustPool) -> PolicyBuilder:
        return (
            PolicyBuilder()
            .store(pool.store)
            .time(at)
            .max_chain_depth(self.max_chain_depth)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        )

    def verify_client(
        self,
        leaf: x509.Certificate,
        presented: Sequence[x509.Certificate] = (),
        *,
        step: HandshakeStep = HandshakeStep.VERIFY_CLIENT_CHAIN,
        peer: str = "",
    ) -> VerifiedChain:
        """Step 3: a client leaf chains to a TRISA root and may authenticate clients."""
        return self._verify(leaf, presented, step=step, peer=peer, host=None)

    def verify_server(
        self,
        leaf: x509.Certificate,
        presented: Sequence[x509.Certificate] = (),
        *,
        host: str,
        step: HandshakeStep = HandshakeStep.VERIFY_SERVER_CHAIN,
        peer: str = "",
    ) -> VerifiedChain:
        """Step 6: a server leaf chains to a TRISA root, allows serverAuth, and names ``host``."""
        return self._verify(leaf, presented, step=step, peer=peer, host=host)

    def _verify(
        self,
        leaf: x509.Certificate,
        presented: Sequence[x509.Certificate],
        *,
        step: HandshakeStep,
        peer: str,
        host: str | None,
    ) -> VerifiedChain:
        at = self.clock()
        pool, crl = self._state
        peer = peer or common_name(leaf)

        def fail(message: str, reason: Reason) -> ChainVerificationError:
            return ChainVerificationError(message, step=step, peer=peer, reason=reason)

        if leaf.not_valid_after_utc < at:
            raise fail(
                f"certificate of {common_name(leaf)!r} expired at "
                f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
                Reason.EXPIRED,
            )
        if leaf.not_valid_before_utc > at:
            raise fail(
                f"certificate of {common_name(leaf)!r} is not valid before "
                f"{leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}",
                Reason.NOT_YET_VALID,
            )
        weak = check_key_strength(leaf)
        if weak:
            raise fail(
                f"certificate of {common_name(leaf)!r} has a weak key: {weak}", Reason.WEAK_KEY
            )
        purpose = (
            ExtendedKeyUsageOID.SERVER_AUTH if host is not None else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        try:
            eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = None
        if eku is not None and purpose not in eku:
            what = "TLS server" if host is not None else "TLS client"
            raise fail(
                f"certificate of {common_name(leaf)!r} does not allow {what} authentication "
                "(extendedKeyUsage)",
                Reason.EKU,
            )
        if host is not None and host.lower() not in (n.lower() for n in dns_names(leaf)):
            raise fail(
                f"certificate of {common_name(leaf)!r} does not name host {host!r} "
                f"(SAN: {', '.join(dns_names(leaf)) or 'none'})",
                Reason.SAN_MISMATCH,
            )
        candidates = [c for c in presented if c != leaf]
        candidates.extend(c for c in pool.intermediates if c not in candidates)
        try:
            if host is None:
                verified = self._builder(at, pool).build_client_verifier().verify(leaf, candidates)
                chain = list(verified.chain)
            else:
                verifier = self._builder(at, pool).build_server_verifier(DNSName(host))
                chain = list(verifier.verify(leaf, candidates))
        except VerificationError as exc:
            reason = _classify(str(exc))
            if reason == Reason.UNKNOWN_ISSUER:
                raise fail(_unknown_issuer(leaf, candidates, pool), reason) from exc
            raise fail(
                f"certificate of {common_name(leaf)!r} does not chain to a TRISA root: {exc}",
                reason,
            ) from exc
        except ValueError as exc:  # e.g. an invalid DNS name for host
            message = f"cannot verify certificate of {common_name(leaf)!r}: {exc}"
            raise fail(message, Reason.CHAIN_INVALID) from exc
        for cert in chain[1:]:
            weak = check_key_strength(cert)
            if weak:
                message = f"CA {common_name(cert)!r} in the chain has a weak key: {weak}"
                raise fail(message, Reason.WEAK_KEY)
        if crl is not None:
            crl.check(chain, at, step=step, peer=peer)
        return VerifiedChain(
            leaf=leaf,
            chain=tuple(chain),
            fingerprint=fingerprint(leaf),
            common_name=common_name(leaf),
            dns_names=dns_names(leaf),
            verified_at=at,
        )
