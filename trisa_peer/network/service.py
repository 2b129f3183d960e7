"""TRISANetwork, the incoming side of step 8.

:class:`Exchange` turns one incoming ``SecureEnvelope`` from a verified peer into the
reply envelope, and :class:`NetworkServicer` exposes it as gRPC (Transfer,
TransferStream, KeyExchange; ConfirmAddress answers UNIMPLEMENTED).

For every incoming envelope, in order:

1. a retry of an envelope already answered (same peer, id and bytes) gets the stored
   reply and is not processed again (the fast path: no decryption);
2. an error envelope is the peer's rejection of a transfer: recorded, acknowledged
   with the same error;
3. the envelope is opened with the key its ``public_key_signature`` names (a key we do
   not hold -> NO_SIGNING_KEY, retry: run KeyExchange and send again); any failure of
   the open path becomes a TRISA rejection envelope (the request's bytes are not kept);
4. *the same message* (same verified peer, same id, same opened payload: digest of
   its deterministic serialisation without unknown fields) is answered from the store,
   whatever its wire bytes (a re-seal, a re-encoding, appended unknown fields);
5. an envelope continuing a transfer *we* originated is a callback: only the
   counterparty of that transfer may send it, only inside the reply window it gave;
6. a *different* payload under an id this peer already used is accepted only as a
   continuation of that transfer (after a repair request, or a follow-up of a pending
   or accepted transfer, TRISA v1.1 state rules); otherwise BAD_REQUEST, id reused;
7. otherwise the message is *claimed* (committed), then the user's
   :data:`~trisa_peer.network.handler.Handler` decides, given an idempotency key and
   the attempt number; the reply is committed after it returns. A crash in between
   runs the handler again on the retry with attempt + 1 (at least once, with a key).
   A handler answering ``Reject(UNAVAILABLE, retry=True)`` (it cannot decide now) gets
   that rejection sent but not stored: the claim stays unfinished, so the retry runs the
   handler again with attempt + 1, like after a crash.

The reply is sealed with the peer's key and stored (committed) before it is returned.
TRISA rejections travel inside envelopes with gRPC status OK; only a store failure makes
the call fail (so nothing unrecorded is ever acknowledged).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from google.protobuf import any_pb2

from .. import events
from .._pb.trisa.api.v1beta1 import api_pb2, api_pb2_grpc, errors_pb2
from .._pb.trisa.data.generic.v1beta1 import transaction_pb2
from ..clock import Clock, utcnow
from ..envelope import (
    envelope_error,
    format_timestamp,
    open_envelope,
    parse_timestamp,
    public_key_from_signing_key,
    reject,
    rejection_envelope,
    seal,
    signing_key_from_certificate,
)
from ..envelope.validate import (
    DEFAULT_TIMESTAMP_WINDOW,
    NEW_TRANSFER_STATES,
    is_uuid,
    metadata_problem,
    recorded_id,
)
from ..errors import EnvelopeError, EnvelopeRejection, StoreError, TrisaPeerError
from ..handshake import VerifiedPeer
from ..logtext import RefusalLimiter, peer_text
from ..transport.interceptor import peer_from_context
from .handler import Accept, Handler, Incoming, Pending, Reject, Repair
from .keys import KeyRing, PeerKeys, record_key
from .store import Claim, ExchangeView, StoredEnvelope, TransferStore, digest

__all__ = [
    "PENDING_TYPE", "Exchange", "NetworkServicer", "idempotency_key", "payload_digest",
    "pending_of",
]

log = logging.getLogger("trisa_peer.network")
# A store that cannot record refuses every call: one line per cause per 10 s, with a count.
_store_failures = RefusalLimiter(interval=10.0, max_keys=16)

TS = api_pb2.TransferState
Code = errors_pb2.Error
PENDING_TYPE = "type.googleapis.com/trisa.data.generic.v1beta1.Pending"
_KNOWN_CODES = frozenset(errors_pb2.Error.Code.values())

#: Largest encrypted payload a node opens (1 MiB; Travel Rule payloads are a few KiB).
#: The node's gRPC receive limit is this plus 64 KiB for the rest of the envelope
#: (``trisa_peer.transport.server.MAX_REQUEST_BYTES``), so an oversized envelope that gRPC
#: still delivers is answered with a TRISA BAD_REQUEST envelope; larger messages are
#: refused by gRPC itself (RESOURCE_EXHAUSTED) and the server keeps serving.
MAX_ENVELOPE_PAYLOAD = 1024 * 1024

#: Seconds a duplicate waits for another replica's run of the same message (its handler)
#: before it is answered UNAVAILABLE (retry); within this process the stripe lock queues
#: duplicates before they reach the store.
CLAIM_WAIT = 10.0


def _stored_reply(stored: StoredEnvelope) -> api_pb2.SecureEnvelope:
    """The stored answer to a retry; once the retention purge emptied it (``transfers
    purge``, ``serve --retention-days``), a non-retryable COMPLIANCE_PERIOD_EXCEEDED
    instead of an empty envelope."""
    if stored.envelope:
        return api_pb2.SecureEnvelope.FromString(stored.envelope)
    return reject(stored.envelope_id, Code.COMPLIANCE_PERIOD_EXCEEDED,
                  "this transfer is past the node's retention period: its envelopes "
                  "were purged", retry=False)


def _continues(earlier_state: str, transfer_state: int) -> bool:
    """May the same peer send a different payload under an id it used before?

    After a repair request (we asked for a corrected payload), yes; after a pending or
    accepted transfer, only as a TRISA v1.1 follow-up (ACCEPTED <-> ACCEPTED,
    COMPLETED <-> COMPLETED); never after a rejection, an expiry or a completion.
    """
    if earlier_state == "repair":
        return True
    return earlier_state in ("pending", "accepted") and transfer_state in (
        TS.ACCEPTED, TS.COMPLETED)


def _transient(outcome: object) -> bool:
    """A handler's UNAVAILABLE with ``retry`` (e.g. the webhook's back office is down) is
    "ask me again", not a decision: it is answered but never stored as the final reply."""
    return isinstance(outcome, Reject) and outcome.retry and outcome.code == Code.UNAVAILABLE


def payload_digest(payload: api_pb2.Payload) -> str:
    """SHA-256 of the opened payload: deterministic serialisation, unknown fields dropped.

    Two envelopes carrying this same payload are the same message whatever their wire
    bytes (a re-seal re-encrypts with fresh keys; a re-encoding may reorder fields).
    """
    clean = api_pb2.Payload()
    clean.CopyFrom(payload)
    clean.DiscardUnknownFields()
    return digest(clean.SerializeToString(deterministic=True))


def idempotency_key(directory_id: str, envelope_id: str, payload_dig: str) -> str:
    """The handler's key for one message: the peer's directory id, the id, the digest."""
    text = f"trisa-idempotency-v1\0{directory_id}\0{envelope_id}\0{payload_dig}"
    return digest(text.encode("utf-8"))


def pending_of(payload: api_pb2.Payload) -> transaction_pb2.Pending | None:
    """The ``Pending`` message of a payload whose transaction is one, else None."""
    if payload.transaction.type_url != PENDING_TYPE:
        return None
    pending = transaction_pb2.Pending()
    payload.transaction.Unpack(pending)
    return pending


@dataclass
class _Request:
    """An incoming request not yet answered: stored with its reply in one transaction,
    or already stored (``seq``) by an earlier attempt that crashed before answering."""

    envelope_id: str
    peer: str
    raw: bytes
    digest: str
    seq: int | None = None
    payload_digest: str = ""


class Exchange:
    """Incoming envelope -> stored, answered reply envelope."""

    def __init__(
        self,
        *,
        common_name: str,
        handler: Handler,
        store: TransferStore,
        keyring: KeyRing,
        peer_keys: PeerKeys,
        schedule: Callable[[float, Callable[[], None]], None],
        send_callback: Callable[[str, str, Accept | Reject, api_pb2.Payload], None],
        clock: Clock = utcnow,
        max_payload_size: int = MAX_ENVELOPE_PAYLOAD,
        timestamp_window: timedelta = DEFAULT_TIMESTAMP_WINDOW,
    ) -> None:
        self.max_payload_size = max_payload_size
        self.timestamp_window = timestamp_window
        self._stripes = [threading.Lock() for _ in range(64)]
        self.common_name = common_name
        self.handler = handler
        self.store = store
        self.keyring = keyring
        self.peer_keys = peer_keys
        self.schedule = schedule
        self.send_callback = send_callback
        self.clock = clock

    # ----------------------------------------------------------------- helpers

    def peer_key(self, peer: VerifiedPeer) -> PublicKeyTypes | None:
        return self.peer_keys.get(peer.common_name) or record_key(peer.record)

    def _answer(
        self,
        req: _Request,
        reply: api_pb2.SecureEnvelope,
        state: str,
        *,
        code: int = 0,
        discard: bool = False,
        origin: tuple[int, str, int] | None = None,
        pending: tuple[str, str] | None = None,
    ) -> api_pb2.SecureEnvelope:
        """Record the request (if new), the reply and any state change of the transfer it
        answers, in one transaction, committed; then return the reply."""
        data = reply.SerializeToString()
        if req.seq is not None:
            self.store.add_reply(req.seq, state=state, envelope=data, direction="outgoing",
                                 error_code=code, discard_request=discard, origin=origin,
                                 pending=pending, envelope_id=req.envelope_id)
            events.transfer("incoming", state, code, peer=req.peer, envelope_id=req.envelope_id)
            return reply
        seq = self.store.add_exchange(
            envelope_id=req.envelope_id, peer=req.peer, request=b"" if discard else req.raw,
            request_digest=req.digest, reply=data, state=state, error_code=code, origin=origin,
            payload_digest=req.payload_digest,
        )
        if seq is None:  # the same envelope was answered concurrently: send that answer
            seen = self.store.find_request(req.peer, req.envelope_id, req.digest)
            stored = self.store.reply_to(seen.seq) if seen is not None else None
            if stored is not None:
                return _stored_reply(stored)
            return reject(req.envelope_id, Code.UNAVAILABLE,
                          "this envelope is being processed; retry", retry=True)
        req.seq = seq
        events.transfer("incoming", state, code, peer=req.peer, envelope_id=req.envelope_id)
        return reply

    def _reject(
        self, req: _Request, rejection: Reject, *, origin: tuple[int, str, int] | None = None
    ) -> api_pb2.SecureEnvelope:
        reply = reject(req.envelope_id, rejection.code, rejection.message, retry=rejection.retry)
        state = "repair" if reply.error.retry else "rejected"
        return self._answer(req, reply, state, code=rejection.code, origin=origin)

    # ------------------------------------------------------------ metadata check

    def _refuse_metadata(
        self, envelope: api_pb2.SecureEnvelope, peer: VerifiedPeer, view: ExchangeView
    ) -> api_pb2.SecureEnvelope | None:
        """BAD_REQUEST (recorded, bounded) for an envelope whose id, timestamp or
        transfer_state a node must not take in; None when they are fine. ``view``: the
        stored envelopes of its id (empty for an id that is not a UUID)."""
        new = None
        state = int(envelope.transfer_state)
        rejection_only = envelope_error(envelope) is not None and not envelope.payload
        if state not in NEW_TRANSFER_STATES and not rejection_only and is_uuid(envelope.id):
            new = view.new_transfer(peer.common_name)
        problem = metadata_problem(envelope, now=self.clock(), window=self.timestamp_window,
                                   new_transfer=new)
        if problem is None:
            return None
        eid = recorded_id(envelope.id)
        log.info("peer=%s envelope=%s refused code=%d: %s", peer_text(peer.common_name),
                 peer_text(eid), Code.BAD_REQUEST, problem)
        req = _Request(eid, peer.common_name, b"", digest(envelope.SerializeToString()))
        return self._reject(req, Reject(Code.BAD_REQUEST, f"invalid secure envelope: {problem}",
                                        retry=True))

    # ----------------------------------------------------------------- process

    def process(
        self, envelope: api_pb2.SecureEnvelope, peer: VerifiedPeer
    ) -> api_pb2.SecureEnvelope:
        """Answer one envelope; raises only :class:`StoreError` (nothing unrecorded).

        A retry of exactly the bytes already answered is answered from the store before
        the metadata checks, so a resend of stored bytes older than the timestamp window
        gets the reply it got the first time instead of a refusal.
        """
        raw = envelope.SerializeToString()
        dig = digest(raw)
        # Envelopes of one peer and id arriving at the same time are processed one after
        # the other (whatever their bytes), so a concurrent duplicate waits for the first
        # and is answered from the store; the handler never runs twice concurrently. The
        # stripe lock queues this process's threads; the store's hold on (peer, id)
        # queues other processes and replicas on the same database.
        stripe = self._stripes[hash((peer.common_name, envelope.id)) % len(self._stripes)]
        with stripe, self.store.exclusive(peer.common_name, envelope.id, CLAIM_WAIT) as mine:
            if not mine:
                log.info("peer=%s envelope=%s still processed by another replica",
                         peer_text(peer.common_name), peer_text(envelope.id))
                return reject(recorded_id(envelope.id), Code.UNAVAILABLE,
                              "this envelope is being processed; retry", retry=True)
            return self._process(envelope, peer, raw, dig)

    def _process(
        self, envelope: api_pb2.SecureEnvelope, peer: VerifiedPeer, raw: bytes, dig: str
    ) -> api_pb2.SecureEnvelope:
        eid = envelope.id
        cn = peer.common_name
        # One read of the id's stored envelopes (no bytes) answers every question below
        # (a retry's stored reply, a new transfer, the same message, a callback, id
        # reuse). No other writer changes this peer's rows of this id meanwhile (the
        # stripe lock and the store's hold on (peer, id) are held), and the claim
        # checks again inside its transaction. No stored request has an id other than
        # a UUID: a hostile one costs no lookup.
        view = self.store.view(eid) if is_uuid(eid) else ExchangeView(self.store, eid, [])
        seen = view.request(cn, dig)
        if seen is not None:
            stored = view.reply_to(seen.seq)
            if stored is not None:
                log.info("peer=%s envelope=%s retry answered from the store",
                         peer_text(cn), peer_text(eid))
                return _stored_reply(stored)
        refused = self._refuse_metadata(envelope, peer, view)
        if refused is not None:
            return refused
        # seen here: stored but never answered (a crash between the two)
        req = _Request(eid, cn, raw, dig, seen.seq if seen is not None else None)
        error = envelope_error(envelope)
        if error is not None and not envelope.payload:
            return self._peer_rejection(envelope, error, peer, req, view)

        try:
            key = self.keyring.select(envelope.public_key_signature)
            if key is None:
                raise EnvelopeRejection(
                    Code.NO_SIGNING_KEY,
                    "envelope is sealed to a key this node does not hold; "
                    "run KeyExchange and send again",
                    retry=True,
                )
            payload = open_envelope(envelope, key, max_payload_size=self.max_payload_size)
        except EnvelopeRejection as rejection:
            log.info("peer=%s envelope=%s rejected code=%d", peer_text(cn), peer_text(eid),
                     rejection.code)
            reply = rejection_envelope(eid, rejection)
            state = "repair" if rejection.retry else "rejected"
            return self._answer(req, reply, state, code=rejection.code, discard=True)

        req.payload_digest = pdig = payload_digest(payload)
        same = view.message(cn, pdig)
        if same is not None:
            stored = view.reply_to(same.seq)
            if stored is not None:
                log.info("peer=%s envelope=%s same message answered from the store",
                         peer_text(cn), peer_text(eid))
                return _stored_reply(stored)
        now = self.clock()
        origin = view.initiated()
        if origin is not None:
            incoming = Incoming(peer, eid, payload, envelope.transfer_state, now)
            return self._callback(req, origin, incoming)
        if same is None:
            earlier = view.latest_request(cn)
            if earlier is not None and not _continues(earlier.state, envelope.transfer_state):
                log.info("peer=%s envelope=%s id reused (transfer %s)", cn, eid, earlier.state)
                req.seq = None
                return self._reject(req, Reject(
                    Code.BAD_REQUEST,
                    f"envelope id reused: transfer {eid} is {earlier.state}; "
                    "a new transfer needs a new id"))
        claim = self._claim(eid, cn, raw, dig, pdig)
        if claim.reply is not None:
            return _stored_reply(claim.reply)
        if claim.busy:  # another replica still runs it: the peer retries
            log.info("peer=%s envelope=%s still processed by another replica",
                     peer_text(cn), peer_text(eid))
            return reject(eid, Code.UNAVAILABLE, "this envelope is being processed; retry",
                          retry=True)
        try:
            req.seq = claim.seq
            if claim.attempt > 1:
                log.info("peer=%s envelope=%s unfinished claim runs again attempt=%d",
                         cn, eid, claim.attempt)
            incoming = Incoming(peer, eid, payload, envelope.transfer_state, now,
                                idempotency_key=idempotency_key(peer.record.id or cn, eid, pdig),
                                attempt=claim.attempt)
            try:
                outcome = self.handler(incoming)
            except Exception:  # the user's handler failed: never leak its exception
                log.exception("peer=%s envelope=%s handler failed", peer_text(cn),
                              peer_text(eid))
                outcome = Reject(Code.INTERNAL_ERROR,
                                 "the beneficiary could not process the transfer")
            if _transient(outcome):
                # Not a decision: nothing is stored as the reply, the claim stays
                # unfinished, and the originator's retry runs the handler again with
                # attempt + 1 and the same idempotency key.
                log.info("peer=%s envelope=%s handler could not decide now; not stored",
                         peer_text(cn), peer_text(eid))
                assert isinstance(outcome, Reject)
                events.transfer("incoming", "claimed", outcome.code, peer=cn, envelope_id=eid)
                return reject(eid, outcome.code, outcome.message, retry=True)
            return self._outcome(req, incoming, outcome)
        finally:
            self.store.release(claim)

    def _claim(self, eid: str, cn: str, raw: bytes, dig: str, pdig: str) -> Claim:
        """Claim the message; when another replica holds it, wait (up to
        :data:`CLAIM_WAIT` seconds) for it to finish or die and claim again: its stored
        reply is then answered, or its unfinished claim taken over."""
        claim = self.store.claim(envelope_id=eid, peer=cn, request=raw, request_digest=dig,
                                 payload_digest=pdig)
        if claim.busy and self.store.wait(claim, CLAIM_WAIT):
            claim = self.store.claim(envelope_id=eid, peer=cn, request=raw,
                                     request_digest=dig, payload_digest=pdig)
        return claim

    def _peer_rejection(
        self,
        envelope: api_pb2.SecureEnvelope,
        error: errors_pb2.Error,
        peer: VerifiedPeer,
        req: _Request,
        view: ExchangeView,
    ) -> api_pb2.SecureEnvelope:
        cn = peer.common_name
        if error.code not in _KNOWN_CODES or error.code == 0 or not error.message.strip():
            return self._reject(req, Reject(
                Code.BAD_REQUEST, "error envelope needs a known, non-zero code and a message",
                retry=True))
        origin = view.initiated()
        if origin is not None and origin.peer.lower() != cn.lower():
            return self._reject(req, Reject(
                Code.FORBIDDEN, "this transfer was not exchanged with your VASP"))
        # The beneficiary's asynchronous rejection ends a pending transfer; a rejection
        # of a transfer already decided is recorded and acknowledged but changes nothing.
        final = "expired" if error.code == Code.COMPLIANCE_PERIOD_EXCEEDED else "rejected"
        change = (origin.seq, final, error.code) if (
            origin is not None and origin.state == "pending") else None
        log.info("peer=%s envelope=%s peer rejection code=%d", peer_text(cn),
                 peer_text(envelope.id), error.code)
        # Acknowledge with the same error: the originator of an error expects one back.
        reply = reject(envelope.id, error.code, error.message[:1024], retry=error.retry)
        return self._answer(req, reply, "rejected", code=error.code, origin=change)

    def _sealed_reply(
        self, incoming: Incoming, payload: api_pb2.Payload, state: int
    ) -> api_pb2.SecureEnvelope:
        key = self.peer_key(incoming.peer)
        if key is None:
            raise EnvelopeRejection(Code.NO_SIGNING_KEY, "no sealing key known for the peer")
        return seal(payload, key, envelope_id=incoming.envelope_id, transfer_state=state,
                    clock=self.clock)

    def _outcome(
        self, req: _Request, incoming: Incoming, outcome: object
    ) -> api_pb2.SecureEnvelope:
        # object: whatever the user's handler returned, checked below
        if isinstance(outcome, Repair):
            outcome = outcome.as_reject()
        try:
            if isinstance(outcome, Reject):
                return self._reject(req, outcome)
            if isinstance(outcome, Accept):
                payload = api_pb2.Payload()
                payload.CopyFrom(outcome.payload or incoming.payload)
                payload.received_at = format_timestamp(incoming.received_at)
                reply = self._sealed_reply(incoming, payload, TS.ACCEPTED)
                return self._answer(req, reply, "accepted")
            if isinstance(outcome, Pending):
                body = self._pending_payload(incoming, outcome)
                reply = self._sealed_reply(incoming, body, TS.PENDING)
                deadline = pending_of(body).reply_not_after  # type: ignore[union-attr]
                answered = self._answer(req, reply, "pending",
                                        pending=(deadline, outcome.resolver))
                if outcome.callback is not None:
                    self._schedule_callback(incoming, outcome)
                return answered
        except EnvelopeError as exc:
            code = exc.code if isinstance(exc, EnvelopeRejection) else Code.INTERNAL_ERROR
            return self._reject(req, Reject(code, exc.message, retry=False))
        return self._reject(req, Reject(Code.INTERNAL_ERROR, "handler returned no outcome"))

    def _pending_payload(self, incoming: Incoming, outcome: Pending) -> api_pb2.Payload:
        now = incoming.received_at
        pending = transaction_pb2.Pending(
            envelope_id=incoming.envelope_id,
            received_by=self.common_name,
            received_at=format_timestamp(now),
            message=outcome.message,
            reply_not_before=format_timestamp(now + outcome.delay),
            reply_not_after=format_timestamp(now + outcome.delay + outcome.window),
        )
        original = incoming.payload.transaction
        tx = transaction_pb2.Transaction()
        if original.Unpack(tx):
            pending.transaction.CopyFrom(tx)
        payload = api_pb2.Payload()
        payload.identity.CopyFrom(incoming.payload.identity)
        packed = any_pb2.Any()
        packed.Pack(pending)
        payload.transaction.CopyFrom(packed)
        payload.sent_at = format_timestamp(now)
        payload.received_at = format_timestamp(now)
        return payload

    def _schedule_callback(self, incoming: Incoming, outcome: Pending) -> None:
        callback = outcome.callback
        assert callback is not None

        def run() -> None:
            try:
                decision = callback(incoming)
            except Exception:
                log.exception("envelope=%s pending callback failed",
                              peer_text(incoming.envelope_id))
                decision = Reject(Code.INTERNAL_ERROR, "the beneficiary could not decide")
            self.send_callback(incoming.peer.common_name, incoming.envelope_id, decision,
                               incoming.payload)

        self.schedule(outcome.delay.total_seconds(), run)

    def _callback(
        self, req: _Request, origin: StoredEnvelope, incoming: Incoming
    ) -> api_pb2.SecureEnvelope:
        """A peer's asynchronous answer to a transfer we sent (same envelope id).

        Accepted only from the counterparty of that transfer, only while it is
        ``pending`` (so at most once), and only inside the reply window it gave.
        """
        cn = incoming.peer.common_name
        if origin.peer.lower() != cn.lower():
            return self._reject(req, Reject(
                Code.FORBIDDEN, "this transfer was not exchanged with your VASP"))
        if origin.state != "pending":
            return self._reject(req, Reject(
                Code.FORBIDDEN,
                f"transfer {incoming.envelope_id} is not awaiting an answer ({origin.state})"))
        deadline = self._reply_deadline(origin)
        if deadline is not None and incoming.received_at > deadline:
            return self._reject(req, Reject(
                Code.COMPLIANCE_PERIOD_EXCEEDED,
                f"the reply window closed at {format_timestamp(deadline)}"),
                origin=(origin.seq, "expired", Code.COMPLIANCE_PERIOD_EXCEEDED))
        # Echo the payload back as the acknowledgement (the second round of the exchange).
        payload = api_pb2.Payload()
        payload.CopyFrom(incoming.payload)
        payload.received_at = format_timestamp(incoming.received_at)
        try:
            reply = self._sealed_reply(incoming, payload, TS.COMPLETED)
        except EnvelopeError as exc:
            return self._reject(req, Reject(Code.NO_SIGNING_KEY, exc.message, retry=True))
        return self._answer(req, reply, "completed", origin=(origin.seq, "accepted", 0))

    def _reply_deadline(self, origin: StoredEnvelope) -> datetime | None:
        reply = self.store.reply_to(origin.seq)
        if reply is None or not reply.envelope:
            return None
        env = api_pb2.SecureEnvelope.FromString(reply.envelope)
        if not env.payload:
            return None
        try:
            payload = open_envelope(env, self.keyring.select(env.public_key_signature))
        except EnvelopeRejection:
            return None
        pending = pending_of(payload)
        if pending is None or not pending.reply_not_after:
            return None
        try:
            return parse_timestamp(pending.reply_not_after) + timedelta(seconds=1)
        except (ValueError, EnvelopeError):
            return None


class NetworkServicer(api_pb2_grpc.TRISANetworkServicer):
    """gRPC face of :class:`Exchange`; the interceptor has verified the peer already."""

    def __init__(
        self,
        exchange: Exchange,
        *,
        identity_leaf: Callable[[], x509.Certificate],
        identify: Callable[[bytes | None], VerifiedPeer] | None = None,
    ) -> None:
        self.exchange = exchange
        self.identity_leaf = identity_leaf
        self.identify = identify  # reference mode only (no verifying interceptor)

    def _peer(self, context: grpc.ServicerContext) -> VerifiedPeer:
        return peer_from_context(context, self.identify)

    def undecodable_reply(self, method: str) -> api_pb2.SecureEnvelope | None:
        """What a verified peer gets for a request body that is not the method's message
        (registered with raw-bytes handlers, :mod:`trisa_peer.transport.raw`): a TRISA
        BAD_REQUEST envelope (no id: none could be read) for Transfer and each message of
        TransferStream; None (INVALID_ARGUMENT) for the others. Nothing is stored."""
        if method not in ("Transfer", "TransferStream"):
            return None
        return reject("", Code.BAD_REQUEST, "the request is not a SecureEnvelope", retry=False)

    def _process(
        self, envelope: api_pb2.SecureEnvelope, context: grpc.ServicerContext
    ) -> api_pb2.SecureEnvelope:
        peer = self._peer(context)
        try:
            return self.exchange.process(envelope, peer)
        except StoreError as exc:
            seen = _store_failures.refuse(str(exc))
            if seen.log:
                log.error("transfer store failed: %s (count=%d in %.0fs)", exc, seen.count,
                          seen.seconds)
            context.abort(grpc.StatusCode.UNAVAILABLE, "transfer could not be recorded; retry")
            raise

    def Transfer(
        self, request: api_pb2.SecureEnvelope, context: grpc.ServicerContext
    ) -> api_pb2.SecureEnvelope:
        return self._process(request, context)

    def TransferStream(
        self, request_iterator: Iterator[api_pb2.SecureEnvelope], context: grpc.ServicerContext
    ) -> Iterator[api_pb2.SecureEnvelope]:
        for envelope in request_iterator:
            yield self._process(envelope, context)

    def KeyExchange(
        self, request: api_pb2.SigningKey, context: grpc.ServicerContext
    ) -> api_pb2.SigningKey:
        peer = self._peer(context)
        try:
            key = public_key_from_signing_key(request)
        except TrisaPeerError as exc:  # CertificateError or EnvelopeError from parsing
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unusable signing key: {exc}")
            raise
        self.exchange.peer_keys.put(peer.common_name, key)
        return signing_key_from_certificate(self.identity_leaf())

    def ConfirmAddress(self, request: api_pb2.Address, context: grpc.ServicerContext) -> NoReturn:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "this node does not confirm addresses")
        raise AssertionError("unreachable: context.abort raises")
