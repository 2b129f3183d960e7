"""Secure envelopes, public key signatures and SigningKeys (spec §3, §9, §10).

Interoperability is checked three ways: against the upstream Go vectors, and both
directions against a second, independent implementation written below from the spec
(hand-rolled protobuf wire format for the envelope + raw ``cryptography`` primitives).
"""

from __future__ import annotations

import base64
import hashlib
import hmac as hmac_mod
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from google.protobuf import json_format
from helpers import ROOT, UPSTREAM_TRISA

import trisa_peer._pb.ivms101.identity_pb2  # registers the Any types for json_format
import trisa_peer._pb.trisa.data.generic.v1beta1.transaction_pb2  # noqa: F401
from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, errors_pb2
from trisa_peer.certs import load_identity, load_private_key
from trisa_peer.envelope import (
    MAX_PAYLOAD_SIZE,
    OPEN_REJECTION_CODES,
    envelope_error,
    format_timestamp,
    match_signature,
    open_envelope,
    parse_timestamp,
    public_key_from_signing_key,
    public_key_signature,
    reject,
    rejection_envelope,
    seal,
    signing_key_from_certificate,
)
from trisa_peer.errors import CertificateError, EnvelopeError, EnvelopeRejection

ENV_DIR = UPSTREAM_TRISA / "pkg/trisa/envelope/testdata"
KEYS_DIR = UPSTREAM_TRISA / "pkg/trisa/keys/testdata"
SIG_DIR = UPSTREAM_TRISA / "pkg/trisa/keys/signature/testdata"

BAD_REQUEST = 150
INVALID_SIGNATURE = 105
INVALID_KEY = 106
ENVELOPE_DECODE_FAIL = 107
UNHANDLED_ALGORITHM = 108
VALIDATION_ERROR = 155
FIXED_NOW = datetime(2024, 5, 6, 7, 8, 9, 120000, tzinfo=UTC)


# ---------------------------------------------------------------------------
# Independent implementation, from the spec only (does not use trisa_peer.envelope)
# ---------------------------------------------------------------------------

# SecureEnvelope field numbers (§3.1; there is no field 8).
F_ID, F_PAYLOAD, F_KEY, F_ENC_ALG, F_HMAC, F_SECRET, F_HMAC_ALG = 1, 2, 3, 4, 5, 6, 7
F_ERROR, F_TIMESTAMP, F_SEALED, F_PKS, F_STATE = 9, 10, 11, 12, 13
_VARINT_FIELDS = {F_SEALED, F_STATE}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, i


def wire_encode(fields: dict[int, Any]) -> bytes:
    out = bytearray()
    for num in sorted(fields):
        value = fields[num]
        if num in _VARINT_FIELDS:
            if value:
                out += _varint(num << 3) + _varint(int(value))
            continue
        data = value.encode() if isinstance(value, str) else bytes(value)
        if data:
            out += _varint(num << 3 | 2) + _varint(len(data)) + data
    return bytes(out)


def wire_decode(buf: bytes) -> dict[int, Any]:
    fields: dict[int, Any] = {}
    i = 0
    while i < len(buf):
        tag, i = _read_varint(buf, i)
        num, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            fields[num], i = _read_varint(buf, i)
        elif wire_type == 2:
            size, i = _read_varint(buf, i)
            fields[num] = buf[i : i + size]
            i += size
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
    return fields


def _oaep() -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA512()), algorithm=hashes.SHA512(), label=None
    )


def indep_pks(public_key: Any) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def indep_seal(
    plaintext: bytes,
    public_key: rsa.RSAPublicKey | None,
    *,
    key: bytes | None = None,
    secret: bytes | None = None,
    enc_alg: str = "AES256-GCM",
    hmac_alg: str = "HMAC-SHA256",
    envelope_id: str | None = None,
    timestamp: str = "2022-03-29T09:16:29.755212-05:00",
    tamper: Any = None,
) -> bytes:
    """Seal per §9.2/§9.3; ``tamper`` edits the ciphertext before the HMAC is computed.

    With ``public_key=None`` the envelope is unsealed (clear key and secret).
    """
    key = key if key is not None else os.urandom(32)
    secret = secret if secret is not None else key
    nonce = os.urandom(12)
    payload = AESGCM(key).encrypt(nonce, plaintext, None) + nonce
    if tamper is not None:
        payload = tamper(payload)
    mac = hmac_mod.new(secret, payload, hashlib.sha256).digest()
    sealed = public_key is not None
    fields: dict[int, Any] = {
        F_ID: envelope_id if envelope_id is not None else str(uuid.uuid4()),
        F_PAYLOAD: payload,
        F_KEY: public_key.encrypt(key, _oaep()) if public_key else key,
        F_ENC_ALG: enc_alg,
        F_HMAC: mac,
        F_SECRET: public_key.encrypt(secret, _oaep()) if public_key else secret,
        F_HMAC_ALG: hmac_alg,
        F_TIMESTAMP: timestamp,
        F_SEALED: sealed,
        F_PKS: indep_pks(public_key) if public_key else "",
    }
    return wire_encode(fields)


