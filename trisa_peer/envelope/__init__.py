"""TRISA secure envelopes and KeyExchange signing keys (upstream
``pkg/trisa/envelope`` and ``pkg/trisa/keys``; docs/architecture.md, References).

Imports neither grpc nor anything that does. Public API:

* :func:`seal`, :func:`open_envelope`, :func:`reject`, :func:`rejection_envelope`,
  :func:`envelope_error`
* :func:`public_key_signature`, :func:`match_signature`
* :func:`signing_key_from_certificate`, :func:`public_key_from_signing_key`
* :func:`format_timestamp`, :func:`parse_timestamp`
"""

from __future__ import annotations

from .crypto import ENCRYPTION_ALGORITHM, HMAC_ALGORITHM, SEALING_ALGORITHM
from .envelope import (
    BAD_REQUEST,
    ENVELOPE_DECODE_FAIL,
    INVALID_KEY,
    INVALID_SIGNATURE,
    OPEN_REJECTION_CODES,
    UNHANDLED_ALGORITHM,
    VALIDATION_ERROR,
    envelope_error,
    open_envelope,
    reject,
    rejection_envelope,
    seal,
)
from .keys import public_key_from_signing_key, signing_key_from_certificate
from .signature import match_signature, public_key_signature
from .timestamps import format_timestamp, parse_timestamp
from .validate import MAX_PAYLOAD_SIZE

__all__ = [
    "BAD_REQUEST",
    "ENCRYPTION_ALGORITHM",
    "ENVELOPE_DECODE_FAIL",
    "HMAC_ALGORITHM",
    "INVALID_KEY",
    "INVALID_SIGNATURE",
    "MAX_PAYLOAD_SIZE",
    "OPEN_REJECTION_CODES",
    "SEALING_ALGORITHM",
    "UNHANDLED_ALGORITHM",
    "VALIDATION_ERROR",
    "envelope_error",
    "format_timestamp",
    "match_signature",
    "open_envelope",
    "parse_timestamp",
    "public_key_from_signing_key",
    "public_key_signature",
    "reject",
    "rejection_envelope",
    "seal",
    "signing_key_from_certificate",
]
