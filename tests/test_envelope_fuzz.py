"""Property tests: ``open_envelope`` turns every malformed envelope into a rejection.

Whatever is done to a valid sealed envelope (random field bytes, truncations, bit
flips, random algorithm names, ids, timestamps, errors, oversized payloads) or to its
wire bytes, opening either succeeds or raises ``EnvelopeRejection`` with one of the
documented codes, except for a valid error envelope without payload, which raises a
plain ``EnvelopeError`` (the peer's own rejection). It never raises anything else and
never modifies its input.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from helpers import UPSTREAM_TRISA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trisa_peer._pb.ivms101.identity_pb2  # registers the Any types for json_format
import trisa_peer._pb.trisa.data.generic.v1beta1.transaction_pb2  # noqa: F401
from trisa_peer._pb.trisa.api.v1beta1 import api_pb2
from trisa_peer.envelope import (
    OPEN_REJECTION_CODES,
    envelope_error,
    format_timestamp,
    match_signature,
    open_envelope,
    parse_timestamp,
    seal,
)
from trisa_peer.errors import EnvelopeError, EnvelopeRejection

# property-based (hypothesis): slow lane
pytestmark = pytest.mark.slow

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PAYLOAD = json_format.Parse(
    (UPSTREAM_TRISA / "pkg/trisa/envelope/testdata/payload.json").read_text(), api_pb2.Payload()
)
BASE = seal(PAYLOAD, KEY.public_key())
# A small limit keeps "oversized" examples cheap; a valid envelope still fits.
LIMIT = len(BASE.payload) + 256

BYTES_FIELDS = ("payload", "encryption_key", "hmac", "hmac_secret")
TEXT_FIELDS = ("id", "timestamp", "encryption_algorithm", "hmac_algorithm", "public_key_signature")

Mutation = Callable[[Any], None]


def _set(name: str, value: Any) -> Mutation:
    def apply(env: Any) -> None:
        setattr(env, name, value)

    return apply


def _truncate(name: str, cut: int) -> Mutation:
    def apply(env: Any) -> None:
        value = getattr(env, name)
        setattr(env, name, value[: cut % (len(value) + 1)])

    return apply


def _flip(name: str, index: int, bit: int) -> Mutation:
    def apply(env: Any) -> None:
        value = bytearray(getattr(env, name))
        if value:
            value[index % len(value)] ^= 1 << bit
            setattr(env, name, bytes(value))

    return apply


def _extend(extra: bytes) -> Mutation:
    def apply(env: Any) -> None:
        env.payload = env.payload + extra

    return apply


def _error(code: int, message: str, retry: bool, drop_payload: bool) -> Mutation:
    def apply(env: Any) -> None:
        env.error.code = code
        env.error.message = message
        env.error.retry = retry
        if drop_payload:
            env.payload = b""

    return apply


def _clear(name: str) -> Mutation:
    def apply(env: Any) -> None:
        env.ClearField(name)

    return apply


def _payload_variant(data: Any) -> bytes:
    """The valid payload with a field cleared or replaced by random text."""
    payload = api_pb2.Payload()
    payload.CopyFrom(PAYLOAD)
    name = data.draw(st.sampled_from(["identity", "transaction", "sent_at", "received_at"]))
    if name in ("sent_at", "received_at") and data.draw(st.booleans()):
        setattr(payload, name, data.draw(timestamps))
    else:
        payload.ClearField(name)
    return bytes(payload.SerializeToString())


bytes_field = st.sampled_from(BYTES_FIELDS)
text_field = st.sampled_from(TEXT_FIELDS)
timestamps = st.one_of(
    st.text(max_size=40),
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,12})?"
        r"([Zz]|[+-][0-9]{2}:?[0-9]{2})?\Z"
    ),
)
ids = st.one_of(
    st.text(max_size=50),
    st.uuids().map(str).map(lambda s: s[:-1]),
    st.uuids().map(lambda u: str(u) + "0"),
    st.uuids().map(lambda u: str(u).replace("-", "_", 1)),
    st.uuids().map(lambda u: "{" + str(u)),
    st.from_regex(r"\A[0-9a-fA-Fg-]{30,40}\Z"),
)
algorithms = st.one_of(
    st.sampled_from(["AES128-GCM", "AES192-GCM", "AES-GCM", "aes256-gcm", "AES256-GCM ", ""]),
    st.sampled_from(["HMAC-SHA1", "HMAC-SHA512", "hmac-sha256", "RSA-OAEP-SHA512"]),
    st.text(max_size=30),
)

mutations: st.SearchStrategy[Mutation] = st.one_of(
    st.builds(_set, bytes_field, st.binary(max_size=600)),
    st.builds(_truncate, bytes_field, st.integers(min_value=0, max_value=2000)),
    st.builds(_flip, bytes_field, st.integers(min_value=0), st.integers(min_value=0, max_value=7)),
    st.builds(_set, st.sampled_from(["encryption_algorithm", "hmac_algorithm"]), algorithms),
    st.builds(_set, st.just("id"), ids),
    st.builds(_set, st.just("timestamp"), timestamps),
    st.builds(_set, text_field, st.text(max_size=60)),
    st.builds(_set, st.just("sealed"), st.booleans()),
    st.builds(_set, st.just("transfer_state"), st.integers(min_value=0, max_value=7)),
    st.builds(_extend, st.binary(min_size=1, max_size=400)),
    st.builds(
        _error,
        st.integers(min_value=0, max_value=300),
        st.text(max_size=40),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(_clear, st.sampled_from([*BYTES_FIELDS, *TEXT_FIELDS, "error", "sealed"])),
)


def _check_open(env: Any) -> None:
    before = env.SerializeToString()
    try:
        result = open_envelope(env, KEY, max_payload_size=LIMIT)
    except EnvelopeRejection as rejection:
        assert rejection.code in OPEN_REJECTION_CODES
        assert isinstance(rejection.retry, bool)
        assert rejection.message and "\n" not in rejection.message
    except EnvelopeError:
        # Only a valid error envelope without a payload is "the peer's rejection".
        assert not env.payload
        assert envelope_error(env) is not None
    else:
        assert isinstance(result, api_pb2.Payload)
    assert env.SerializeToString() == before


@FUZZ
@given(st.lists(mutations, min_size=1, max_size=4))
def test_mutated_envelopes_only_raise_rejections(changes: list[Mutation]) -> None:
    env = api_pb2.SecureEnvelope()
    env.CopyFrom(BASE)
    for change in changes:
        change(env)
    _check_open(env)


@FUZZ
@given(st.integers(min_value=0), st.binary(max_size=64), st.integers(min_value=0, max_value=3))
def test_mutated_wire_bytes_only_raise_rejections(index: int, junk: bytes, mode: int) -> None:
    wire = BASE.SerializeToString()
    cut = index % (len(wire) + 1)
    if mode == 0:
        data = wire[:cut]
    elif mode == 1:
        data = wire[:cut] + junk + wire[cut:]
    elif mode == 2:
        data = wire[:cut] + junk + wire[cut + len(junk) :]
    else:
        data = junk + wire[cut:]
    try:
        env = api_pb2.SecureEnvelope.FromString(data)
    except DecodeError:
        return  # the transport would have refused these bytes already
    _check_open(env)


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.builds(_payload_variant, st.data())))
def test_random_plaintext_is_decode_fail_or_validation_error(plaintext: bytes) -> None:
    key = os.urandom(32)
    nonce = os.urandom(12)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, None) + nonce
    env = api_pb2.SecureEnvelope(
        id=BASE.id,
        payload=ciphertext,
        encryption_key=key,
        encryption_algorithm="AES256-GCM",
        hmac=hmac.new(key, ciphertext, hashlib.sha256).digest(),
        hmac_secret=key,
        hmac_algorithm="HMAC-SHA256",
        timestamp=BASE.timestamp,
    )
    try:
        result = open_envelope(env, None)
    except EnvelopeRejection as rejection:
        assert rejection.code in (107, 155)
    else:
        assert result.HasField("identity") and result.HasField("transaction") and result.sent_at


@FUZZ
@given(st.datetimes(timezones=st.just(UTC)))
def test_timestamp_round_trip(dt: datetime) -> None:
    text = format_timestamp(dt)
    assert text.endswith("Z")
    if "." in text:  # fractional seconds never end in a zero
        assert not text.endswith("0Z")
    assert parse_timestamp(text) == dt


@FUZZ
@given(st.one_of(st.text(max_size=80), timestamps))
def test_parse_timestamp_raises_only_value_error(text: str) -> None:
    try:
        parsed = parse_timestamp(text)
    except ValueError:
        return
    assert parsed.tzinfo is UTC


@FUZZ
@given(st.text(max_size=120))
def test_match_signature_never_raises(sig: str) -> None:
    assert match_signature(sig, KEY.public_key()) in (True, False)


def test_base_envelope_opens() -> None:
    assert open_envelope(BASE, KEY, max_payload_size=LIMIT) == PAYLOAD


@pytest.mark.parametrize("extra", [257, 10_000])
def test_oversized_payload_is_bad_request(extra: int) -> None:
    env = api_pb2.SecureEnvelope()
    env.CopyFrom(BASE)
    env.payload = BASE.payload + bytes(extra)
    with pytest.raises(EnvelopeRejection) as info:
        open_envelope(env, KEY, max_payload_size=LIMIT)
    assert info.value.code == 150