def indep_open(envelope_bytes: bytes, private_key: rsa.RSAPrivateKey) -> bytes:
    """Open per §9.4 steps 3-6; returns the decrypted Payload bytes."""
    env = wire_decode(envelope_bytes)
    key, secret = env[F_KEY], env[F_SECRET]
    if env.get(F_SEALED):
        key = private_key.decrypt(key, _oaep())
        secret = private_key.decrypt(secret, _oaep())
    assert env[F_ENC_ALG] == b"AES256-GCM"
    assert env[F_HMAC_ALG] == b"HMAC-SHA256"
    payload = env[F_PAYLOAD]
    assert hmac_mod.compare_digest(
        hmac_mod.new(secret, payload, hashlib.sha256).digest(), env[F_HMAC]
    )
    return AESGCM(key).decrypt(payload[-12:], payload[:-12], None)


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


def _parse(path: Any, message: Any) -> Any:
    return json_format.Parse(path.read_text(), message)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def sealing_key() -> rsa.RSAPrivateKey:
    key = load_private_key(ENV_DIR / "sealing_key.pem")
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture(scope="module")
def payload() -> Any:
    return _parse(ENV_DIR / "payload.json", api_pb2.Payload())


@pytest.fixture(scope="module")
def pending_payload() -> Any:
    return _parse(ENV_DIR / "pending_payload.json", api_pb2.Payload())


def _env(data: bytes) -> Any:
    return api_pb2.SecureEnvelope.FromString(data)


def _rejected(envelope: Any, key: Any, **kwargs: Any) -> EnvelopeRejection:
    before = envelope.SerializeToString()
    with pytest.raises(EnvelopeRejection) as info:
        open_envelope(envelope, key, **kwargs)
    assert envelope.SerializeToString() == before
    assert info.value.code in OPEN_REJECTION_CODES
    assert "\n" not in str(info.value)
    return info.value


# ---------------------------------------------------------------------------
# Upstream vectors
# ---------------------------------------------------------------------------


def test_open_upstream_sealed_envelope(sealing_key: Any, pending_payload: Any) -> None:
    envelope = _parse(ENV_DIR / "sealed_envelope.json", api_pb2.SecureEnvelope())
    before = envelope.SerializeToString()
    opened = open_envelope(envelope, sealing_key)
    assert opened == pending_payload
    assert envelope.SerializeToString() == before  # the input is not modified
    digest = "a96f198c3c055d87c33c5736da7833659e46dbf56e0292250ab6ad6622f56ebd"
    plaintext = indep_open(before, sealing_key)
    assert len(plaintext) == 1170
    assert hashlib.sha256(plaintext).hexdigest() == digest
    assert hashlib.sha256(opened.SerializeToString()).hexdigest() == digest
    assert envelope.id == "1e7bb3cc-53ff-41b8-870f-4c22110e6f04"
    assert envelope_error(envelope) is None


def test_upstream_sealed_envelope_signature(sealing_key: Any, rsa_key: Any) -> None:
    envelope = _parse(ENV_DIR / "sealed_envelope.json", api_pb2.SecureEnvelope())
    pks = "SHA256:QhEspinUU51gK0dQGqLa56BA6xyRy5/7sN5/6GlaLZw"
    assert envelope.public_key_signature == pks
    assert public_key_signature(sealing_key.public_key()) == pks
    assert match_signature(envelope.public_key_signature, sealing_key.public_key())
    assert not match_signature(pks, rsa_key.public_key())
    assert parse_timestamp(envelope.timestamp) == datetime(
        2022, 3, 29, 14, 16, 29, 755212, tzinfo=UTC
    )


def test_upstream_unsealed_envelope_is_a_validation_error() -> None:
    envelope = _parse(ENV_DIR / "unsealed_envelope.json", api_pb2.SecureEnvelope())
    assert not envelope.sealed
    rejection = _rejected(envelope, None)
    assert rejection.code == VALIDATION_ERROR
    assert rejection.retry is False
    assert parse_timestamp(envelope.timestamp) == datetime(
        2022, 3, 29, 14, 16, 27, 453444, tzinfo=UTC
    )


def test_upstream_error_envelope(rsa_key: Any) -> None:
    envelope = _parse(ENV_DIR / "error_envelope.json", api_pb2.SecureEnvelope())
    error = envelope_error(envelope)
    assert error is not None
    assert error.code == errors_pb2.Error.COMPLIANCE_CHECK_FAIL == 90
    assert error.message == "specified account has been frozen temporarily"
    assert error.retry is False
    error.message = "changed"  # a copy: the envelope is untouched
    assert envelope.error.message == "specified account has been frozen temporarily"
    with pytest.raises(EnvelopeError) as info:
        open_envelope(envelope, rsa_key)
    assert not isinstance(info.value, EnvelopeRejection)
    assert "COMPLIANCE_CHECK_FAIL" in str(info.value)


