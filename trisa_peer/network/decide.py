"""An operator's decision on a pending incoming transfer, recorded in the store.

Shared by ``trisa-peer transfers resolve`` and the HTTP API (``POST
/transfers/{id}/resolve``): both record the decision the same way, and the node's
pending loop delivers it. Checked here: the transfer is a pending *incoming* request of
this store, its reply window is still open, no decision is recorded yet, and a rejection
carries a real TRISA error code (not UNHANDLED). Not checked: whether the node that will
deliver the decision is running (a node started later on the same store delivers it).
"""

from __future__ import annotations

from .._pb.trisa.api.v1beta1 import errors_pb2
from ..clock import utcnow
from ..envelope import parse_timestamp
from ..errors import ConfigurationError
from .node import shown_resolution
from .store import StoredEnvelope, TransferStore

__all__ = ["error_code", "record_decision"]


def error_code(text: str, *, what: str = "--reject") -> int:
    """A TRISA error code from its name (``COMPLIANCE_CHECK_FAIL``) or number; raises
    :class:`ConfigurationError` naming ``what`` for anything else (and for UNHANDLED)."""
    codes = errors_pb2.Error.Code
    value = text.strip()
    if value.lstrip("-").isdigit():
        number = int(value)
        if number in codes.values() and number != 0:
            return number
    elif value.upper() in codes.keys() and value.upper() != "UNHANDLED":
        return int(codes.Value(value.upper()))
    raise ConfigurationError(f"{what}: {value[:40]!r} is not a TRISA error code name or number")


def record_decision(store: TransferStore, envelope_id: str, *, code: int = 0,
                    message: str = "") -> StoredEnvelope:
    """Record accept (``code`` 0) or reject ``code`` with ``message`` on the pending
    incoming transfer ``envelope_id``; returns its request row. Raises
    :class:`ConfigurationError` (one line) when it cannot be decided."""
    rows = [r for r in store.pending(direction="incoming") if r.envelope_id == envelope_id]
    if not rows:
        raise ConfigurationError(
            f"no pending incoming transfer {envelope_id[:64]!r} in {store.path}")
    row = rows[-1]
    if row.deadline and parse_timestamp(row.deadline) < utcnow():
        raise ConfigurationError(
            f"transfer {row.envelope_id}: the reply window closed at {row.deadline}")
    if row.resolution:
        raise ConfigurationError(
            f"transfer {row.envelope_id} is already decided "
            f"({shown_resolution(row.resolution).split(':')[0]})")
    decision = "accept" if code == 0 else f"reject:{code}:0:{message}"
    if not store.set_resolution(row.seq, decision):
        raise ConfigurationError(f"transfer {row.envelope_id} is no longer pending")
    return row
