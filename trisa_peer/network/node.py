"""A TRISA node: a verified server and client sharing one identity, store and key ring.

``TrisaNode.send`` is the originator's side of step 8: it dials the beneficiary
through :class:`~trisa_peer.transport.client.PeerConnector` (steps 1-7), makes sure it
has the peer's sealing key (KeyExchange, cached), seals, records the outgoing envelope
(committed before it is sent), transfers, and records and opens the reply.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from .. import events
from .._pb.trisa.api.v1beta1 import api_pb2, api_pb2_grpc, errors_pb2
from .._pb.trisa.data.generic.v1beta1 import transaction_pb2
from ..authenticate import REFUSAL_LOG_INTERVAL
from ..certs import PeerPublicKey
from ..clock import Clock, utcnow
from ..controls import PeerControls
from ..envelope import (
    envelope_error,
    format_timestamp,
    open_envelope,
    parse_timestamp,
    public_key_from_signing_key,
    public_key_signature,
    reject,
    seal,
    signing_key_from_certificate,
)
from ..envelope.signature import parse_signature
from ..envelope.validate import DEFAULT_TIMESTAMP_WINDOW
from ..errors import (
    ChannelBrokenError,
    EnvelopeError,
    EnvelopeRejection,
    StoreError,
    TransferError,
    TrisaPeerError,
)
from ..logtext import peer_text
from ..records import DirectoryLookup
from ..reload import DEFAULT_RELOAD_INTERVAL
from ..resolve import PeerResolver
from ..trace import HandshakeTrace
from ..transport.client import PeerChannel, PeerConnector
from ..transport.material import MaterialSource
from ..transport.server import TrisaServer
from ..transport.status import closed_channel_error, rpc_status, transfer_error
from .handler import Accept, Handler, PendingTransfer, Reject, Resolver
from .keys import KeyRing, PeerKeys, record_key
from .service import Exchange, NetworkServicer, pending_of
from .store import StoredEnvelope, TransferStore

__all__ = ["TransferError", "TransferResult", "TrisaNode"]

log = logging.getLogger("trisa_peer.network")

#: ``decision_hold`` of the pending worker of ``serve --workers N`` (seconds): longer
#: than another worker's callback can take to deliver a decision it just recorded
#: (directory look-up, handshake and a transfer, each bounded by ``timeout``, 10 s).
WORKER_DECISION_HOLD = 30.0

TS = api_pb2.TransferState
Code = errors_pb2.Error


@dataclass(frozen=True)
class TransferResult:
    """The beneficiary's answer to one envelope.

    ``state`` is ``accepted``, ``pending``, ``completed``, ``repair`` or ``rejected``;
    ``payload`` is the opened reply payload (None for a rejection), ``error`` the
    ``trisa.api.v1beta1.Error`` of a rejection.
    """

    envelope_id: str
    peer: str
    state: str
    transfer_state: int
    payload: api_pb2.Payload | None = None
    error: errors_pb2.Error | None = None

    @property
    def pending(self) -> transaction_pb2.Pending | None:
        return pending_of(self.payload) if self.payload is not None else None

    def describe(self) -> str:
        if self.error is not None:
            name = errors_pb2.Error.Code.Name(self.error.code)
            return f"{self.state}: {name} ({self.error.code}) {self.error.message}"
        return self.state


class TrisaNode:
    """One VASP's TRISA endpoint and client. ``start()``, then ``send()``."""

    def __init__(
        self,
        material: MaterialSource,
        directory: DirectoryLookup,
        *,
        store: TransferStore,
        handler: Handler,
        listen: str = "127.0.0.1:0",
        resolve: dict[str, str] | None = None,
        clock: Clock = utcnow,
        timeout: float = 10.0,
        decision_ttl: float = 300.0,
        key_ttl: float = 3600.0,
        verify_peers: bool = True,
        max_workers: int = 16,
        handshake_timeout: float | None = None,
        idle_timeout: float | None = None,
        timestamp_window: timedelta = DEFAULT_TIMESTAMP_WINDOW,
        controls: PeerControls | None = None,
        refusal_log_interval: float = REFUSAL_LOG_INTERVAL,
        pending_interval: float = 1.0,
        reload_interval: float = DEFAULT_RELOAD_INTERVAL,
        pending_loop: bool = True,
        decision_hold: float = 0.0,
    ) -> None:
        self.material = material
        self.directory = directory
        self.store = store
        self.clock = clock
        self.timeout = timeout
        self.server = TrisaServer(
            material,
            directory,
            listen=listen,
            decision_ttl=decision_ttl,
            verify_peers=verify_peers,
            clock=clock,
            max_workers=max_workers,
            handshake_timeout=handshake_timeout,
            idle_timeout=idle_timeout,
            health=store.problem,
            controls=controls,
            refusal_log_interval=refusal_log_interval,
            reload_interval=reload_interval,
        )
        self.keyring = KeyRing()
        self.keyring.add(material.current().identity.key)
        material.subscribe(lambda m: self.keyring.add(m.identity.key))
        self.peer_keys = PeerKeys(ttl=key_ttl)
        self._timers: set[threading.Timer] = set()
        self._timers_lock = threading.Lock()
        self._closed = False
        #: Resolve hooks of pending transfers, by the name ``Pending(resolver=...)`` gives.
        self.resolvers: dict[str, Resolver] = {}
        self.pending_interval = pending_interval
        #: False: this process does not run the pending loop (another worker of the
        #: same store does; see :mod:`trisa_peer.supervisor`).
        self.pending_loop = pending_loop
        #: The loop leaves a decision that a callback recorded less than this many
        #: seconds ago to the process whose callback is delivering it (0: a single
        #: process, where the delivery lock already orders them). Decisions of the
        #: operator (``transfers resolve``) and of resolvers are not held.
        self.decision_hold = decision_hold
        self._pending_stop = threading.Event()
        self._pending_thread: threading.Thread | None = None
        self._deliver_lock = threading.RLock()
        self._unknown_resolvers: set[str] = set()
        self.exchange = Exchange(
            common_name=self.common_name,
            handler=handler,
            store=store,
            keyring=self.keyring,
            peer_keys=self.peer_keys,
            schedule=self._schedule,
            send_callback=self._send_callback,
            clock=clock,
            timestamp_window=timestamp_window,
        )
        self.server.add(
            api_pb2_grpc.add_TRISANetworkServicer_to_server,
            NetworkServicer(
                self.exchange,
                identity_leaf=lambda: material.current().identity.leaf,
                identify=None if verify_peers else self.server.authenticator.identify_pem,
            ),
        )
        self.resolver = PeerResolver(self.server.verifier, directory, resolve=resolve)
        self.connector = PeerConnector(
            material, self.resolver, timeout=timeout, decision_ttl=decision_ttl,
            controls=controls, deny=self.server.authenticator.deny)

    @property
    def common_name(self) -> str:
        return self.material.current().identity.common_name

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> int:
        port = self.server.start()
        self._pending_stop.clear()
        if not self.pending_loop:
            return port
        self._pending_thread = threading.Thread(
            target=self._pending_loop, name="trisa-pending", daemon=True)
        self._pending_thread.start()
        return port

    @property
    def port(self) -> int:
        return self.server.port

    def reload(self) -> None:
        """Look for new TLS material now (SIGHUP): server and client both use a new
        consistent set from their next new connection; a bad set is logged, not used."""
        self.server.reload()

    def stop(self, grace: float | None = 1.0) -> None:
        """Cancel pending callbacks, close outgoing channels, stop serving; idempotent."""
        with self._timers_lock:
            timers = list(self._timers)
            self._timers.clear()
        for timer in timers:
            timer.cancel()
        self._pending_stop.set()
        thread, self._pending_thread = self._pending_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        self.connector.close()
        self.server.stop(grace)

    def close(self) -> None:
        """Stop the node (as :meth:`stop`) and close its transfer store; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        self.store.close()

    def __enter__(self) -> TrisaNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _schedule(self, delay: float, fn: Callable[[], None]) -> None:
        def run() -> None:
            try:
                fn()
            except StoreError as exc:  # e.g. the store closed under a running timer
                log.warning("scheduled work not recorded: %s", exc)
            finally:  # a fired timer (and the payload its closure holds) is released
                with self._timers_lock:
                    self._timers.discard(timer)

        timer = threading.Timer(max(delay, 0.0), run)
        timer.daemon = True
        with self._timers_lock:
            self._timers.add(timer)
        timer.start()

    # ---------------------------------------------------------------- outgoing

    def connect(self, peer: str, *, trace: HandshakeTrace | None = None) -> PeerChannel:
        """A verified channel to ``peer`` (steps 1-7); raises :class:`HandshakeError`."""
        return self.connector.connect(peer, trace=trace)

    def exchange_keys(self, peer: str) -> PeerPublicKey:
        """KeyExchange with ``peer``: send our key, cache and return theirs."""
        channel = self.connect(peer)
        ours = signing_key_from_certificate(self.material.current().identity.leaf)
        try:
            reply = channel.network.KeyExchange(ours, timeout=self.timeout)
            key = public_key_from_signing_key(reply)
        except grpc.RpcError as exc:
            raise transfer_error(*rpc_status(exc), f"KeyExchange with {peer} failed") from None
        except TrisaPeerError as exc:  # CertificateError / EnvelopeError from parsing
            raise TransferError(f"KeyExchange with {peer}: unusable key: {exc}") from exc
        self.peer_keys.put(peer, key)
        return key

    def _peer_key(self, peer: str, channel: PeerChannel) -> PublicKeyTypes:
        key = self.peer_keys.get(peer)
        if key is not None:
            return key
        try:
            return self.exchange_keys(peer)
        except TransferError as exc:
            fallback = record_key(channel.plan.record)
            if fallback is None:
                raise
            log.info("peer=%s using the directory's key (%s)", peer_text(peer),
                     peer_text(str(exc), 300))
            return fallback

    def send(
        self,
        peer: str,
        payload: api_pb2.Payload,
        *,
        envelope_id: str | None = None,
        transfer_state: int = TS.STARTED,
        trace: HandshakeTrace | None = None,
    ) -> TransferResult:
        """Seal ``payload`` for ``peer``, transfer it, and return the opened answer."""
        channel = self.connect(peer, trace=trace)
        eid = envelope_id or str(uuid.uuid4())
        key_retried = channel_retried = False
        while True:
            key = self._peer_key(peer, channel)
            try:
                envelope = seal(payload, key, envelope_id=eid, transfer_state=transfer_state,
                                clock=self.clock)
            except EnvelopeError as exc:
                raise TransferError(f"cannot seal the payload for {peer}: {exc}") from exc
            try:
                result = self._transfer(peer, channel, envelope)
            except ChannelBrokenError as exc:
                if channel_retried or not exc.retry:
                    raise
                # The cached channel no longer handshakes (the peer rotated, or was
                # replaced): plan again from the directory and re-pin, once.
                channel_retried = True
                channel = self.connect(peer)
                continue
            if result.error is None or result.error.code != Code.NO_SIGNING_KEY or key_retried:
                return result
            key_retried = True
            self.peer_keys.drop(peer)
            self.exchange_keys(peer)

    def resend(self, envelope_id: str) -> TransferResult:
        """Send a stored outgoing envelope again: the very same bytes, to its peer only.

        Steps 1, 6 and 7 run again first, on a fresh directory answer (lookup, offline
        chain check, pin) and on a new channel. A sealed envelope is refused when the
        key it was sealed to is no longer the peer's registered key (a reissue or a
        compromise): customer data never goes to a key the directory no longer vouches
        for. The beneficiary answers a retry of the same message from its store.
        Raises :class:`TransferError` (with the reason) or :class:`HandshakeError`.
        """
        row = self.store.latest_outgoing(envelope_id)
        if row is None or not row.envelope:
            raise TransferError(f"no stored outgoing envelope {envelope_id!r}")
        envelope = api_pb2.SecureEnvelope.FromString(row.envelope)
        plan = self.resolver.plan(row.peer, fresh=True)  # steps 1, 6, 7 on a fresh answer
        if envelope.payload:
            registered = record_key(plan.record)
            if registered is None:
                raise TransferError(
                    f"refusing to resend {envelope_id} to {row.peer}: the directory holds "
                    "no key for it")
            try:
                alg = parse_signature(envelope.public_key_signature)[0]
                now_sig = public_key_signature(registered, alg)
            except EnvelopeError as exc:
                raise TransferError(f"refusing to resend {envelope_id}: {exc}") from exc
            if now_sig != envelope.public_key_signature:
                raise TransferError(
                    f"refusing to resend {envelope_id} to {row.peer}: the peer's registered "
                    "key changed since the envelope was sealed; send the transfer anew")
        self.connector.forget(row.peer)
        channel = self.connect(row.peer, trace=HandshakeTrace())
        if channel.common_name.lower() != row.peer.lower():
            raise TransferError(f"refusing to resend {envelope_id}: peer changed")
        return self._transfer(row.peer, channel, envelope, seq=row.seq)

    def send_error(
        self, peer: str, code: int, message: str, *, envelope_id: str | None = None
    ) -> TransferResult:
        """Send an error envelope (e.g. COMPLIANCE_CHECK_FAIL); the peer answers an error."""
        channel = self.connect(peer)
        envelope = reject(envelope_id or str(uuid.uuid4()), code, message, retry=False)
        return self._transfer(peer, channel, envelope)

    def _transfer(
        self, peer: str, channel: PeerChannel, envelope: api_pb2.SecureEnvelope,
        *, seq: int | None = None,
    ) -> TransferResult:
        started = time.monotonic()
        if seq is None:
            seq = self.store.add(
                envelope_id=envelope.id, peer=channel.common_name, direction="outgoing",
                kind="request", state="sent", envelope=envelope.SerializeToString(),
            )
        else:  # a resend of the stored row ``seq``
            self.store.set_state(seq, "sent")
        try:
            reply = channel.network.Transfer(envelope, timeout=self.timeout)
        except grpc.RpcError as exc:
            self.store.set_state(seq, "failed")
            error = transfer_error(*rpc_status(exc), f"transfer to {peer} failed")
            if isinstance(error, ChannelBrokenError):
                self.connector.forget(peer)
            raise error from None
        except ValueError:  # grpc: the channel was closed under this call
            self.store.set_state(seq, "failed")
            raise closed_channel_error(f"transfer to {peer} failed") from None
        if reply.id != envelope.id:
            self.store.set_state(seq, "failed")
            raise TransferError(f"{peer} answered envelope {envelope.id} with id {reply.id!r}")
        result = self._record_reply(seq, channel.common_name, reply)
        events.transfer("outgoing", result.state, result.error.code if result.error else 0,
                        peer=result.peer, envelope_id=result.envelope_id, seconds=_took(started))
        return result

    def _record_reply(
        self, seq: int, peer: str, reply: api_pb2.SecureEnvelope
    ) -> TransferResult:
        raw = reply.SerializeToString()
        error = envelope_error(reply)
        if error is not None and not reply.payload:
            state = "repair" if error.retry else "rejected"
            self.store.add_reply(seq, state=state, envelope=raw, direction="incoming",
                                 error_code=error.code, envelope_id=reply.id)
            return TransferResult(reply.id, peer, state, reply.transfer_state, error=error)
        try:
            payload = open_envelope(reply, self.keyring.select(reply.public_key_signature))
        except EnvelopeRejection as exc:
            self.store.add_reply(seq, state="undecodable", envelope=raw, direction="incoming",
                                 error_code=exc.code, envelope_id=reply.id)
            raise TransferError(f"cannot open the reply from {peer}: {exc}") from exc
        pending = pending_of(payload)
        state = "pending" if pending is not None else {
            TS.COMPLETED: "completed"}.get(reply.transfer_state, "accepted")
        window = (pending.reply_not_after, "") if pending and pending.reply_not_after else None
        self.store.add_reply(seq, state=state, envelope=raw, direction="incoming",
                             pending=window, envelope_id=reply.id)
        return TransferResult(reply.id, peer, state, reply.transfer_state, payload=payload)

    def _send_callback(self, peer: str, envelope_id: str, decision: Accept | Reject,
                       original: api_pb2.Payload) -> None:
        """An in-process ``Pending.callback`` decided: record the decision on the pending
        row, then deliver it (retried by the pending loop if this attempt fails)."""
        row = self.store.latest_request(peer, envelope_id)
        if row is None or row.state != "pending":
            log.warning("peer=%s envelope=%s callback decided for a transfer that is not "
                        "pending", peer_text(peer), peer_text(envelope_id))
            return
        # Under the delivery lock, so the pending loop cannot deliver the recorded
        # decision first without the callback's payload.
        with self._deliver_lock:
            self.store.set_resolution(row.seq, _encode(decision, callback=True))
            self._deliver(row, decision, original=decision_payload(decision) or original)

    # ------------------------------------------------------------ pending loop

    def _pending_loop(self) -> None:
        while not self._pending_stop.is_set():
            try:
                self.pending_tick()
            except TrisaPeerError as exc:
                log.warning("pending transfers: %s", exc)
            except Exception:  # a resolver's or the store's bug must not end the loop
                log.exception("pending transfers: unexpected failure")
            self._pending_stop.wait(self.pending_interval)

    def pending_tick(self) -> None:
        """One pass over pending transfers: expire those past their deadline, ask
        resolvers, deliver recorded decisions. Run every ``pending_interval`` seconds.

        Safe in several processes and replicas on one store (the ``--workers``
        supervisor still runs it in one worker per host): each delivery and expiry
        holds the transfer in the store (``TransferStore.exclusive``, the same hold an
        incoming retry takes; skipped this pass when another process holds it) and
        re-reads the row, so a decision goes out once. A decision recorded by a callback (marked
        :data:`CALLBACK_MARK`; maybe another worker's, delivering it right now) is left
        to it for ``decision_hold`` seconds; after that, the row still pending means
        that delivery failed (or its process died), and this loop delivers it: the
        bytes that process stored, if it got as far as sealing them."""
        now = self.clock()
        for row in self.store.pending():
            if self._pending_stop.is_set():
                return
            deadline = reply_deadline(row)
            if deadline is not None and now > deadline:
                self._expire(row)
                continue
            if row.direction != "incoming":
                continue  # we originated it: the beneficiary decides
            if row.resolution and self._held(row, now):
                continue
            decision = self._decision(row, deadline)
            if decision is not None:
                self._deliver(row, decision)

    def _held(self, row: StoredEnvelope, now: datetime) -> bool:
        """The row's decision was recorded by a callback (in this process or another)
        less than ``decision_hold`` seconds ago."""
        if self.decision_hold <= 0 or not row.resolution.startswith(CALLBACK_MARK):
            return False
        try:
            recorded = stored_time(row.updated_at)
        except ValueError:
            return False
        return now - recorded < timedelta(seconds=self.decision_hold)

    def _open_request(self, row: StoredEnvelope) -> api_pb2.Payload:
        envelope = api_pb2.SecureEnvelope.FromString(row.envelope)
        return open_envelope(envelope, self.keyring.select(envelope.public_key_signature))

    def _decision(self, row: StoredEnvelope, deadline: datetime | None) -> Accept | Reject | None:
        if row.resolution:
            return _decode(row.resolution)
        if not row.resolver:
            return None
        resolver = self.resolvers.get(row.resolver)
        if resolver is None:
            if row.resolver not in self._unknown_resolvers:
                self._unknown_resolvers.add(row.resolver)
                log.warning("envelope=%s no resolver named %s registered", row.envelope_id,
                            peer_text(row.resolver))
            return None
        transfer = PendingTransfer(row.envelope_id, row.peer, self._open_request(row),
                                   stored_time(row.created_at), deadline)
        try:
            decision = resolver(transfer)
        except Exception:
            log.exception("envelope=%s resolver %s failed", row.envelope_id, row.resolver)
            return None
        if decision is None:
            return None
        if not isinstance(decision, (Accept, Reject)):
            log.error("envelope=%s resolver %s returned neither Accept nor Reject",
                      row.envelope_id, row.resolver)
            return None
        self.store.set_resolution(row.seq, _encode(decision))
        return decision

    def _deliver(self, row: StoredEnvelope, decision: Accept | Reject,
                 *, original: api_pb2.Payload | None = None) -> None:
        """Send a pending transfer's decision to the originator (same envelope id).

        A retry sends the bytes stored by the first attempt, so the originator answers
        it from its store. On an answer the transfer leaves ``pending``; on a failure
        it stays pending and the next tick tries again, until the deadline."""
        peer, eid = row.peer, row.envelope_id
        with self._deliver_lock, self.store.exclusive(peer, eid, 0.0) as mine:
            if not mine:  # another process or replica works on this transfer right now
                return
            current = self.store.get(row.seq)
            if current is None or current.state != "pending":
                return
            try:
                channel = self.connect(peer)
                prior = self.store.latest_outgoing(eid)
                if prior is not None and prior.seq > row.seq and prior.envelope:
                    result = self._transfer(peer, channel,
                                            api_pb2.SecureEnvelope.FromString(prior.envelope),
                                            seq=prior.seq)
                else:
                    result = self._transfer(peer, channel,
                                            self._decision_envelope(row, decision, original,
                                                                    channel))
            except TrisaPeerError as exc:
                log.warning("peer=%s envelope=%s decision not delivered (will retry): %s",
                            peer, eid, exc)
                return
            if result.error is not None and result.error.code == Code.COMPLIANCE_PERIOD_EXCEEDED:
                self.store.set_state(row.seq, "expired", error_code=result.error.code)
            elif isinstance(decision, Reject):
                self.store.set_state(row.seq, "rejected", error_code=decision.code)
            else:
                self.store.set_state(row.seq, "accepted", error_code=0)
            log.info("peer=%s envelope=%s callback delivered", peer, eid)

    def _decision_envelope(self, row: StoredEnvelope, decision: Accept | Reject,
                           original: api_pb2.Payload | None,
                           channel: PeerChannel) -> api_pb2.SecureEnvelope:
        if isinstance(decision, Reject):
            return reject(row.envelope_id, decision.code, decision.message, retry=decision.retry)
        payload = api_pb2.Payload()
        payload.CopyFrom(decision.payload or original or self._open_request(row))
        payload.received_at = format_timestamp(self.clock())
        try:
            return seal(payload, self._peer_key(row.peer, channel),
                        envelope_id=row.envelope_id, transfer_state=TS.ACCEPTED,
                        clock=self.clock)
        except EnvelopeError as exc:
            raise TransferError(f"cannot seal the decision for {row.peer}: {exc}") from exc

    def _expire(self, row: StoredEnvelope) -> None:
        """The reply window closed: mark the transfer expired; as the beneficiary, tell
        the originator with COMPLIANCE_PERIOD_EXCEEDED (once, best effort: it expires
        the transfer on its own at the same deadline)."""
        code = Code.COMPLIANCE_PERIOD_EXCEEDED
        with self._deliver_lock, self.store.exclusive(row.peer, row.envelope_id, 0.0) as mine:
            if not mine:  # another process or replica works on this transfer right now
                return
            current = self.store.get(row.seq)
            if current is None or current.state != "pending":
                return
            self.store.set_state(row.seq, "expired", error_code=code)
        log.info("peer=%s envelope=%s pending transfer expired (%s)", row.peer, row.envelope_id,
                 "COMPLIANCE_PERIOD_EXCEEDED")
        if row.direction != "incoming":
            return
        try:
            channel = self.connect(row.peer)
            notice = reject(row.envelope_id, code,
                            f"the reply window closed at {row.deadline}", retry=False)
            self._transfer(row.peer, channel, notice)
        except TrisaPeerError as exc:
            log.warning("peer=%s envelope=%s expiry notice not delivered: %s", row.peer,
                        row.envelope_id, exc)


def decision_payload(decision: Accept | Reject) -> api_pb2.Payload | None:
    return decision.payload if isinstance(decision, Accept) else None


#: Marks a decision recorded by an in-process callback that is delivering it right now
#: (see ``TrisaNode.decision_hold``); an operator's or resolver's decision has none.
CALLBACK_MARK = "callback:"


def _encode(decision: Accept | Reject, *, callback: bool = False) -> str:
    mark = CALLBACK_MARK if callback else ""
    if isinstance(decision, Accept):
        return f"{mark}accept"
    return f"{mark}reject:{decision.code}:{int(decision.retry)}:{decision.message}"


def shown_resolution(text: str) -> str:
    """A stored decision as an operator reads it: ``accept`` or ``reject:CODE``."""
    return ":".join(text.removeprefix(CALLBACK_MARK).split(":", 2)[:2])


def _decode(text: str) -> Accept | Reject:
    text = text.removeprefix(CALLBACK_MARK)
    if text == "accept":
        return Accept()
    _, code, retry, message = text.split(":", 3)
    return Reject(int(code), message, retry=retry == "1")


def stored_time(text: str) -> datetime:
    """A store timestamp (``created_at``/``updated_at``) as an aware UTC datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def reply_deadline(row: StoredEnvelope) -> datetime | None:
    """The reply window's end; the originator allows one second more (clock skew)."""
    if not row.deadline:
        return None
    try:
        end = parse_timestamp(row.deadline)
    except (ValueError, EnvelopeError):
        return None
    return end + timedelta(seconds=1) if row.direction == "outgoing" else end


def _took(started: float) -> float:
    return time.monotonic() - started