SIGNATURE_VECTORS = {
    "rsapub.pem": {
        "MD5": "MD5:oSbNMVJNnN/l4KgGVU+C2w",
        "SHA256": "SHA256:BbUdmS0/gwFi7loGUcJeEUD4REaT5XgtCoRX+BDnkNg",
        "SHA512": "SHA512:5xSYB7LfujoDzyzWJYqWDk7ffMsU8xqLCKbDnBcuLO75VF5fczy47AR9APMu0HVQ"
        "rhKeejxeHV7YXj/702MGAQ",
    },
    "ecdsa.pem": {
        "MD5": "MD5:ypCkp1+OdN4sVYyvVeu3uQ",
        "SHA256": "SHA256:KoKS3i9txi8DPwgmIdDr+rPrdF0bh5SbaQi4/HYheRA",
        "SHA512": "SHA512:X68VhfJAUVFRqpmz0N6Wftp+JNvTZvO1gAb8IuOXLe9eG+BCosUfvXgAPD8TrEH0L0rV"
        "BZUYuVAAezjAsqLZfw",
    },
    "ed25519.pem": {
        "MD5": "MD5:ckldayqiExTtcPlZBT8HCQ",
        "SHA256": "SHA256:csSenMcPrKDqVgRW4JOjfFyOuZta+bPBLqWI4/cJKyU",
        "SHA512": "SHA512:+s9qX6DWjnO/851NI69ViNkhD3iDQn36JG3NlZTDB/BWcppZf0aZ4AaHsIe+dpRXjiDKJN7"
        "19x0J052//YYu5g",
    },
}


@pytest.mark.parametrize(
    ("name", "alg"),
    [(name, alg) for name in SIGNATURE_VECTORS for alg in ("MD5", "SHA256", "SHA512")],
)
def test_public_key_signature_vectors(name: str, alg: str) -> None:
    expected = SIGNATURE_VECTORS[name][alg]
    data = (SIG_DIR / name).read_bytes()
    key = public_key_from_signing_key(api_pb2.SigningKey(data=data))
    assert public_key_signature(key, alg) == expected
    assert public_key_signature(key, f"  {alg.lower()} ") == expected
    assert "=" not in expected
    assert match_signature(expected, key)
    assert match_signature(" " + expected.replace(alg, alg.lower(), 1) + " ", key)
    assert match_signature(expected + "=" * (-len(expected.split(":")[1]) % 4), key)
    flipped = expected[:-2] + ("A" if expected[-2] != "A" else "B") + expected[-1]
    assert not match_signature(flipped, key)
    if alg == "SHA256":
        assert public_key_signature(key) == expected


@pytest.mark.parametrize(
    "bad",
    ["", "SHA256", "SHA1:abc", "SHA256:!!!", "SHA256:QhEs", ":QhEs", "x" * 2000, "MD5:" + "A" * 40],
)
def test_match_signature_rejects_malformed(bad: str, sealing_key: Any) -> None:
    assert match_signature(bad, sealing_key.public_key()) is False


def test_public_key_signature_unknown_algorithm(rsa_key: Any) -> None:
    with pytest.raises(EnvelopeError):
        public_key_signature(rsa_key.public_key(), "SHA1")


def test_alice_certificate_seals_and_opens(payload: Any) -> None:
    identity = load_identity(ENV_DIR / "alice.vaspbot.net.pem")
    assert isinstance(identity.key, rsa.RSAPrivateKey)
    public = identity.leaf.public_key()
    assert public_key_signature(public) == "SHA256:J2XfAxVS66xcv+DF3eZpttK1etCSJ2EQiQJiNmIjnvE"
    envelope = seal(payload, public)
    assert len(envelope.encryption_key) == len(envelope.hmac_secret) == 512
    assert open_envelope(envelope, identity.key) == payload
    assert indep_open(envelope.SerializeToString(), identity.key) == payload.SerializeToString()


def test_signing_key_from_upstream_certs_pem() -> None:
    identity = load_identity(KEYS_DIR / "certs.pem")
    sk = signing_key_from_certificate(identity.leaf)
    assert sk.version == 3
    assert sk.signature == identity.leaf.signature
    assert sk.signature_algorithm == "SHA256-RSA"
    assert sk.public_key_algorithm == "RSA"
    assert sk.not_before == "2022-05-15T18:34:12Z"
    assert sk.not_after == "2022-11-15T19:34:12Z"
    assert sk.revoked is False
    assert sk.data == identity.leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pks = "SHA256:ToLuV/KNXWxQWd7/b3DK/hCgbN1Zg1PQECIHWr3F8KM"
    assert public_key_signature(public_key_from_signing_key(sk)) == pks
    # The message survives the wire.
    again = api_pb2.SigningKey.FromString(sk.SerializeToString())
    assert public_key_signature(public_key_from_signing_key(again)) == pks


