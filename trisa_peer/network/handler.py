"""The handler API: what a VASP's own code sees of an incoming transfer, and answers.

A handler is ``Callable[[Incoming], Outcome]``. It receives the *verified* counterparty
(steps 2-4 already passed) and the *opened* payload, and returns one of:

* :class:`Accept` -- the transfer is accepted; the reply carries ``payload`` (by
  default the incoming payload, possibly with a repaired beneficiary) with
  ``received_at`` set;
* :class:`Pending` -- the decision comes later; the reply carries a
  ``trisa.data.generic.v1beta1.Pending`` with the reply window, and the node later
  sends a callback (:class:`Accept` or :class:`Reject`) with the same envelope id.
  The pending transfer and its deadline are a row in the store; the decision comes
  from a *resolver* registered on the node by name (``Pending(resolver="name")``,
  asked again after a restart), from ``trisa-peer transfers resolve``, or from an
  in-process ``callback`` (not persisted: lost with the process). The node delivers it
  with retries until the deadline; then both sides mark the transfer ``expired``;
* :class:`Repair` -- the payload needs fixing (e.g. an incomplete identity): a rejection
  with ``retry=True`` and transfer state REPAIR, asking the originator to send again;
* :class:`Reject` -- a TRISA rejection (``code`` from ``Error.Code``).

Handlers never see ciphertext or keys, and must not log the payload (it holds
customers' personal data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .._pb.trisa.api.v1beta1 import api_pb2
from ..handshake import VerifiedPeer

__all__ = [
    "Accept", "Handler", "Incoming", "Outcome", "Pending", "PendingTransfer", "Reject",
    "Repair", "Resolver",
]


@dataclass(frozen=True)
class Incoming:
    """An opened incoming envelope from a verified peer.

    ``payload`` is a ``trisa.api.v1beta1.Payload`` message (treat it as read-only);
    ``transfer_state`` is the envelope's ``TransferState`` number.

    The handler runs *at least once* per message: ``idempotency_key`` names the message
    (SHA-256 over the peer's directory id, the envelope id and the digest of the opened
    payload; the same for every retry, re-seal or re-encoding of it) and ``attempt`` is
    1, or more when the node died after a run began and before its reply was committed.
    Make side effects exactly-once by recording them under the key in the same
    transaction as the effect (and skipping a key already recorded).
    """

    peer: VerifiedPeer
    envelope_id: str
    payload: api_pb2.Payload
    transfer_state: int
    received_at: datetime
    idempotency_key: str = ""
    attempt: int = 1


@dataclass(frozen=True)
class Accept:
    """Accept; ``payload`` replaces the echoed payload (e.g. a repaired beneficiary)."""

    payload: api_pb2.Payload | None = None


@dataclass(frozen=True)
class Pending:
    """Answer later, within ``window`` after ``delay`` (``reply_not_after``).

    ``resolver`` names a :data:`Resolver` registered in ``TrisaNode.resolvers``: the
    node asks it (again after a restart) until it decides. ``callback(incoming) ->
    Accept | Reject`` is the in-process alternative, run once after ``delay`` and lost
    if the process ends first. Either result is sent to the originator as a new
    Transfer with the same envelope id.
    """

    message: str = "transfer is pending review"
    delay: timedelta = timedelta(seconds=0)
    window: timedelta = timedelta(minutes=60)
    callback: Callable[[Incoming], Accept | Reject] | None = None
    resolver: str = ""


@dataclass(frozen=True)
class PendingTransfer:
    """What a resolver is given: a stored pending transfer (the peer is not re-verified
    here; the decision is delivered over a verified channel)."""

    envelope_id: str
    peer: str
    payload: api_pb2.Payload
    received_at: datetime
    deadline: datetime | None


@dataclass(frozen=True)
class Reject:
    """A TRISA rejection: ``code`` is an ``Error.Code`` number; ``retry`` means repair."""

    code: int
    message: str
    retry: bool = False


@dataclass(frozen=True)
class Repair:
    """Ask the originator to fix the payload and send again (a retryable rejection).

    ``code`` defaults to INCOMPLETE_IDENTITY (154); codes 150-199 are the repair range.
    """

    message: str
    code: int = 154

    def as_reject(self) -> Reject:
        return Reject(self.code, self.message, retry=True)


Outcome = Accept | Pending | Repair | Reject
Handler = Callable[[Incoming], Outcome]
#: A resolve hook: the decision, or None while it is not taken yet.
Resolver = Callable[[PendingTransfer], Accept | Reject | None]
