"""Workers sharing one transfer store: wait for a claim another process is working on.

The store's claim (``TransferStore.claim``) takes an unfinished claim over at once
(``attempt`` + 1): right after a crash, that is what makes the handler run again. With
several processes on one store (``serve --workers N``) an unfinished claim may instead
be *in progress* in another worker, when copies of one envelope reach two workers at
the same moment; taking it over would run the handler twice and store two replies
(measured before this module: 8 rounds in 30 of 6 simultaneous copies).

:class:`ClaimWait` wraps the store for the node's :class:`~.service.Exchange`: a claim
that comes back taken over (``attempt`` > 1, no reply) while the claim before it is
younger than ``wait`` seconds is treated as in progress elsewhere: the reply stored by
that process is polled for, and answered, until the earlier claim is ``wait`` seconds
old; then this process runs the handler (the earlier one died, or is slow: the
handler's idempotency key covers that case, as after any crash). What is checked:
the claim's age from the store (wall clock, one host). Not checked: whether the other
process is alive (a lease held in the database, for replicas on several hosts, is the
store's job: issue 13 section 2). Every other store method passes through unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..logtext import peer_text
from .store import Claim, StoredEnvelope, TransferStore

__all__ = ["WORKER_CLAIM_WAIT", "ClaimWait"]

log = logging.getLogger("trisa_peer.network")

#: How long a worker waits for another worker's claim: a sender's default timeout.
WORKER_CLAIM_WAIT = 10.0


def _stored_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


class ClaimWait:
    """``TransferStore`` with :meth:`claim` waiting for claims in progress elsewhere."""

    def __init__(self, store: TransferStore, *, wait: float = WORKER_CLAIM_WAIT,
                 poll: float = 0.02, now: Callable[[], datetime] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._store = store
        self.wait = wait
        self.poll = poll
        self._now = now or (lambda: datetime.now(UTC))
        self._sleep = sleep

    def __getattr__(self, name: str) -> Any:  # every other method: the store's own
        return getattr(self._store, name)

    def claim(self, *, envelope_id: str, peer: str, request: bytes, request_digest: str,
              payload_digest: str) -> Claim:
        before = self._store.find_message(peer, envelope_id, payload_digest)
        claim = self._store.claim(envelope_id=envelope_id, peer=peer, request=request,
                                  request_digest=request_digest,
                                  payload_digest=payload_digest)
        if claim.reply is not None or claim.attempt == 1:
            return claim
        deadline = self._deadline(before)
        if self._now() < deadline:
            log.info("peer=%s envelope=%s claimed elsewhere moments ago: waiting for "
                     "that reply", peer_text(peer), peer_text(envelope_id))
        while self._now() < deadline:
            reply = self._store.reply_to(claim.seq)
            if reply is not None:  # the other process answered: the same reply
                log.info("peer=%s envelope=%s answered with the reply stored elsewhere",
                         peer_text(peer), peer_text(envelope_id))
                return Claim(claim.seq, claim.attempt, reply)
            self._sleep(self.poll)
        reply = self._store.reply_to(claim.seq)
        return Claim(claim.seq, claim.attempt, reply) if reply is not None else claim

    def _deadline(self, before: StoredEnvelope | None) -> datetime:
        """When the claim before ours is ``wait`` seconds old (it appeared between our
        read and our claim when ``before`` is None: it is new)."""
        started = _stored_time(before.updated_at) if before is not None else None
        return (started or self._now()) + timedelta(seconds=self.wait)