def test_signing_key_matches_gds_lookup_record() -> None:
    record = json.loads((KEYS_DIR / "lookup.json").read_text())["identity_certificate"]
    pem = base64.b64decode(record["data"])
    pks = "SHA256:p6e+TfID7MG1l6V0QsfJpuv49t0q5sHfFY1WUNkkSgk"
    # §10 order: the PEM certificate, a raw DER certificate and the SPKI all work.
    key = public_key_from_signing_key(api_pb2.SigningKey(data=pem))
    assert public_key_signature(key) == pks
    cert = x509.load_pem_x509_certificate(pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert public_key_signature(public_key_from_signing_key(api_pb2.SigningKey(data=der))) == pks
    sk = signing_key_from_certificate(cert)
    assert public_key_signature(public_key_from_signing_key(sk)) == pks
    # Same Go names and times as the directory recorded.
    assert sk.version == int(record["version"]) == 3
    assert sk.signature_algorithm == record["signature_algorithm"] == "SHA384-RSA"
    assert sk.public_key_algorithm == record["public_key_algorithm"] == "RSA"
    assert sk.not_before == record["not_before"]
    assert sk.not_after == record["not_after"]
    assert sk.signature == base64.b64decode(record["signature"])


def test_public_key_from_signing_key_pem_public_key_labels(rsa_key: Any) -> None:
    public = rsa_key.public_key()
    spki = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pkcs1 = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    for data in (spki, pkcs1):
        got = public_key_from_signing_key(api_pb2.SigningKey(data=data))
        assert public_key_signature(got) == public_key_signature(public)
    for bad in (b"", b"not a key", b"-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n"):
        with pytest.raises(CertificateError):
            public_key_from_signing_key(api_pb2.SigningKey(data=bad))


def _self_signed(key: Any, digest: Any) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sk.test")])
    start = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=1))
        .sign(key, digest)
    )


def test_signing_key_go_algorithm_names(rsa_key: Any) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    cases = [
        (rsa_key, hashes.SHA384(), "SHA384-RSA", "RSA"),
        (rsa_key, hashes.SHA512(), "SHA512-RSA", "RSA"),
        (ec_key, hashes.SHA256(), "ECDSA-SHA256", "ECDSA"),
        (ec_key, hashes.SHA384(), "ECDSA-SHA384", "ECDSA"),
        (ed_key, None, "Ed25519", "Ed25519"),
    ]
    for key, digest, sig_alg, pk_alg in cases:
        cert = _self_signed(key, digest)
        sk = signing_key_from_certificate(cert)
        assert (sk.signature_algorithm, sk.public_key_algorithm) == (sig_alg, pk_alg)
        assert sk.not_before == "2024-01-02T03:04:05Z"  # second precision
        assert sk.not_after == "2024-01-03T03:04:05Z"
        assert public_key_signature(public_key_from_signing_key(sk)) == public_key_signature(
            key.public_key()
        )
    pss = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pss")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pss")]))
        .public_key(rsa_key.public_key())
        .serial_number(2)
        .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2024, 1, 2, tzinfo=UTC))
        .sign(
            rsa_key,
            hashes.SHA256(),
            rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
        )
    )
    assert signing_key_from_certificate(pss).signature_algorithm == "SHA256-RSAPSS"


# ---------------------------------------------------------------------------
# Seal / open round trips, both ways against the independent implementation
# ---------------------------------------------------------------------------


def test_seal_open_round_trip(payload: Any, rsa_key: Any) -> None:
    before = payload.SerializeToString()
    envelope = seal(payload, rsa_key.public_key(), transfer_state=api_pb2.STARTED)
    assert payload.SerializeToString() == before  # the input is not modified
    assert uuid.UUID(envelope.id).version == 4
    assert envelope.sealed is True
    assert envelope.encryption_algorithm == "AES256-GCM"
    assert envelope.hmac_algorithm == "HMAC-SHA256"
    assert envelope.public_key_signature == indep_pks(rsa_key.public_key())
    assert envelope.transfer_state == api_pb2.STARTED
    assert len(envelope.payload) == len(before) + 28
    assert len(envelope.hmac) == 32
    assert len(envelope.encryption_key) == len(envelope.hmac_secret) == 256
    assert not envelope.HasField("error")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z", envelope.timestamp)
    # The same 32 bytes serve as key and HMAC secret by default.
    fields = wire_decode(envelope.SerializeToString())
    key = rsa_key.decrypt(fields[F_KEY], _oaep())
    assert len(key) == 32
    assert rsa_key.decrypt(fields[F_SECRET], _oaep()) == key
    sealed_copy = envelope.SerializeToString()
    assert open_envelope(envelope, rsa_key) == payload
    assert envelope.SerializeToString() == sealed_copy
    # Two seals of one payload share nothing random.
    second = seal(payload, rsa_key.public_key())
    assert second.id != envelope.id
    assert second.payload[-12:] != envelope.payload[-12:]


