"""Structural checks of envelopes and payloads (upstream
``envelope/validate.go``: what ``Open`` and ``Seal`` check first).

These return a short problem description (or ``None``) so that sealing can raise a
local :class:`~trisa_peer.errors.EnvelopeError` while opening raises the rejection the
spec prescribes. Descriptions name fields only; they never echo key material or
payload contents, and attacker-controlled strings are shortened.
"""

from __future__ import annotations

import re
from typing import Literal

from .._pb.trisa.api.v1beta1 import api_pb2, errors_pb2
from .timestamps import parse_timestamp

__all__ = [
    "KNOWN_ERROR_CODES",
    "MAX_PAYLOAD_SIZE",
    "envelope_problem",
    "is_uuid",
    "payload_problem",
    "short",
]

#: Largest ``SecureEnvelope.payload`` this package seals or opens (bounds memory).
MAX_PAYLOAD_SIZE = 16 * 1024 * 1024

#: Every ``trisa.api.v1beta1.Error.Code`` value (0 = UNHANDLED included).
KNOWN_ERROR_CODES: frozenset[int] = frozenset(errors_pb2.Error.Code.values())

# The forms Go's github.com/google/uuid Parse accepts.
_HEX = "[0-9a-fA-F]"
_UUID_RE = re.compile(
    rf"(?:urn:uuid:|\{{)?{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}\}}?"
    rf"|{_HEX}{{32}}",
    re.ASCII | re.IGNORECASE,
)
_CRYPTO_FIELDS = ("encryption_key", "encryption_algorithm", "hmac", "hmac_secret", "hmac_algorithm")


def short(text: str, limit: int = 40) -> str:
    """``repr`` of an untrusted string, shortened for an error message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def is_uuid(text: str) -> bool:
    """True for the UUID spellings Go ``uuid.Parse`` accepts (canonical, braces, urn, hex)."""
    if not isinstance(text, str) or _UUID_RE.fullmatch(text) is None:
        return False
    braced, urn = text.startswith("{"), text[:9].lower() == "urn:uuid:"
    if braced != text.endswith("}"):
        return False
    return not (braced and urn)


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
        return f"envelope id {short(envelope.id)} is not a UUID"
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


def payload_problem(payload: object) -> str | None:
    """Why ``payload`` is not a valid TRISA Payload, or ``None`` (upstream ``Seal``,
    first step).

    Takes any object: callers hand in whatever they were given, and a wrong type is
    one of the problems reported.
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
    if payload.received_at and not _timestamp_ok(payload.received_at):
        return f"payload received_at {short(payload.received_at)} is not RFC 3339"
    return None
