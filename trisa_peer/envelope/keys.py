"""KeyExchange ``SigningKey`` messages (upstream ``pkg/trisa/keys``).

:func:`signing_key_from_certificate` fills a SigningKey the way Go does from an x509
certificate; :func:`public_key_from_signing_key` parses a received one in TRISA's order
(SPKI DER, then PEM ``CERTIFICATE`` / ``PUBLIC KEY`` / ``RSA PUBLIC KEY``, then a DER
certificate) by delegating to :func:`trisa_peer.certs.load_public_key`.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import SignatureAlgorithmOID

from .._pb.trisa.api.v1beta1 import api_pb2
from ..certs import PeerPublicKey, load_public_key, spki_der
from .timestamps import format_timestamp_seconds

__all__ = [
    "go_public_key_algorithm",
    "go_signature_algorithm",
    "public_key_from_signing_key",
    "signing_key_from_certificate",
]

# Go x509.SignatureAlgorithm.String() names, by OID.
_SIGNATURE_NAMES: dict[x509.ObjectIdentifier, str] = {
    SignatureAlgorithmOID.RSA_WITH_MD5: "MD5-RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA1: "SHA1-RSA",
    SignatureAlgorithmOID._RSA_WITH_SHA1: "SHA1-RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA256: "SHA256-RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA384: "SHA384-RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA512: "SHA512-RSA",
    SignatureAlgorithmOID.DSA_WITH_SHA1: "DSA-SHA1",
    SignatureAlgorithmOID.DSA_WITH_SHA256: "DSA-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: "ECDSA-SHA1",
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ECDSA-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ECDSA-SHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ECDSA-SHA512",
    SignatureAlgorithmOID.ED25519: "Ed25519",
    x509.ObjectIdentifier("1.2.840.113549.1.1.2"): "MD2-RSA",
}
_PSS_NAMES: dict[str, str] = {
    "sha256": "SHA256-RSAPSS",
    "sha384": "SHA384-RSAPSS",
    "sha512": "SHA512-RSAPSS",
}
#: What Go prints for an algorithm it does not know (``strconv.Itoa(0)``).
_UNKNOWN = "0"


def go_signature_algorithm(cert: x509.Certificate) -> str:
    """The certificate's signature algorithm as Go ``x509.SignatureAlgorithm.String()``."""
    oid = cert.signature_algorithm_oid
    if oid == SignatureAlgorithmOID.RSASSA_PSS:
        try:
            digest = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:  # PSS parameters cryptography does not support
            return _UNKNOWN
        if isinstance(digest, hashes.HashAlgorithm):
            return _PSS_NAMES.get(digest.name, _UNKNOWN)
        return _UNKNOWN
    return _SIGNATURE_NAMES.get(oid, _UNKNOWN)


def go_public_key_algorithm(cert: x509.Certificate) -> str:
    """The subject key type as Go ``x509.PublicKeyAlgorithm.String()``."""
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):  # key types cryptography cannot load
        return _UNKNOWN
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ECDSA"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA"
    return _UNKNOWN


def signing_key_from_certificate(
    cert: x509.Certificate, *, revoked: bool = False
) -> api_pb2.SigningKey:
    """A ``trisa.api.v1beta1.SigningKey`` describing ``cert`` as Go builds it.

    version = x509 version (3), signature = the certificate's signature bytes,
    Go-style algorithm names, validity at second precision in UTC, data = SPKI DER.
    """
    return api_pb2.SigningKey(
        version=cert.version.value + 1,
        signature=cert.signature,
        signature_algorithm=go_signature_algorithm(cert),
        public_key_algorithm=go_public_key_algorithm(cert),
        not_before=format_timestamp_seconds(cert.not_valid_before_utc),
        not_after=format_timestamp_seconds(cert.not_valid_after_utc),
        revoked=revoked,
        data=spki_der(cert.public_key()),
    )


def public_key_from_signing_key(
    signing_key: api_pb2.SigningKey, *, source: str = "SigningKey.data"
) -> PeerPublicKey:
    """The public key of a received SigningKey (upstream ``keys.FromSigningKey``
    parsing order).

    Raises :class:`~trisa_peer.errors.CertificateError` when ``data`` is empty or holds
    no usable RSA, EC (P-256/384/521) or Ed25519 key. ``revoked`` and the metadata
    fields are not checked here.
    """
    return load_public_key(bytes(signing_key.data), source=source)
