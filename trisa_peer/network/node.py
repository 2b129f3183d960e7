"""A TRISA node: a verified server and client sharing one identity, store and key ring.

``TrisaNode.send`` is the originator's side of step 8: it dials the beneficiary
through :class:`~trisa_peer.transport.client.PeerConnector` (steps 1-7), makes sure it
has the peer's sealing key (KeyExchange, cached), seals, records the outgoing envelope
(committed before it is sent), transfers, and records and opens the reply.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import grpc
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from .._pb.trisa.api.v1beta1 import api_pb2, api_pb2_grpc, errors_pb2
from .._pb.trisa.data.generic.v1beta1 import transaction_pb2
from ..authenticate import REFUSAL_LOG_INTERVAL
from ..certs import PeerPublicKey
from ..clock import Clock, utcnow
from ..envelope import (
    envelope_error,
    format_timestamp,
    open_envelope,
    public_key_from_signing_key,
    reject,
    seal,
    signing_key_from_certificate,
)
from ..envelope.validate import DEFAULT_TIMESTAMP_WINDOW
from ..errors import (
    ChannelBrokenError,
    EnvelopeError,
    EnvelopeRejection,
    TransferError,
    TrisaPeerError,
)
from ..logtext import peer_text
from ..records import DirectoryLookup
from ..resolve import PeerResolver
from ..trace import HandshakeTrace
from ..transport.client import PeerChannel, PeerConnector
from ..transport.material import MaterialSource
from ..transport.server import TrisaServer
from ..transport.status import rpc_status, transfer_error
from .handler import Accept, Handler, Reject
from .keys import KeyRing, PeerKeys, record_key
from .service import Exchange, NetworkServicer, pending_of
from .store import TransferStore

__all__ = ["TransferError", "TransferResult", "TrisaNode"]

log = logging.getLogger("trisa_peer.network")

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
        refusal_log_interval: float = REFUSAL_LOG_INTERVAL,
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
            refusal_log_interval=refusal_log_interval,
        )
        self.keyring = KeyRing()
        self.keyring.add(material.current().identity.key)
        material.subscribe(lambda m: self.keyring.add(m.identity.key))
        self.peer_keys = PeerKeys(ttl=key_ttl)
        self._timers: set[threading.Timer] = set()
        self._timers_lock = threading.Lock()
        self._closed = False
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
        self.connector = PeerConnector(material, self.resolver, timeout=timeout)

    @property
    def common_name(self) -> str:
        return self.material.current().identity.common_name

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> int:
        return self.server.start()

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self, grace: float | None = 1.0) -> None:
        """Cancel pending callbacks, close outgoing channels, stop serving; idempotent."""
        with self._timers_lock:
            timers = list(self._timers)
            self._timers.clear()
        for timer in timers:
            timer.cancel()
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

    def send_error(
        self, peer: str, code: int, message: str, *, envelope_id: str | None = None
    ) -> TransferResult:
        """Send an error envelope (e.g. COMPLIANCE_CHECK_FAIL); the peer answers an error."""
        channel = self.connect(peer)
        envelope = reject(envelope_id or str(uuid.uuid4()), code, message, retry=False)
        return self._transfer(peer, channel, envelope)

    def _transfer(
        self, peer: str, channel: PeerChannel, envelope: api_pb2.SecureEnvelope
    ) -> TransferResult:
        seq = self.store.add(
            envelope_id=envelope.id, peer=channel.common_name, direction="outgoing",
            kind="request", state="sent", envelope=envelope.SerializeToString(),
        )
        try:
            reply = channel.network.Transfer(envelope, timeout=self.timeout)
        except grpc.RpcError as exc:
            self.store.set_state(seq, "failed")
            error = transfer_error(*rpc_status(exc), f"transfer to {peer} failed")
            if isinstance(error, ChannelBrokenError):
                self.connector.forget(peer)
            raise error from None
        if reply.id != envelope.id:
            self.store.set_state(seq, "failed")
            raise TransferError(f"{peer} answered envelope {envelope.id} with id {reply.id!r}")
        return self._record_reply(seq, channel.common_name, reply)

    def _record_reply(
        self, seq: int, peer: str, reply: api_pb2.SecureEnvelope
    ) -> TransferResult:
        raw = reply.SerializeToString()
        error = envelope_error(reply)
        if error is not None and not reply.payload:
            state = "repair" if error.retry else "rejected"
            self.store.add_reply(seq, state=state, envelope=raw, direction="incoming",
                                 error_code=error.code)
            return TransferResult(reply.id, peer, state, reply.transfer_state, error=error)
        try:
            payload = open_envelope(reply, self.keyring.select(reply.public_key_signature))
        except EnvelopeRejection as exc:
            self.store.add_reply(seq, state="undecodable", envelope=raw, direction="incoming",
                                 error_code=exc.code)
            raise TransferError(f"cannot open the reply from {peer}: {exc}") from exc
        state = "pending" if pending_of(payload) is not None else {
            TS.COMPLETED: "completed"}.get(reply.transfer_state, "accepted")
        self.store.add_reply(seq, state=state, envelope=raw, direction="incoming")
        return TransferResult(reply.id, peer, state, reply.transfer_state, payload=payload)

    def _send_callback(self, peer: str, envelope_id: str, decision: Accept | Reject,
                       original: api_pb2.Payload) -> None:
        """Deliver an asynchronous decision: a new Transfer with the same envelope id."""
        try:
            channel = self.connect(peer)
            if isinstance(decision, Reject):
                envelope = reject(envelope_id, decision.code, decision.message,
                                  retry=decision.retry)
            else:
                payload = api_pb2.Payload()
                payload.CopyFrom(decision.payload or original)
                payload.received_at = format_timestamp(self.clock())
                envelope = seal(payload, self._peer_key(peer, channel), envelope_id=envelope_id,
                                transfer_state=TS.ACCEPTED, clock=self.clock)
            self._transfer(peer, channel, envelope)
            log.info("peer=%s envelope=%s callback delivered", peer_text(peer),
                     peer_text(envelope_id))
        except TrisaPeerError as exc:
            log.warning("peer=%s envelope=%s callback not delivered: %s", peer_text(peer),
                        peer_text(envelope_id), peer_text(str(exc), 300))