def test_seal_options(payload: Any, rsa_key: Any) -> None:
    envelope_id = "2b3b4c95-0a78-4f2a-a9fa-041970f97144"
    secret = b"s" * 48
    envelope = seal(
        payload,
        rsa_key.public_key(),
        envelope_id=envelope_id,
        hmac_secret=secret,
        clock=lambda: FIXED_NOW,
    )
    assert envelope.id == envelope_id
    assert envelope.timestamp == "2024-05-06T07:08:09.12Z"
    assert envelope.transfer_state == 0
    fields = wire_decode(envelope.SerializeToString())
    assert rsa_key.decrypt(fields[F_SECRET], _oaep()) == secret
    assert open_envelope(envelope, rsa_key) == payload


def test_this_project_seals_independent_implementation_opens(payload: Any, rsa_key: Any) -> None:
    envelope = seal(payload, rsa_key.public_key(), hmac_secret=os.urandom(32))
    plaintext = indep_open(envelope.SerializeToString(), rsa_key)
    assert api_pb2.Payload.FromString(plaintext) == payload
    fields = wire_decode(envelope.SerializeToString())
    assert 8 not in fields  # there is no field 8
    assert fields[F_PKS].decode() == indep_pks(rsa_key.public_key())
    assert fields[F_SEALED] == 1


@pytest.mark.parametrize("same_secret", [True, False])
def test_independent_implementation_seals_this_project_opens(
    payload: Any, rsa_key: Any, same_secret: bool
) -> None:
    key = os.urandom(32)
    secret = key if same_secret else os.urandom(32)
    data = indep_seal(payload.SerializeToString(), rsa_key.public_key(), key=key, secret=secret)
    assert open_envelope(_env(data), rsa_key) == payload


def test_open_unsealed_envelope_uses_clear_key(payload: Any) -> None:
    data = indep_seal(payload.SerializeToString(), None, secret=os.urandom(20))
    envelope = _env(data)
    assert envelope.sealed is False
    assert open_envelope(envelope, None) == payload


def test_open_accepts_timestamp_forms(payload: Any, rsa_key: Any) -> None:
    for stamp in ("2022-01-27T08:21:43Z", "2022-01-27T08:21:43+02:00", "2022-01-27T08:21:43.1Z"):
        data = indep_seal(payload.SerializeToString(), rsa_key.public_key(), timestamp=stamp)
        assert open_envelope(_env(data), rsa_key) == payload


def test_open_both_error_and_payload(payload: Any, rsa_key: Any) -> None:
    envelope = seal(payload, rsa_key.public_key())
    envelope.error.code = errors_pb2.Error.REJECTED
    envelope.error.message = "repair-and-payload"
    assert open_envelope(envelope, rsa_key) == payload
    error = envelope_error(envelope)
    assert error is not None and error.code == 50


# ---------------------------------------------------------------------------
# A failing twin for every open step
# ---------------------------------------------------------------------------


def test_wrong_private_key_is_invalid_key_retry(payload: Any, rsa_key: Any, other_key: Any) -> None:
    envelope = seal(payload, rsa_key.public_key())
    rejection = _rejected(envelope, other_key)
    assert (rejection.code, rejection.retry) == (INVALID_KEY, True)
    assert "another key" in str(rejection)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    for key in (None, ec_key):
        rejection = _rejected(envelope, key)
        assert (rejection.code, rejection.retry) == (INVALID_KEY, True)


def test_garbled_sealed_key_is_invalid_key_retry(payload: Any, rsa_key: Any) -> None:
    envelope = seal(payload, rsa_key.public_key())
    for name in ("encryption_key", "hmac_secret"):
        twin = api_pb2.SecureEnvelope()
        twin.CopyFrom(envelope)
        value = bytearray(getattr(twin, name))
        value[7] ^= 1
        setattr(twin, name, bytes(value))
        rejection = _rejected(twin, rsa_key)
        assert (rejection.code, rejection.retry) == (INVALID_KEY, True)


