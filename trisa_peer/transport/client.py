"""Dialling a verified peer: steps 1, 5, 6 and 7 on the client side.

:class:`PeerConnector` asks the :class:`~trisa_peer.resolve.PeerResolver` for a
:class:`~trisa_peer.resolve.ConnectionPlan` (directory lookup, offline verification of
the *registered* leaf), then opens a gRPC channel whose only trust anchor is that leaf
and whose target name is the endpoint host: BoringSSL completes the handshake only if
the server presents exactly the registered certificate for that name. A probe call
(TRISAHealth/Status) proves the channel end to end, and tells us whether the server
accepted *us* (steps 3 and 4 on its side); :func:`~.status.dial_error` names the step
that failed. When the server presented another certificate than the pinned one,
:mod:`.presented` reads it once more (unverified, for the message only) to tell another
CA's certificate (step 6) from the same CA's (step 7, reissued?).

On a pinned-handshake failure the directory is asked once more, bypassing caches (the
peer may have rotated); if the record changed the connector re-pins and retries once.
Channels are cached per peer and reused; :meth:`PeerConnector.forget` drops one.

A cached channel is re-checked against the directory every ``channel_ttl`` seconds. When
the directory does not answer, it stays in use exactly as the server side keeps a peer:
until ``decision_ttl`` after the last positive directory answer, then under the grace
(logged and counted as ``accepted-under-grace``) until ``decision_ttl + grace``; an
answer "revoked" or "not found" drops it at once. The local deny-list applies to every
connect, cached channels included.

A channel that also pins the peer's *superseded* certificate (a planned reissue's grace,
:attr:`~trisa_peer.resolve.ConnectionPlan.pin_until`) is fresh only until the grace
ends: the next connect re-plans and dials a channel pinned to the current certificate
alone (while the directory does not answer, it re-pins the cached record's current
certificate without asking). A ``check`` trace says which pinned certificate the server
presented ("current" or "superseded, grace until T").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import grpc

from .._pb.trisa.api.v1beta1 import api_pb2, api_pb2_grpc
from ..certs import certs_to_pem, fingerprint
from ..controls import PeerControls
from ..denylist import DenyList
from ..errors import DirectoryMismatchError, HandshakeError
from ..logtext import peer_text
from ..lookup import DIRECTORY_DOWN, answer_age
from ..resolve import ConnectionPlan, PeerResolver
from ..steps import HandshakeStep, Reason
from ..trace import HandshakeTrace, StepRecord
from .material import MaterialSource
from .metadata import BINDING_METADATA
from .presented import diagnose_presented, fetch_presented
from .status import dial_error, rpc_status

__all__ = ["PeerChannel", "PeerConnector"]

log = logging.getLogger("trisa_peer.transport")

Step = HandshakeStep


@dataclass
class PeerChannel:
    """An open, verified channel to one peer, with its stubs."""

    plan: ConnectionPlan
    channel: grpc.Channel
    network: api_pb2_grpc.TRISANetworkStub
    health: api_pb2_grpc.TRISAHealthStub
    checked_at: float = 0.0  # monotonic time of the last successful steps 1, 6, 7
    answered_at: float = 0.0  # monotonic time of the directory's last positive answer
    # while the directory does not answer: re-check often, never use it past this time
    hold_until: float = 0.0
    under_grace: bool = False  # kept past the decision TTL, under the grace

    @property
    def common_name(self) -> str:
        return self.plan.record.common_name

    def close(self) -> None:
        self.channel.close()


class PeerConnector:
    """Open (and cache) verified channels to peers named by common name."""

    def __init__(
        self,
        material: MaterialSource,
        resolver: PeerResolver,
        *,
        timeout: float = 10.0,
        channel_ttl: float = 60.0,
        decision_ttl: float = 300.0,
        controls: PeerControls | None = None,
        deny: DenyList | None = None,
    ) -> None:
        self.material = material
        self.resolver = resolver
        self.timeout = timeout
        self.channel_ttl = channel_ttl
        self.decision_ttl = decision_ttl
        self.controls = controls if controls is not None else PeerControls()
        self.deny = deny
        self._now = self.controls.monotonic
        #: ``accepted-under-grace`` uses of a channel (and denials) since start
        self.counts: Counter[Reason] = Counter()
        # Our own certificate rotated: new channels must present the new one.
        material.subscribe(lambda _material: self.reset())
        self._channels: dict[str, PeerChannel] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def connect(self, common_name: str, *, trace: HandshakeTrace | None = None) -> PeerChannel:
        """A verified channel to ``common_name`` (cached; probed when first opened).

        A cached channel is used as is for ``channel_ttl`` seconds; after that steps 1,
        6 and 7 run again (directory lookup, offline checks): a peer that has since been
        revoked or removed is refused and its channel dropped, and a changed registered
        certificate is dialled anew. With ``trace`` the steps are always run and
        recorded on a new channel. Concurrent first connections to the same peer open
        one channel between them. Replaced channels are not closed here, since calls
        of other threads may still be using them; they close when collected.
        """
        key = common_name.lower()
        cached = self._channels.get(key)
        if cached is not None and trace is None and self._fresh(cached):
            return self._allowed(cached)
        with self._peer_lock(key):
            cached = self._channels.get(key)
            if cached is not None and trace is None:
                if self._fresh(cached):
                    return self._allowed(cached)
                revalidated = self._revalidate(key, common_name, cached)
                if revalidated is not None:
                    return self._allowed(revalidated)
            self._check_denied(common_name, "")
            peer = self._dial(common_name, trace if trace is not None else HandshakeTrace(),
                              observe=trace is not None)
            peer.checked_at = self._now()
            peer.answered_at = peer.checked_at - answer_age(peer.plan.record)
            self._channels[key] = peer
        return self._allowed(peer)

    def _fresh(self, peer: PeerChannel) -> bool:
        if self._pin_expired(peer.plan):
            return False
        now = self._now()
        if peer.hold_until:  # re-check often, and never past the end of the grace
            return now < min(peer.checked_at + self.controls.grace_recheck, peer.hold_until)
        return now - peer.checked_at < self.channel_ttl

    def _pin_expired(self, plan: ConnectionPlan) -> bool:
        """The plan pins a superseded certificate whose grace has ended."""
        return plan.pin_until is not None and self.resolver.verifier.clock() >= plan.pin_until

    def _allowed(self, peer: PeerChannel) -> PeerChannel:
        self._check_denied(peer.common_name, peer.plan.verified.fingerprint)
        if peer.under_grace:
            self.counts[Reason.ACCEPTED_UNDER_GRACE] += 1
        return peer

    def _check_denied(self, common_name: str, fp: str) -> None:
        entry = self.deny.match(common_name, fp) if self.deny is not None else None
        if entry is not None:
            self.counts[Reason.DENIED] += 1
            log.info("peer=%s outcome=reject reason=%s detail='deny-list entry %s'",
                     peer_text(common_name), Reason.DENIED, entry)
            raise HandshakeError(f"{common_name!r} is on this node's deny-list",
                                 step=Step.LOOKUP_PEER, peer=common_name, reason=Reason.DENIED)

    def _revalidate(self, key: str, common_name: str, cached: PeerChannel) -> PeerChannel | None:
        """Re-run the offline steps for a cached channel; None means dial a new one."""
        try:
            plan = self.resolver.plan(common_name, trace=HandshakeTrace())
        except HandshakeError as exc:
            now = self._now()
            if exc.reason in DIRECTORY_DOWN and self._pin_expired(cached.plan):
                cached = self._repin_current(key, cached)
            if exc.reason in DIRECTORY_DOWN:
                if now < cached.answered_at + self.decision_ttl:
                    cached.checked_at = now  # within the TTL of its last answer, as a server
                    cached.hold_until = cached.answered_at + self.decision_ttl
                    return cached
                until = cached.answered_at + self.decision_ttl + self.controls.grace
                if now < until:
                    cached.checked_at, cached.hold_until, cached.under_grace = now, until, True
                    log.info("peer=%s outcome=accept reason=%s detail='%s; trusted without "
                             "the directory %.0fs more'", peer_text(cached.common_name),
                             Reason.ACCEPTED_UNDER_GRACE, exc.reason, until - now)
                    return cached
            self._channels.pop(key, None)
            raise
        if plan.pin_pem == cached.plan.pin_pem and plan.address == cached.plan.address:
            cached.checked_at = self._now()
            cached.answered_at = cached.checked_at - answer_age(plan.record)
            cached.hold_until, cached.under_grace = 0.0, False
            return cached
        self._channels.pop(key, None)
        return None

    def _repin_current(self, key: str, cached: PeerChannel) -> PeerChannel:
        """Without the directory: the cached record's current certificate alone (the
        superseded one's grace has ended), on a new channel; the outage bounds apply."""
        leaf = cached.plan.record.identity_certificate
        assert leaf is not None  # a plan is only made for a record holding one
        plan = replace(cached.plan, pin_pem=certs_to_pem([leaf]), pin_until=None)
        peer = self._open(plan, HandshakeTrace())
        peer.checked_at, peer.answered_at = cached.checked_at, cached.answered_at
        peer.hold_until, peer.under_grace = cached.hold_until, cached.under_grace
        self._channels[key] = peer
        return peer

    def reset(self) -> None:
        """Forget every cached channel (in-flight calls on them finish normally)."""
        with self._lock:
            self._channels.clear()

    def _peer_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())

    def _dial(self, common_name: str, trace: HandshakeTrace, *,
              observe: bool = False) -> PeerChannel:
        plan = self.resolver.plan(common_name, trace=trace)
        try:
            return self._open(plan, trace, observe=observe)
        except DirectoryMismatchError:
            fresh = self.resolver.plan(common_name, trace=HandshakeTrace(), fresh=True)
            if fresh.pin_pem == plan.pin_pem:
                raise
            log.info("peer %s rotated its certificate; re-pinning", common_name)
            trace.records[:] = [r for r in trace.records if r.outcome != "fail"]
            return self._open(fresh, trace, observe=observe)

    def forget(self, common_name: str) -> None:
        """Drop the cached channel to ``common_name``; the next connect dials anew.

        The channel is not closed: other threads may have calls in flight on it."""
        with self._lock:
            self._channels.pop(common_name.lower(), None)

    def close(self) -> None:
        with self._lock:
            peers = list(self._channels.values())
            self._channels.clear()
        for peer in peers:
            peer.close()

    def _channel(self, plan: ConnectionPlan) -> grpc.Channel:
        identity = self.material.current().identity
        creds = grpc.ssl_channel_credentials(
            root_certificates=plan.pin_pem,
            private_key=identity.key_pem(),
            certificate_chain=identity.chain_pem(),
        )
        options = [
            ("grpc.ssl_target_name_override", plan.target_name),
            ("grpc.default_authority", plan.target_name),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        return grpc.secure_channel(plan.address, creds, options=options)

    def _open(self, plan: ConnectionPlan, trace: HandshakeTrace, *,
              observe: bool = False) -> PeerChannel:
        """Open and probe a channel for ``plan``; with ``observe`` (a ``check`` trace) and
        two pinned certificates, also read which one the server presented."""
        channel = self._channel(plan)
        health = api_pb2_grpc.TRISAHealthStub(channel)
        name = plan.record.common_name
        identity = self.material.current().identity
        ours = identity.common_name
        start = time.perf_counter()
        try:
            _, call = health.Status.with_call(
                api_pb2.HealthCheck(attempts=0), timeout=self.timeout)
        except grpc.RpcError as exc:
            channel.close()
            error = dial_error(*rpc_status(exc), peer=name, address=plan.address,
                               endpoint=plan.endpoint,
                               resolve_names=tuple(self.resolver.resolve))
            if error.reason == Reason.CERTIFICATE_MISMATCH:
                error = self._diagnose(plan, error)
            _record_dial(trace, error, ours, (time.perf_counter() - start) * 1000)
            raise error from None
        claim = _binding_claim(call.initial_metadata() or (), identity.fingerprint)
        ms = (time.perf_counter() - start) * 1000
        _record_dial(trace, None, ours, ms, claim, self._which_pin(plan) if observe else "")
        return PeerChannel(plan, channel, api_pb2_grpc.TRISANetworkStub(channel), health)


    def _diagnose(self, plan: ConnectionPlan, error: HandshakeError) -> HandshakeError:
        """Another certificate than the pinned one: another CA's (step 6) or the same
        CA's (step 7)? Read from one unverified connection (:mod:`.presented`)."""
        presented = fetch_presented(plan.address, plan.target_name, self.timeout)
        registered = plan.record.identity_certificate
        if presented is None or registered is None:
            return error
        pool = self.material.current().pool
        cas = (*pool.roots, *pool.intermediates, *plan.verified.chain[1:])
        return diagnose_presented(presented, registered, cas, peer=error.peer)


    def _which_pin(self, plan: ConnectionPlan) -> str:
        """"current" or "superseded, grace until T": which pinned certificate the server
        presented (read from one more connection; only for a plan with two pins)."""
        old = plan.record.superseded
        if plan.pin_until is None or old is None:
            return "current"
        presented = fetch_presented(plan.address, plan.target_name, self.timeout)
        if presented is not None and fingerprint(presented) == fingerprint(old.certificate):
            return f"superseded, grace until {old.grace_until:%Y-%m-%dT%H:%M:%SZ}"
        return "current"


def _binding_claim(metadata: Any, our_fingerprint: str) -> str:
    """What the peer says it bound this call's caller to (:data:`BINDING_METADATA`), as
    trace text; the peer's own statement, which this node cannot verify."""
    values = [str(v) for k, v in metadata if k == BINDING_METADATA]
    if not values:
        return "not refused (the server's binding cannot be observed)"
    fingerprint, _, record = values[0].partition(" ")
    if fingerprint.lower() != our_fingerprint.lower():
        return (f"claimed by the peer for another certificate (sha256 "
                f"{peer_text(fingerprint, 16)}...), not ours")
    return (f"claimed by the peer: our certificate bound to directory record "
            f"{peer_text(record, 40)}")


def _record_dial(
    trace: HandshakeTrace, error: HandshakeError | None, ours: str, ms: float,
    claim: str = "", matched: str = "",
) -> None:
    """Steps 2-5 as far as the probe call shows them (the TLS handshake is one event).

    Steps 3 and 4 are the server's decisions: this side sees only that it was not
    refused, plus what a trisa-peer server claims it bound (``claim``)."""
    failed = error.step if error is not None else None
    tls_done = failed is None or failed in (Step.VERIFY_CLIENT_CHAIN, Step.BIND_CLIENT_RECORD)
    implied = [
        (Step.PRESENT_CLIENT_CERT, f"presented {ours!r} ({ms:.1f} ms TLS handshake + probe)"),
        (Step.VERIFY_CLIENT_CHAIN, "not refused (the server's chain check cannot be observed)"),
        (Step.BIND_CLIENT_RECORD, claim or "not refused"),
    ]
    for step, detail in implied:
        if failed == step:
            break
        if failed is not None and not tls_done and step != Step.PRESENT_CLIENT_CERT:
            break
        trace.add(step, "pass", detail)
    if tls_done:
        trace.add(Step.PRESENT_SERVER_CERT, "pass", "server presented the pinned certificate"
                  + (f" ({matched})" if matched else ""))
    if error is not None:
        trace.records.append(StepRecord(error.step, "fail", str(error), error.reason, ms))
