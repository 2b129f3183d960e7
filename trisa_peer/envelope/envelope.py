"""Seal, open and reject TRISA secure envelopes (upstream ``pkg/trisa/envelope``).

All operations are pure: they never modify the message they are given and return new
messages. Nothing here logs, and no exception message contains key material or
payload contents.

Opening follows Go's order; each failure raises
:class:`~trisa_peer.errors.EnvelopeRejection` with the code to send back:

====  ===================================================  ====================  =====
step  check                                                code                  retry
====  ===================================================  ====================  =====
1     envelope structure (id UUID, timestamp, crypto       BAD_REQUEST (150)     true
      fields, error, payload size)
3     RSA-OAEP unseal of key and secret                    INVALID_KEY (106)     true
4     algorithm names                                      UNHANDLED_ALGORITHM   false
                                                           (108)
5     HMAC-SHA256 (constant time)                          INVALID_SIGNATURE     false
                                                           (105)
6     AES-256-GCM decryption                               INVALID_KEY (106)     false
7     protobuf decoding of the Payload                     ENVELOPE_DECODE_FAIL  false
                                                           (107)
8     Payload validation                                   VALIDATION_ERROR      false
                                                           (155)
====  ===================================================  ====================  =====

Step 1 has no code pinned upstream (Go returns a plain error); BAD_REQUEST with
retry=true is what Go's ``Errorf`` would produce for that code and tells the sender
it can repair the message.
"""

from __future__ import annotations

import uuid
from typing import TypeAlias, cast

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from google.protobuf.message import DecodeError

from .._pb.trisa.api.v1beta1 import api_pb2, errors_pb2
from ..errors import EnvelopeError, EnvelopeRejection
from .crypto import (
    ENCRYPTION_ALGORITHM,
    HMAC_ALGORITHM,
    NONCE_SIZE,
    TAG_SIZE,
    aes_gcm_decrypt,
    aes_gcm_encrypt,
    hmac_sign,
    hmac_verify,
    random_key,
    rsa_oaep_decrypt,
    rsa_oaep_encrypt,
)
from .signature import match_signature, public_key_signature
from .timestamps import Clock, format_timestamp, utcnow
from .validate import (
    KNOWN_ERROR_CODES,
    MAX_PAYLOAD_SIZE,
    envelope_problem,
    is_uuid,
    payload_problem,
    short,
)

__all__ = [
    "BAD_REQUEST",
    "ENVELOPE_DECODE_FAIL",
    "INVALID_KEY",
    "INVALID_SIGNATURE",
    "OPEN_REJECTION_CODES",
    "UNHANDLED_ALGORITHM",
    "VALIDATION_ERROR",
    "envelope_error",
    "open_envelope",
    "reject",
    "rejection_envelope",
    "seal",
]

_Error = errors_pb2.Error
BAD_REQUEST: int = _Error.BAD_REQUEST
INVALID_SIGNATURE: int = _Error.INVALID_SIGNATURE
INVALID_KEY: int = _Error.INVALID_KEY
ENVELOPE_DECODE_FAIL: int = _Error.ENVELOPE_DECODE_FAIL
UNHANDLED_ALGORITHM: int = _Error.UNHANDLED_ALGORITHM
VALIDATION_ERROR: int = _Error.VALIDATION_ERROR
#: Every code :func:`open_envelope` can reject with.
OPEN_REJECTION_CODES: frozenset[int] = frozenset(
    {
        BAD_REQUEST,
        INVALID_KEY,
        UNHANDLED_ALGORITHM,
        INVALID_SIGNATURE,
        ENVELOPE_DECODE_FAIL,
        VALIDATION_ERROR,
    }
)
_TransferState: TypeAlias = api_pb2.TransferState.ValueType
_TRANSFER_STATES: frozenset[int] = frozenset(api_pb2.TransferState.values())
_REPAIR: _TransferState = api_pb2.TransferState.Value("REPAIR")
_REJECTED: _TransferState = api_pb2.TransferState.Value("REJECTED")
_OVERHEAD = NONCE_SIZE + TAG_SIZE


def _code_name(code: int) -> str:
    try:
        return str(_Error.Code.Name(cast(_Error.Code.ValueType, code)))
    except ValueError:
        return str(code)


def _now(clock: Clock | None) -> str:
    return format_timestamp((clock or utcnow)())


def _check_envelope_type(envelope: object) -> None:
    # object: a run-time guard for callers that pass anything
    if not isinstance(envelope, api_pb2.SecureEnvelope):
        raise TypeError("expected a trisa.api.v1beta1.SecureEnvelope")


# ---------------------------------------------------------------------------
# Seal
# ---------------------------------------------------------------------------


