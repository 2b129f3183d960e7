"""Structural checks of envelopes and payloads (upstream
``envelope/validate.go``: what ``Open`` and ``Seal`` check first).

These return a short problem description (or ``None``) so that sealing can raise a
local :class:`~trisa_peer.errors.EnvelopeError` while opening raises the rejection the
spec prescribes. Descriptions name fields only; they never echo key material or
payload contents, and attacker-controlled strings are shortened.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Literal

from .._pb.trisa.api.v1beta1 import api_pb2, errors_pb2
from ..logtext import peer_text, text_digest
from .timestamps import parse_timestamp, utcnow

__all__ = [
    "DEFAULT_TIMESTAMP_WINDOW",
    "KNOWN_ERROR_CODES",
    "MAX_PAYLOAD_SIZE",
    "NEW_TRANSFER_STATES",
    "RECORDED_ID_LENGTH",
    "SENT_AT_EARLIEST",
    "SENT_AT_MAX_AHEAD",
    "envelope_problem",
    "is_uuid",
    "metadata_problem",
    "payload_problem",
    "recorded_id",
    "short",
]

#: Largest ``SecureEnvelope.payload`` this package seals or opens (bounds memory).
MAX_PAYLOAD_SIZE = 16 * 1024 * 1024

#: Every ``trisa.api.v1beta1.Error.Code`` value (0 = UNHANDLED included).
KNOWN_ERROR_CODES: frozenset[int] = frozenset(errors_pb2.Error.Code.values())

#: How far an incoming envelope's ``timestamp`` may be from the receiver's clock, either
#: way. Every Go state transition (and every seal here) re-stamps it, so a fresh message
#: is seconds old; the slack covers clock skew and retries of the same sealed bytes.
DEFAULT_TIMESTAMP_WINDOW = timedelta(minutes=15)

#: Sanity range of a payload's ``sent_at``: not before 2009-01-01 (no virtual asset
#: transfer predates it) and at most a day ahead of the receiver's clock. Only a sanity
#: range: repairs and pending follow-ups legitimately carry the original, old ``sent_at``.
SENT_AT_EARLIEST = datetime(2009, 1, 1, tzinfo=UTC)
SENT_AT_MAX_AHEAD = timedelta(days=1)

#: ``transfer_state`` values a *new* transfer may carry: 0 (UNSPECIFIED, what pre-1.1
#: nodes send) and STARTED.
NEW_TRANSFER_STATES: frozenset[int] = frozenset({0, int(api_pb2.TransferState.STARTED)})
_TRANSFER_STATES: frozenset[int] = frozenset(api_pb2.TransferState.values())

#: At most this many (escaped) characters of a refused envelope id are recorded or echoed.
RECORDED_ID_LENGTH = 64

# Canonical UUID text (8-4-4-4-12 hex digits, RFC 9562 §4; hex case-insensitive): what
# Go's uuid.New().String() writes and upstream's validator requires. The other spellings
# Go's uuid.Parse would also take (braces, urn:uuid:, 32 bare hex digits) are refused.
_HEX = "[0-9a-fA-F]"
_UUID_RE = re.compile(rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}", re.ASCII)
_CRYPTO_FIELDS = ("encryption_key", "encryption_algorithm", "hmac", "hmac_secret", "hmac_algorithm")


def short(text: str, limit: int = 40) -> str:
    """``repr`` of an untrusted string, shortened for an error message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def is_uuid(text: str) -> bool:
    """True only for canonical UUID text: 36 characters, 8-4-4-4-12 hex digits."""
    return isinstance(text, str) and len(text) == 36 and _UUID_RE.fullmatch(text) is not None


def recorded_id(envelope_id: str) -> str:
    """What a record or a reply may carry of an envelope id: a canonical UUID as is,
    anything else as at most :data:`RECORDED_ID_LENGTH` escaped characters (no control
    characters, no line breaks; cut at a whole escape)."""
    if is_uuid(envelope_id):
        return envelope_id
    out: list[str] = []
    size = 0
    for ch in envelope_id[:RECORDED_ID_LENGTH]:
        piece = peer_text(ch)
        if size + len(piece) > RECORDED_ID_LENGTH:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _id_problem(envelope_id: str) -> str:
    return (
        f"envelope id is not a canonical UUID ({len(envelope_id):,} characters, "
        f"sha256 {text_digest(envelope_id)})"
    )


def _error_set(error: errors_pb2.Error) -> bool:
    return int(error.ByteSize()) > 0


def _timestamp_ok(text: str) -> bool:
    try:
        parse_timestamp(text)
    except ValueError:
        return False
    return True


