"""The envelope ``public_key_signature`` (upstream ``pkg/trisa/keys``).

``"<ALG>:" + base64(hash(SubjectPublicKeyInfo DER))`` with the standard alphabet and
no ``=`` padding; ALG is ``SHA256`` (default), ``MD5`` or ``SHA512``, parsed
case-insensitively and trimmed. It identifies a public key, not a certificate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ..certs import spki_der
from ..errors import EnvelopeError

__all__ = ["SIGNATURE_ALGORITHMS", "match_signature", "parse_signature", "public_key_signature"]

#: Canonical algorithm name -> hashlib constructor name.
SIGNATURE_ALGORITHMS: dict[str, str] = {"MD5": "md5", "SHA256": "sha256", "SHA512": "sha512"}
_MAX_LEN = 512


def _algorithm(alg: str) -> str:
    name = alg.strip().upper()
    if name not in SIGNATURE_ALGORITHMS:
        raise EnvelopeError(f"unknown public key signature algorithm {alg.strip()[:20]!r}")
    return name


def _digest(alg: str, public_key: PublicKeyTypes) -> bytes:
    der = spki_der(public_key)
    return hashlib.new(SIGNATURE_ALGORITHMS[alg], der, usedforsecurity=False).digest()


def public_key_signature(public_key: PublicKeyTypes, alg: str = "SHA256") -> str:
    """``ALG:base64`` (unpadded) of the hash of ``public_key``'s SPKI DER."""
    name = _algorithm(alg)
    encoded = base64.b64encode(_digest(name, public_key)).decode("ascii").rstrip("=")
    return f"{name}:{encoded}"


def parse_signature(sig: str) -> tuple[str, bytes]:
    """Split a signature into ``(ALG, digest)``; raises :class:`EnvelopeError` if malformed."""
    if not isinstance(sig, str) or len(sig) > _MAX_LEN:
        raise EnvelopeError("malformed public key signature")
    alg, sep, encoded = sig.partition(":")
    if not sep:
        raise EnvelopeError("malformed public key signature: no algorithm prefix")
    name = _algorithm(alg)
    text = encoded.strip().rstrip("=")
    try:
        digest = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError("malformed public key signature: bad base64") from exc
    if len(digest) != hashlib.new(SIGNATURE_ALGORITHMS[name], usedforsecurity=False).digest_size:
        raise EnvelopeError("malformed public key signature: wrong digest length")
    return name, digest


def match_signature(sig: str, public_key: PublicKeyTypes) -> bool:
    """True when ``sig`` names ``public_key`` (recomputed with the algorithm in its prefix)."""
    try:
        name, digest = parse_signature(sig)
    except EnvelopeError:
        return False
    return hmac.compare_digest(digest, _digest(name, public_key))