def seal(
    payload: api_pb2.Payload,
    recipient_public_key: PublicKeyTypes,
    *,
    envelope_id: str | None = None,
    transfer_state: int = 0,
    hmac_secret: bytes | None = None,
    clock: Clock | None = None,
) -> api_pb2.SecureEnvelope:
    """Encrypt and seal ``payload`` (a ``Payload``) for ``recipient_public_key``.

    As upstream's ``Seal``: validate, serialise, AES-256-GCM with a fresh 32-byte key and 12-byte
    nonce, HMAC-SHA256 over the payload field with ``hmac_secret`` (default: the same
    32 bytes as the key), RSA-OAEP-SHA512 of key and secret separately, ``sealed=true``,
    ``public_key_signature`` of the recipient key, ``id`` (``envelope_id`` or a new
    uuid4) and a UTC RFC3339Nano ``timestamp``. Returns a new ``SecureEnvelope``.

    Raises :class:`~trisa_peer.errors.EnvelopeError` for an invalid payload, a non-RSA
    (or < 2048-bit) key, a bad ``envelope_id`` / ``transfer_state`` or an oversized payload.
    """
    problem = payload_problem(payload)
    if problem is not None:
        raise EnvelopeError(f"cannot seal: {problem}")
    if not isinstance(recipient_public_key, rsa.RSAPublicKey):
        raise EnvelopeError("cannot seal: only RSA public keys can seal an envelope")
    if envelope_id is None:
        envelope_id = str(uuid.uuid4())
    elif not is_uuid(envelope_id):
        raise EnvelopeError(f"cannot seal: envelope id {short(envelope_id)} is not a UUID")
    if transfer_state not in _TRANSFER_STATES:
        raise EnvelopeError(f"cannot seal: unknown transfer state {transfer_state}")
    if hmac_secret is not None and not hmac_secret:
        raise EnvelopeError("cannot seal: empty HMAC secret")

    plaintext = payload.SerializeToString()
    if len(plaintext) + _OVERHEAD > MAX_PAYLOAD_SIZE:
        raise EnvelopeError(f"cannot seal: payload is larger than {MAX_PAYLOAD_SIZE} bytes")
    key = random_key()
    secret = key if hmac_secret is None else bytes(hmac_secret)
    ciphertext = aes_gcm_encrypt(key, plaintext)
    mac = hmac_sign(secret, ciphertext)
    sealed_key = rsa_oaep_encrypt(recipient_public_key, key)
    sealed_secret = rsa_oaep_encrypt(recipient_public_key, secret)
    return api_pb2.SecureEnvelope(
        id=envelope_id,
        payload=ciphertext,
        encryption_key=sealed_key,
        encryption_algorithm=ENCRYPTION_ALGORITHM,
        hmac=mac,
        hmac_secret=sealed_secret,
        hmac_algorithm=HMAC_ALGORITHM,
        timestamp=_now(clock),
        sealed=True,
        public_key_signature=public_key_signature(recipient_public_key),
        transfer_state=cast(_TransferState, transfer_state),  # checked above
    )


# ---------------------------------------------------------------------------
# Open
# ---------------------------------------------------------------------------


def envelope_error(envelope: api_pb2.SecureEnvelope) -> errors_pb2.Error | None:
    """A copy of the envelope's ``Error`` if it carries one (the peer's rejection), else None.

    An error envelope has no payload; an envelope may also carry both (Go state
    "sealed-error"), in which case :func:`open_envelope` still opens the payload.
    """
    _check_envelope_type(envelope)
    if not envelope.HasField("error") or envelope.error.ByteSize() == 0:
        return None
    error = _Error()
    error.CopyFrom(envelope.error)
    return error


def _unseal(
    envelope: api_pb2.SecureEnvelope, private_key: PrivateKeyTypes | None
) -> tuple[bytes, bytes]:
    if not envelope.sealed:
        return bytes(envelope.encryption_key), bytes(envelope.hmac_secret)
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise EnvelopeRejection(
            INVALID_KEY, "cannot unseal the envelope: no RSA private key", retry=True
        )
    try:
        key = rsa_oaep_decrypt(private_key, envelope.encryption_key)
        secret = rsa_oaep_decrypt(private_key, envelope.hmac_secret)
    except EnvelopeError as exc:
        hint = ""
        pks = envelope.public_key_signature
        if pks and not match_signature(pks, private_key.public_key()):
            hint = f" (sealed for another key: {short(pks, 100)})"
        raise EnvelopeRejection(
            INVALID_KEY, f"cannot unseal the envelope with the recipient key{hint}", retry=True
        ) from exc
    return key, secret