@pytest.mark.parametrize(
    ("enc_alg", "hmac_alg"),
    [("AES128-GCM", "HMAC-SHA256"), ("AES256-GCM", "HMAC-SHA1"), ("aes256-gcm", "HMAC-SHA256")],
)
def test_unhandled_algorithm(payload: Any, rsa_key: Any, enc_alg: str, hmac_alg: str) -> None:
    data = indep_seal(
        payload.SerializeToString(), rsa_key.public_key(), enc_alg=enc_alg, hmac_alg=hmac_alg
    )
    rejection = _rejected(_env(data), rsa_key)
    assert (rejection.code, rejection.retry) == (UNHANDLED_ALGORITHM, False)


def test_flipped_payload_byte_is_invalid_signature(payload: Any, rsa_key: Any) -> None:
    envelope = seal(payload, rsa_key.public_key())
    for index in (0, len(envelope.payload) // 2, -1):
        twin = api_pb2.SecureEnvelope()
        twin.CopyFrom(envelope)
        data = bytearray(twin.payload)
        data[index] ^= 0x80
        twin.payload = bytes(data)
        assert _rejected(twin, rsa_key).code == INVALID_SIGNATURE
    twin = api_pb2.SecureEnvelope()
    twin.CopyFrom(envelope)
    twin.hmac = envelope.hmac[:-1]
    assert _rejected(twin, rsa_key).code == INVALID_SIGNATURE


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: p[:8],  # shorter than the nonce
        lambda p: p[:20],  # shorter than nonce + tag
        lambda p: p[1:],  # truncated at the front
        lambda p: p[:-13] + p[-12:],  # one tag byte gone
        lambda p: bytes([p[0] ^ 1]) + p[1:],  # garbled ciphertext
        lambda p: p[:-1] + bytes([p[-1] ^ 1]),  # garbled nonce
    ],
)
def test_valid_hmac_over_bad_ciphertext_is_invalid_key(
    payload: Any, rsa_key: Any, tamper: Any
) -> None:
    data = indep_seal(payload.SerializeToString(), rsa_key.public_key(), tamper=tamper)
    rejection = _rejected(_env(data), rsa_key)
    assert (rejection.code, rejection.retry) == (INVALID_KEY, False)


def test_wrong_clear_key_length_is_invalid_key(payload: Any) -> None:
    key16 = os.urandom(16)  # AES-128 key under an "AES256-GCM" label
    nonce = os.urandom(12)
    ciphertext = AESGCM(key16).encrypt(nonce, payload.SerializeToString(), None) + nonce
    envelope = api_pb2.SecureEnvelope(
        id=str(uuid.uuid4()),
        payload=ciphertext,
        encryption_key=key16,
        encryption_algorithm="AES256-GCM",
        hmac=hmac_mod.new(key16, ciphertext, hashlib.sha256).digest(),
        hmac_secret=key16,
        hmac_algorithm="HMAC-SHA256",
        timestamp="2022-01-27T08:21:43Z",
    )
    assert _rejected(envelope, None).code == INVALID_KEY


@pytest.mark.parametrize(
    "plaintext",
    [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x1a\xff\xff\xff\xff\x0f", b"\x0b"],
)
def test_non_protobuf_plaintext_is_decode_fail(rsa_key: Any, plaintext: bytes) -> None:
    data = indep_seal(plaintext, rsa_key.public_key())
    assert _rejected(_env(data), rsa_key).code == ENVELOPE_DECODE_FAIL


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sent_at", ""),
        ("sent_at", "yesterday"),
        ("sent_at", "2022-01-27 08:21:43"),
        ("received_at", "2022-13-01T00:00:00Z"),
        ("identity", None),
        ("transaction", None),
    ],
)
def test_invalid_payload_is_validation_error(
    payload: Any, rsa_key: Any, field: str, value: str | None
) -> None:
    bad = api_pb2.Payload()
    bad.CopyFrom(payload)
    if value is None:
        bad.ClearField(field)
    else:
        setattr(bad, field, value)
    data = indep_seal(bad.SerializeToString(), rsa_key.public_key())
    rejection = _rejected(_env(data), rsa_key)
    assert (rejection.code, rejection.retry) == (VALIDATION_ERROR, False)
    with pytest.raises(EnvelopeError) as info:  # and this project refuses to seal it
        seal(bad, rsa_key.public_key())
    assert not isinstance(info.value, EnvelopeRejection)


def _edited(envelope: Any, **changes: Any) -> Any:
    twin = api_pb2.SecureEnvelope()
    twin.CopyFrom(envelope)
    for name, value in changes.items():
        if value is None:
            twin.ClearField(name)
        else:
            setattr(twin, name, value)
    return twin


