"""Envelope cryptographic primitives (upstream ``pkg/trisa/crypto``).

* AES-256-GCM, 12-byte random nonce, 16-byte tag, no AAD; wire layout
  ``ciphertext || tag || nonce`` (the nonce is appended).
* HMAC-SHA256 over the whole ``payload`` field.
* RSA-OAEP with SHA-512, MGF1-SHA-512 and an empty label to wrap the key and secret.

Every failure raises :class:`~trisa_peer.errors.EnvelopeError` with a message that
never contains key material or plaintext; callers map it to a TRISA error code.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import EnvelopeError

__all__ = [
    "ENCRYPTION_ALGORITHM",
    "HMAC_ALGORITHM",
    "KEY_SIZE",
    "MIN_RSA_BITS",
    "NONCE_SIZE",
    "SEALING_ALGORITHM",
    "TAG_SIZE",
    "aes_gcm_decrypt",
    "aes_gcm_encrypt",
    "hmac_sign",
    "hmac_verify",
    "random_key",
    "rsa_oaep_decrypt",
    "rsa_oaep_encrypt",
]

ENCRYPTION_ALGORITHM = "AES256-GCM"
HMAC_ALGORITHM = "HMAC-SHA256"
#: Not written in envelopes; the receiver infers it from its key.
SEALING_ALGORITHM = "RSA-OAEP-SHA512"
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
#: Smallest RSA modulus this package seals to (OAEP-SHA512 itself needs 1296 bits).
MIN_RSA_BITS = 2048


def random_key() -> bytes:
    """A fresh 32-byte AES-256 key (also used as the default HMAC secret)."""
    return secrets.token_bytes(KEY_SIZE)


def aes_gcm_encrypt(key: bytes, plaintext: bytes) -> bytes:
    """AES-256-GCM of ``plaintext`` with a fresh nonce: ``ciphertext || tag || nonce``."""
    if len(key) != KEY_SIZE:
        raise EnvelopeError(f"AES-256-GCM needs a {KEY_SIZE}-byte key, got {len(key)} bytes")
    nonce = secrets.token_bytes(NONCE_SIZE)
    return AESGCM(bytes(key)).encrypt(nonce, bytes(plaintext), None) + nonce


def aes_gcm_decrypt(key: bytes, data: bytes) -> bytes:
    """Inverse of :func:`aes_gcm_encrypt` (nonce = the last 12 bytes of ``data``)."""
    if len(key) != KEY_SIZE:
        raise EnvelopeError(f"AES-256-GCM needs a {KEY_SIZE}-byte key, got {len(key)} bytes")
    if len(data) < NONCE_SIZE:
        raise EnvelopeError("ciphertext is shorter than the nonce")
    if len(data) < NONCE_SIZE + TAG_SIZE:
        raise EnvelopeError("ciphertext is shorter than the nonce and tag")
    nonce, sealed = data[-NONCE_SIZE:], data[:-NONCE_SIZE]
    try:
        return AESGCM(bytes(key)).decrypt(bytes(nonce), bytes(sealed), None)
    except InvalidTag as exc:
        raise EnvelopeError("AES-GCM authentication failed") from exc


def hmac_sign(secret: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of ``data`` (which must not be empty)."""
    if not secret:
        raise EnvelopeError("empty HMAC secret")
    if not data:
        raise EnvelopeError("no data to sign")
    return hmac.new(bytes(secret), bytes(data), hashlib.sha256).digest()


def hmac_verify(secret: bytes, data: bytes, mac: bytes) -> bool:
    """Constant-time check of an HMAC-SHA256 ``mac`` over ``data``."""
    try:
        expected = hmac_sign(secret, data)
    except EnvelopeError:
        return False
    return hmac.compare_digest(expected, bytes(mac))


#: RSA-OAEP-SHA512 with MGF1-SHA512 and no label (immutable: built once, not per call).
_OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA512()), algorithm=hashes.SHA512(), label=None
)


def _oaep() -> padding.OAEP:
    return _OAEP


def rsa_oaep_encrypt(public_key: rsa.RSAPublicKey, data: bytes) -> bytes:
    """RSA-OAEP-SHA512 encryption (MGF1-SHA512, empty label)."""
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise EnvelopeError("only RSA public keys can seal an envelope")
    if public_key.key_size < MIN_RSA_BITS:
        raise EnvelopeError(
            f"RSA key of {public_key.key_size} bits is too small (minimum {MIN_RSA_BITS})"
        )
    try:
        return public_key.encrypt(bytes(data), _oaep())
    except ValueError as exc:
        raise EnvelopeError("RSA-OAEP encryption failed") from exc


def rsa_oaep_decrypt(private_key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """RSA-OAEP-SHA512 decryption; any failure is one undistinguished error."""
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise EnvelopeError("only an RSA private key can unseal an envelope")
    if len(data) != (private_key.key_size + 7) // 8:
        raise EnvelopeError("RSA-OAEP decryption failed")
    try:
        return private_key.decrypt(bytes(data), _oaep())
    except ValueError as exc:
        raise EnvelopeError("RSA-OAEP decryption failed") from exc