def open_envelope(
    envelope: api_pb2.SecureEnvelope,
    private_key: PrivateKeyTypes | None,
    *,
    max_payload_size: int = MAX_PAYLOAD_SIZE,
) -> api_pb2.Payload:
    """Validate, unseal, verify and decrypt ``envelope``; return its ``Payload``.

    Follows upstream's ``Open`` in order (see the module docstring for the code of each step).
    ``private_key`` is the recipient's RSA key; it is not needed for an unsealed
    envelope (``sealed=false``, clear key and secret). Raises
    :class:`~trisa_peer.errors.EnvelopeRejection` for every problem of the envelope, and
    a plain :class:`~trisa_peer.errors.EnvelopeError` for a valid error envelope with no
    payload (the peer's own rejection: read it with :func:`envelope_error`).
    """
    _check_envelope_type(envelope)
    # 1. Structure, before any cryptography.
    problem = envelope_problem(envelope, max_payload_size=max_payload_size)
    if problem is not None:
        raise EnvelopeRejection(BAD_REQUEST, f"invalid secure envelope: {problem}", retry=True)
    if not envelope.payload:
        error = envelope.error
        raise EnvelopeError(
            f"envelope holds the peer's rejection [{_code_name(int(error.code))}]: "
            f"{short(error.message, 200)}"
        )
    # 2. The caller chose ``private_key``. 3. Unseal.
    key, secret = _unseal(envelope, private_key)
    # 4. Algorithms.
    if envelope.encryption_algorithm != ENCRYPTION_ALGORITHM:
        raise EnvelopeRejection(
            UNHANDLED_ALGORITHM,
            f"unhandled encryption algorithm {short(envelope.encryption_algorithm)}",
        )
    if envelope.hmac_algorithm != HMAC_ALGORITHM:
        raise EnvelopeRejection(
            UNHANDLED_ALGORITHM, f"unhandled HMAC algorithm {short(envelope.hmac_algorithm)}"
        )
    # 5. HMAC before decryption (constant-time compare).
    data = bytes(envelope.payload)
    if not hmac_verify(secret, data, envelope.hmac):
        raise EnvelopeRejection(INVALID_SIGNATURE, "HMAC signature of the payload does not match")
    # 6. Decrypt.
    try:
        plaintext = aes_gcm_decrypt(key, data)
    except EnvelopeError as exc:
        raise EnvelopeRejection(INVALID_KEY, f"cannot decrypt the payload: {exc}") from exc
    # 7. Decode.
    payload = api_pb2.Payload()
    try:
        payload.ParseFromString(plaintext)
    except (DecodeError, ValueError, RecursionError) as exc:
        raise EnvelopeRejection(
            ENVELOPE_DECODE_FAIL, "decrypted payload is not a trisa.api.v1beta1.Payload"
        ) from exc
    # 8. Validate.
    problem = payload_problem(payload)
    if problem is not None:
        raise EnvelopeRejection(VALIDATION_ERROR, problem)
    return payload


# ---------------------------------------------------------------------------
# Reject
# ---------------------------------------------------------------------------


def reject(
    envelope_id: str,
    code: int,
    message: str,
    *,
    retry: bool | None = None,
    clock: Clock | None = None,
) -> api_pb2.SecureEnvelope:
    """A rejection envelope (upstream ``envelope.Reject``) answering the envelope ``envelope_id``.

    No payload and no crypto fields; ``error`` = (code, message, retry) with ``retry``
    defaulting to ``code >= 150`` (Go ``Errorf``); ``sealed=false``; ``transfer_state``
    REPAIR when retrying, else REJECTED; ``timestamp`` now. ``envelope_id`` is echoed as
    given (it is not checked, so even a malformed incoming id can be answered).
    Raises :class:`~trisa_peer.errors.EnvelopeError` for code 0, an unknown code or an
    empty message, which a Go peer would refuse.
    """
    code = int(code)
    if code == 0 or code not in KNOWN_ERROR_CODES:
        raise EnvelopeError(f"cannot reject with error code {code}")
    if not message:
        raise EnvelopeError("cannot reject without a message")
    do_retry = code >= BAD_REQUEST if retry is None else bool(retry)
    return api_pb2.SecureEnvelope(
        id=envelope_id,
        error=_Error(code=_Error.Code.ValueType(code), message=message, retry=do_retry),
        timestamp=_now(clock),
        sealed=False,
        transfer_state=_REPAIR if do_retry else _REJECTED,
    )


def rejection_envelope(
    envelope_id: str, rejection: EnvelopeRejection, *, clock: Clock | None = None
) -> api_pb2.SecureEnvelope:
    """:func:`reject` with the code, message and retry flag of ``rejection``."""
    return reject(
        envelope_id, rejection.code, rejection.message, retry=rejection.retry, clock=clock
    )