def envelope_problem(
    envelope: api_pb2.SecureEnvelope, *, max_payload_size: int = MAX_PAYLOAD_SIZE
) -> str | None:
    """Why ``envelope`` is not a valid SecureEnvelope, or ``None`` (upstream ``Open``,
    first step).

    ``sealed`` and ``public_key_signature`` are not checked (as in Go).
    """
    if not envelope.id:
        return "envelope id is missing"
    if not is_uuid(envelope.id):
        return _id_problem(envelope.id)
    if not envelope.timestamp:
        return "envelope timestamp is missing"
    if not _timestamp_ok(envelope.timestamp):
        return f"envelope timestamp {short(envelope.timestamp)} is not RFC 3339"
    has_error = envelope.HasField("error") and _error_set(envelope.error)
    if has_error:
        code = int(envelope.error.code)
        if code == 0 or code not in KNOWN_ERROR_CODES:
            return f"envelope error has an invalid code {code}"
        if not envelope.error.message:
            return "envelope error has no message"
    if not envelope.payload:
        if not has_error:
            return "envelope has neither a payload nor an error"
        return None
    if len(envelope.payload) > max_payload_size:
        return f"envelope payload is larger than {max_payload_size} bytes"
    for name in _CRYPTO_FIELDS:
        if not getattr(envelope, name):
            return f"envelope has a payload but no {name}"
    return None


def _any_set(payload: api_pb2.Payload, name: Literal["identity", "transaction"]) -> bool:
    return payload.HasField(name) and bool(getattr(payload, name).type_url)


def payload_problem(payload: object, *, now: datetime | None = None) -> str | None:
    """Why ``payload`` is not a valid TRISA Payload, or ``None`` (upstream ``Seal``,
    first step).

    Takes any object: callers hand in whatever they were given, and a wrong type is
    one of the problems reported. ``sent_at`` must also lie in the sanity range
    (:data:`SENT_AT_EARLIEST` to ``now`` + :data:`SENT_AT_MAX_AHEAD`; ``now`` defaults
    to the system clock).
    """
    if not isinstance(payload, api_pb2.Payload):
        return "not a trisa.api.v1beta1.Payload"
    if not _any_set(payload, "identity"):
        return "payload has no identity"
    if not _any_set(payload, "transaction"):
        return "payload has no transaction"
    if not payload.sent_at:
        return "payload sent_at is missing"
    if not _timestamp_ok(payload.sent_at):
        return f"payload sent_at {short(payload.sent_at)} is not RFC 3339"
    sent_at = parse_timestamp(payload.sent_at)
    latest = (now or utcnow()) + SENT_AT_MAX_AHEAD
    if not SENT_AT_EARLIEST <= sent_at <= latest:
        return (
            f"payload sent_at {short(payload.sent_at)} is outside the sanity range "
            f"(2009-01-01 to a day ahead)"
        )
    if payload.received_at and not _timestamp_ok(payload.received_at):
        return f"payload received_at {short(payload.received_at)} is not RFC 3339"
    return None


def metadata_problem(
    envelope: api_pb2.SecureEnvelope,
    *,
    now: datetime,
    window: timedelta = DEFAULT_TIMESTAMP_WINDOW,
    new_transfer: bool | None = None,
) -> str | None:
    """Why a receiving node refuses ``envelope``'s metadata (BAD_REQUEST), or ``None``.

    Checked before anything of the envelope is logged, stored or opened: the id is
    canonical UUID text; the ``timestamp`` is RFC 3339 and within ``window`` of ``now``
    either way; ``transfer_state`` is a TransferState value and, on a new transfer
    (``new_transfer`` True), 0 (UNSPECIFIED) or STARTED. The problem text never repeats
    the peer's strings whole (a bad id is named by its length and SHA-256).
    """
    if not is_uuid(envelope.id):
        return "envelope id is missing" if not envelope.id else _id_problem(envelope.id)
    if not envelope.timestamp:
        return "envelope timestamp is missing"
    try:
        stamped = parse_timestamp(envelope.timestamp)
    except ValueError:
        return f"envelope timestamp {short(peer_text(envelope.timestamp))} is not RFC 3339"
    if abs(stamped - now) > window:
        return (
            f"envelope timestamp {short(peer_text(envelope.timestamp))} is outside the "
            f"receiver's freshness window (±{window.total_seconds():g} s); seal it again"
        )
    state = int(envelope.transfer_state)
    if state not in _TRANSFER_STATES:
        return f"unknown transfer_state {state}"
    if new_transfer and state not in NEW_TRANSFER_STATES:
        name = api_pb2.TransferState.Name(envelope.transfer_state)
        return f"a new transfer must be STARTED or UNSPECIFIED, not {name} ({state})"
    return None