@pytest.mark.parametrize(
    "changes",
    [
        {"id": ""},
        {"id": "not-a-uuid"},
        {"id": "1e7bb3cc-53ff-41b8-870f-4c22110e6f0"},
        {"id": "1e7bb3cc-53ff-41b8-870f-4c22110e6f04x"},
        {"id": "{1e7bb3cc-53ff-41b8-870f-4c22110e6f04"},
        {"id": "1e7bb3cc-53ff-41b8-870f-4c22110e6f0\u0664"},
        {"timestamp": ""},
        {"timestamp": "2022-03-29"},
        {"timestamp": "2022-03-29T09:16:29.755212"},
        {"timestamp": "2022-02-30T09:16:29Z"},
        {"timestamp": "2022-03-29T25:16:29Z"},
        {"timestamp": "2022-03-29T09:16:29+24:00"},
        {"timestamp": "2022-03-29T09:16:29.1234567890Z"},
        {"timestamp": "Tue, 29 Mar 2022 09:16:29 GMT"},
        {"encryption_key": b""},
        {"hmac": b""},
        {"hmac_secret": b""},
        {"encryption_algorithm": ""},
        {"hmac_algorithm": ""},
        {"payload": b""},
    ],
)
def test_invalid_envelope_is_bad_request(payload: Any, rsa_key: Any, changes: Any) -> None:
    envelope = seal(payload, rsa_key.public_key())
    rejection = _rejected(_edited(envelope, **changes), rsa_key)
    assert (rejection.code, rejection.retry) == (BAD_REQUEST, True)


def test_only_canonical_uuid_text_is_an_envelope_id(payload: Any, rsa_key: Any) -> None:
    # Canonical 8-4-4-4-12 text (hex in either case) opens; the other spellings Go's
    # uuid.Parse would take are refused like any other non-UUID (issue 11 §2).
    raw = uuid.uuid4()
    envelope = seal(payload, rsa_key.public_key())
    for spelling in (str(raw), str(raw).upper()):
        assert open_envelope(_edited(envelope, id=spelling), rsa_key) == payload
    for spelling in ("{" + str(raw) + "}", "urn:uuid:" + str(raw), raw.hex, f" {raw}"):
        rejection = _rejected(_edited(envelope, id=spelling), rsa_key)
        assert (rejection.code, rejection.retry) == (BAD_REQUEST, True)


def test_invalid_error_envelope_is_bad_request() -> None:
    base = _parse(ENV_DIR / "error_envelope.json", api_pb2.SecureEnvelope())
    for code, message in ((0, "no code"), (7, "unknown code"), (90, "")):
        twin = _edited(base)
        twin.error.code = code
        twin.error.message = message
        assert _rejected(twin, None).code == BAD_REQUEST


def test_oversized_payload_is_rejected_before_decryption(payload: Any, rsa_key: Any) -> None:
    envelope = seal(payload, rsa_key.public_key())
    huge = _edited(envelope, payload=bytes(MAX_PAYLOAD_SIZE + 1))
    rejection = _rejected(huge, rsa_key)
    assert (rejection.code, rejection.retry) == (BAD_REQUEST, True)
    assert "larger than" in str(rejection)
    small_limit = _rejected(envelope, rsa_key, max_payload_size=len(envelope.payload) - 1)
    assert small_limit.code == BAD_REQUEST
    assert open_envelope(envelope, rsa_key, max_payload_size=len(envelope.payload)) == payload


def test_order_validation_before_unseal(payload: Any, rsa_key: Any, other_key: Any) -> None:
    envelope = _edited(seal(payload, rsa_key.public_key()), id="nope", encryption_algorithm="X")
    assert _rejected(envelope, other_key).code == BAD_REQUEST


def test_order_unseal_before_algorithm_and_hmac(payload: Any, rsa_key: Any, other_key: Any) -> None:
    envelope = _edited(seal(payload, rsa_key.public_key()), hmac_algorithm="HMAC-MD5", hmac=b"x")
    assert _rejected(envelope, other_key).code == INVALID_KEY
    assert _rejected(envelope, rsa_key).code == UNHANDLED_ALGORITHM


def test_order_hmac_before_decryption(payload: Any, rsa_key: Any) -> None:
    envelope = seal(payload, rsa_key.public_key())
    assert _rejected(_edited(envelope, payload=envelope.payload[:5]), rsa_key).code == (
        INVALID_SIGNATURE
    )


# ---------------------------------------------------------------------------
# Seal refusals
# ---------------------------------------------------------------------------


def test_seal_refusals(payload: Any, rsa_key: Any) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - refused on purpose
    for key in (
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        ed25519.Ed25519PrivateKey.generate().public_key(),
        small.public_key(),
    ):
        with pytest.raises(EnvelopeError):
            seal(payload, key)
    public = rsa_key.public_key()
    for kwargs in (
        {"envelope_id": "nope"},
        {"envelope_id": ""},
        {"transfer_state": 99},
        {"hmac_secret": b""},
    ):
        with pytest.raises(EnvelopeError):
            seal(payload, public, **kwargs)
    with pytest.raises(EnvelopeError):
        seal(api_pb2.Payload(), public)
    with pytest.raises(EnvelopeError):
        seal(api_pb2.SecureEnvelope(), public)


# ---------------------------------------------------------------------------
# Rejections
# ---------------------------------------------------------------------------


def test_reject_builds_error_envelope() -> None:
    envelope_id = "1e7bb3cc-53ff-41b8-870f-4c22110e6f04"
    env = reject(envelope_id, 90, "account frozen", clock=lambda: FIXED_NOW)
    assert env.id == envelope_id
    assert env.timestamp == "2024-05-06T07:08:09.12Z"
    assert (env.error.code, env.error.message, env.error.retry) == (90, "account frozen", False)
    assert env.transfer_state == api_pb2.REJECTED
    assert env.sealed is False
    for name in ("payload", "encryption_key", "hmac", "hmac_secret"):
        assert getattr(env, name) == b""
    assert env.encryption_algorithm == env.hmac_algorithm == env.public_key_signature == ""
    # A peer recognises it as an error envelope (it passes validation).
    error = envelope_error(env)
    assert error is not None and error.code == 90
    with pytest.raises(EnvelopeError) as info:
        open_envelope(env, None)
    assert not isinstance(info.value, EnvelopeRejection)


def test_reject_retry_rules() -> None:
    eid = str(uuid.uuid4())
    repair = reject(eid, 155, "fix it")
    assert repair.error.retry is True and repair.transfer_state == api_pb2.REPAIR
    assert reject(eid, 150, "fix").error.retry is True
    assert reject(eid, 108, "no").error.retry is False
    forced = reject(eid, 106, "try again", retry=True)
    assert forced.error.retry is True and forced.transfer_state == api_pb2.REPAIR
    refused = reject(eid, 155, "final", retry=False)
    assert refused.error.retry is False and refused.transfer_state == api_pb2.REJECTED
    for code, message in ((0, "x"), (7, "x"), (90, "")):
        with pytest.raises(EnvelopeError):
            reject(eid, code, message)


def test_rejection_envelope_from_open_failure(payload: Any, rsa_key: Any, other_key: Any) -> None:
    envelope = seal(payload, rsa_key.public_key())
    rejection = _rejected(envelope, other_key)
    reply = rejection_envelope(envelope.id, rejection)
    assert reply.id == envelope.id
    assert (reply.error.code, reply.error.retry) == (INVALID_KEY, True)
    assert reply.transfer_state == api_pb2.REPAIR
    assert reply.error.message == rejection.message


# ---------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------


def test_format_timestamp() -> None:
    cases = {
        datetime(2022, 3, 29, 14, 16, 29, 755212, tzinfo=UTC): "2022-03-29T14:16:29.755212Z",
        datetime(2022, 3, 29, 14, 16, 29, 750000, tzinfo=UTC): "2022-03-29T14:16:29.75Z",
        datetime(2022, 3, 29, 14, 16, 29, tzinfo=UTC): "2022-03-29T14:16:29Z",
        datetime(2022, 3, 29, 9, 16, 29, 1, tzinfo=timezone(timedelta(hours=-5))): (
            "2022-03-29T14:16:29.000001Z"
        ),
        datetime(5, 1, 2, 3, 4, 5, tzinfo=UTC): "0005-01-02T03:04:05Z",
    }
    for dt, text in cases.items():
        assert format_timestamp(dt) == text
        assert parse_timestamp(text) == dt
    with pytest.raises(ValueError):
        format_timestamp(datetime(2022, 1, 1))  # naive


def test_parse_timestamp() -> None:
    expected = datetime(2022, 3, 29, 14, 16, 29, 755212, tzinfo=UTC)
    assert parse_timestamp("2022-03-29T09:16:29.755212-05:00") == expected
    assert parse_timestamp("2022-03-29T09:16:29.755212999-05:00") == expected  # nanoseconds
    assert parse_timestamp("2022-03-29t14:16:29.755212z") == expected
    assert parse_timestamp("2022-01-27T08:21:43Z").tzinfo is UTC
    for bad in (
        "",
        "2022-03-29",
        "2022-03-29T09:16:29",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59-01:00",
        "2022-03-29T09:16:60Z",
        " 2022-03-29T09:16:29Z",
    ):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


# ---------------------------------------------------------------------------
# Hygiene
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_envelope_package_does_not_import_grpc() -> None:
    code = "import sys, trisa_peer.envelope; assert 'grpc' not in sys.modules, 'grpc imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_errors_never_contain_key_material(payload: Any, rsa_key: Any) -> None:
    key = os.urandom(32)
    data = indep_seal(payload.SerializeToString(), None, key=key, tamper=lambda p: p[:20])
    rejection = _rejected(_env(data), None)
    text = str(rejection) + repr(rejection.__cause__)
    for form in (key.hex(), base64.b64encode(key).decode(), repr(key)):
        assert form not in text
