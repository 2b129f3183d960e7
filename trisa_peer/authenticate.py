"""Steps 2-4 on the server side (Bob verifying Alice): :class:`PeerAuthenticator`.

* step 2 -- the client presented a certificate at all;
* step 3 -- it chains to a TRISA root as a *client* certificate (:class:`ChainVerifier`),
  and is not on a configured CRL;
* step 4 -- the directory holds a VERIFIED record for its common name, and the
  presented leaf is that record's identity certificate (:func:`~trisa_peer.binding.bind`);
  on a mismatch the directory is asked once more with the cache bypassed (the peer may
  have rotated) before the call is refused.

Decisions are cached per leaf certificate (its PEM bytes) for ``decision_ttl`` seconds
from the directory's answer, so the per-call cost is a dictionary look-up. A leaf bound
as the record's *superseded* certificate (a planned reissue's grace, issue 14) is
decided until the earlier of that and the end of its grace, so it is refused within
moments of the grace ending; long-lived streams re-ask on every message and every
``stream_recheck`` seconds (:mod:`trisa_peer.transport.interceptor`).

While the directory is unreachable (down, timing out, or over the bound of concurrent
look-ups) a peer gets in only by a cached acceptance or, after that expired, under the
*grace* (:class:`~trisa_peer.controls.PeerControls`): until ``decision_ttl + grace``
after the last positive directory answer for that very certificate. The grace is kept
in this object only (never persisted or shared); step 3 (chain, CRL) still runs on
every re-check; an answer "revoked" or "not found" ends it at once; each acceptance
under grace is logged with reason ``accepted-under-grace`` and counted
(:attr:`PeerAuthenticator.counts`). Unknown peers are refused (fail closed).

Directory look-ups run through a :class:`~trisa_peer.lookup.LookupGate`: at most
``max_lookups`` at once, more are refused at once (``directory-busy``, UNAVAILABLE),
so a hung directory cannot take every worker; cached decisions never wait on it.
The local deny-list (:class:`~trisa_peer.denylist.DenyList`) is checked on every call,
cached acceptances included.

Every decision is logged: an acceptance as one line; refusals of the same certificate for
the same step and reason -- cached ones included -- go through a
:class:`~trisa_peer.logtext.RefusalLimiter` (``refusals``): the first is logged at once,
the next after :data:`REFUSAL_LOG_INTERVAL` seconds with ``count=N in Ts``. Names and
details that come from the peer's certificate are escaped (:func:`~.logtext.peer_text`).

Pure: imports neither grpc nor the generated protobuf code.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from cryptography import x509

from . import events
from .binding import BindMatch, bind
from .certs import common_name, fingerprint, parse_certificates
from .controls import PeerControls
from .denylist import DenyList
from .errors import (
    CertificateError,
    ChainVerificationError,
    DirectoryMismatchError,
    HandshakeError,
    TransportSecurityError,
    TrisaPeerError,
)
from .logtext import RefusalLimiter, peer_text
from .lookup import DIRECTORY_DOWN, LookupGate, answer_age, lookup_peer
from .records import DirectoryLookup, PeerRecord
from .steps import HandshakeStep, Reason
from .trace import HandshakeTrace
from .verify import ChainVerifier, VerifiedChain, dns_names

__all__ = ["REFUSAL_LOG_INTERVAL", "PeerAuthenticator", "VerifiedPeer"]

log = logging.getLogger("trisa_peer.handshake")

#: Seconds over which repeated refusals of one peer for one reason are logged as one
#: line (the first at once, then ``... reason=X count=N in Ts``); the node's
#: ``refusal_log_interval`` overrides it.
REFUSAL_LOG_INTERVAL = 10.0

Step = HandshakeStep


@dataclass(frozen=True)
class VerifiedPeer:
    """A counterparty that passed steps 2-4: what a handler is given.

    ``record`` is the directory record the certificate was bound to.
    """

    common_name: str
    fingerprint: str
    serial_hex: str
    record: PeerRecord
    chain: VerifiedChain
    verified_at: datetime


@dataclass
class _Decision:
    peer: VerifiedPeer | None
    error: HandshakeError | None
    expires: float
    grace: bool = False


class PeerAuthenticator:
    """Steps 2-4 for an incoming connection, with a per-certificate decision cache."""

    def __init__(
        self,
        verifier: ChainVerifier,
        directory: DirectoryLookup,
        *,
        decision_ttl: float = 300.0,
        negative_ttl: float = 5.0,
        max_entries: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
        refresh: Callable[[], object] | None = None,
        refresh_interval: float = 5.0,
        controls: PeerControls | None = None,
    ) -> None:
        controls = controls if controls is not None else PeerControls(monotonic=monotonic)
        self.verifier = verifier
        self.directory = directory
        self.decision_ttl = decision_ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self.controls = controls
        self._now = monotonic if monotonic is not time.monotonic else controls.monotonic
        self.gate = LookupGate(controls.max_lookups)
        self.deny = (DenyList(controls.deny_list, check_interval=controls.deny_check_interval,
                              monotonic=self._now)
                     if controls.deny_list is not None else None)
        #: decisions by reason since start (refusals, ``accepted-under-grace`` per call)
        self.counts: Counter[Reason] = Counter()
        # leaf PEM -> (monotonic time of the last positive directory answer, peer):
        # what a grace is counted from. In memory only, bounded like the cache.
        self._positive: dict[bytes, tuple[float, VerifiedPeer]] = {}
        self._cache: dict[bytes, _Decision] = {}
        self._unchecked: dict[bytes, VerifiedPeer] = {}
        self._lock = threading.Lock()
        # ``refresh`` (e.g. FileMaterial.current) is called at most every
        # ``refresh_interval`` seconds, so a CRL or trust pool written to disk applies
        # even while every peer keeps its connection open (no new TLS handshake).
        self._refresh = refresh
        self._refresh_interval = refresh_interval
        self._refreshed = float("-inf")
        # Bumped by forget(): a decision computed under an older trust pool or CRL is
        # never cached (nor served) after a rotation.
        self._generation = 0
        self._inserts = 0
        self.refusals = RefusalLimiter(interval=REFUSAL_LOG_INTERVAL)

    # The hot path: one dict look-up per RPC once a certificate has been decided.
    def authenticate_pem(
        self, leaf_pem: bytes | None, chain_pem: bytes | None = None
    ) -> VerifiedPeer:
        """Decide on a peer from the PEM that gRPC's auth context reports."""
        events.begin_call()  # one RPC: a request id for its log lines, its start time
        if not leaf_pem:
            raise _no_certificate()
        now = self._now()
        if self._refresh is not None and now - self._refreshed >= self._refresh_interval:
            self._refreshed = now
            self._refresh()
        hit = self._cache.get(leaf_pem)
        if hit is not None and hit.expires > now:
            if hit.error is not None:
                _log_cached_refusal(self.refusals, leaf_pem, hit.error)
                raise _fresh(hit.error)
            assert hit.peer is not None
            if self.deny is not None:
                self._check_denied(hit.peer.chain.leaf, hit.peer.common_name,
                                   hit.peer.fingerprint)
            if hit.grace:
                self._count(Reason.ACCEPTED_UNDER_GRACE)
            return hit.peer
        generation = self._generation
        try:
            leaf, *rest = parse_certificates(leaf_pem, source="peer certificate")
            presented = parse_certificates(chain_pem, source="peer chain") if chain_pem else []
        except (CertificateError, ValueError) as exc:
            raise ChainVerificationError(
                f"cannot parse the peer's certificate: {exc}",
                step=Step.VERIFY_CLIENT_CHAIN,
                reason=Reason.UNPARSEABLE,
            ) from exc
        if self.deny is not None:
            self._check_denied(leaf, common_name(leaf), fingerprint(leaf))
        try:
            peer, until, graced = self._decide(leaf, [*rest, *presented], None, leaf_pem)
        except HandshakeError as exc:
            self._count(exc.reason)
            if exc.reason in DIRECTORY_DOWN:
                # Not an answer: remembered only briefly, so that callers hammering a
                # hung directory cost a dictionary hit, and recovery stays quick.
                ttl = self.controls.unavailable_ttl
            else:  # a negative answer (or step 3 failed): no grace from now on
                with self._lock:
                    self._positive.pop(leaf_pem, None)
                ttl = self.negative_ttl
            if ttl > 0:
                self._remember(leaf_pem, _Decision(None, _fresh(exc), self._now() + ttl),
                               generation)
            raise
        if graced:
            self._count(Reason.ACCEPTED_UNDER_GRACE)
        self._remember(leaf_pem, _Decision(peer, None, until, graced), generation)
        return peer

    def _count(self, reason: Reason) -> None:
        with self._lock:
            self.counts[reason] += 1

    def _check_denied(self, leaf: x509.Certificate, cn: str, fp: str) -> None:
        assert self.deny is not None
        entry = self.deny.match(cn, fp)
        if entry is None:
            return
        self._count(Reason.DENIED)
        exc = HandshakeError(f"{cn!r} is on this node's deny-list", step=Step.BIND_CLIENT_RECORD,
                             peer=cn, reason=Reason.DENIED)
        _log_decision(cn, leaf, exc.step, "reject", Reason.DENIED, f"deny-list entry {entry}",
                      refusals=self.refusals)
        raise exc

    def _grace(self, key: bytes) -> tuple[VerifiedPeer, float] | None:
        """The peer last accepted for ``key`` and the end of its grace, if still in it."""
        with self._lock:
            entry = self._positive.get(key)
            if entry is None:
                return None
            deadline = entry[0] + self.decision_ttl + self.controls.grace
            if self._now() >= deadline:
                del self._positive[key]
                return None
            return entry[1], deadline

    def _answered(self, key: bytes, peer: VerifiedPeer) -> float:
        """Record a positive directory answer for ``key``; returns its monotonic time."""
        now = self._now()
        at = now - answer_age(peer.record)
        with self._lock:
            self._positive.pop(key, None)
            self._positive[key] = (at, peer)
            if len(self._positive) > self.max_entries:
                horizon = now - self.decision_ttl - self.controls.grace
                for stale in [k for k, (t, _) in self._positive.items() if t <= horizon]:
                    del self._positive[stale]
                while len(self._positive) > self.max_entries:
                    self._positive.pop(next(iter(self._positive)))
        return at

    def _remember(self, key: bytes, decision: _Decision, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # decided under material that has since been replaced
            self._cache.pop(key, None)
            self._cache[key] = decision
            self._inserts += 1
            if self._inserts % 1024 == 0:  # drop expired entries now and then
                now = self._now()
                for stale in [k for k, d in self._cache.items() if d.expires <= now]:
                    del self._cache[stale]
            while len(self._cache) > self.max_entries:
                self._cache.pop(next(iter(self._cache)))

    def identify_pem(self, leaf_pem: bytes | None) -> VerifiedPeer:
        """Reference mode (``verify_peers=False``): who is calling, *without* steps 3-4.

        Only the TLS layer has checked the chain; the TRISA policy, the directory binding
        and revocation are not checked. The record is looked up by the certificate's
        common name so that replies can be sealed. For measuring what verification
        costs and for parity with the Go reference; never for production.
        """
        events.begin_call()
        if not leaf_pem:
            raise _no_certificate()
        hit = self._unchecked.get(leaf_pem)
        if hit is not None:
            return hit
        leaf = parse_certificates(leaf_pem, source="peer certificate")[0]
        cn = common_name(leaf)
        record = lookup_peer(self.directory, cn, step=Step.BIND_CLIENT_RECORD)
        chain = VerifiedChain(leaf, (leaf,), fingerprint(leaf), cn, dns_names(leaf),
                              self.verifier.clock())
        peer = VerifiedPeer(cn, chain.fingerprint, chain.serial_hex, record, chain,
                            chain.verified_at)
        with self._lock:
            if len(self._unchecked) >= self.max_entries:
                self._unchecked.clear()
            self._unchecked[leaf_pem] = peer
        return peer

    def cached_decisions(self) -> int:
        return len(self._cache)

    def forget(self) -> None:
        """Drop every cached decision (e.g. after the trust pool or CRL changed).

        The times of the last positive directory answers are kept: a grace still counts
        from them, and step 3 runs with the new trust pool and CRL on every re-check."""
        with self._lock:
            self._generation += 1
            self._cache.clear()
            self._unchecked.clear()

    def authenticate(
        self,
        leaf: x509.Certificate,
        presented: list[x509.Certificate] | tuple[x509.Certificate, ...] = (),
        *,
        trace: HandshakeTrace | None = None,
    ) -> VerifiedPeer:
        """Steps 3 and 4 without the cache (and without any grace); logs one line."""
        return self._decide(leaf, presented, trace, None)[0]

    def _decide(
        self,
        leaf: x509.Certificate,
        presented: list[x509.Certificate] | tuple[x509.Certificate, ...],
        trace: HandshakeTrace | None,
        grace_key: bytes | None,
    ) -> tuple[VerifiedPeer, float, bool]:
        """Steps 3 and 4: (peer, until when the decision holds, accepted under grace).

        With ``grace_key`` (the leaf PEM) a positive answer is recorded for it, and a
        directory that does not answer lets the peer in while its grace lasts."""
        trace = trace if trace is not None else HandshakeTrace()
        cn = common_name(leaf)
        try:
            trace.add(Step.PRESENT_CLIENT_CERT, "pass", f"client presented {cn!r}")
            with trace.step(Step.VERIFY_CLIENT_CHAIN) as note:
                chain = self.verifier.verify_client(leaf, presented, peer=cn)
                note[0] = f"chains to {chain.chain[-1].subject.rfc4514_string()}"
            with trace.step(Step.BIND_CLIENT_RECORD) as note:
                record, match = self._bind(leaf, cn, note)
        except TrisaPeerError as exc:
            if not isinstance(exc, HandshakeError):  # e.g. a malformed directory record
                exc = DirectoryMismatchError(
                    f"cannot bind {cn!r} to its directory record: {exc}",
                    step=Step.BIND_CLIENT_RECORD, peer=cn, reason=Reason.INVALID_RECORD,
                )
                _log_decision(cn, leaf, exc.step, "reject", exc.reason, str(exc),
                              refusals=self.refusals)
                raise exc from None
            graced = (self._grace(grace_key)
                      if grace_key is not None and exc.reason in DIRECTORY_DOWN else None)
            if graced is not None:  # a superseded leaf: never past its reissue grace
                graced = self._within_reissue_grace(*graced)
            if graced is not None:
                peer, deadline = graced
                left = deadline - self._now()
                _log_decision(cn, leaf, Step.BIND_CLIENT_RECORD, "accept",
                              Reason.ACCEPTED_UNDER_GRACE,
                              f"{exc.reason}; trusted without the directory {left:.0f}s more")
                return peer, min(self._now() + self.controls.grace_recheck, deadline), True
            _log_decision(cn, leaf, exc.step, "reject", exc.reason, str(exc),
                          refusals=self.refusals)
            raise
        # bind() proved the presented leaf and the registered one are the same DER:
        # keep one parsed copy (the record's) so each cached decision holds one leaf.
        registered = match.certificate
        chain = replace(chain, leaf=registered, chain=(registered, *chain.chain[1:]))
        peer = VerifiedPeer(
            common_name=cn,
            fingerprint=chain.fingerprint,
            serial_hex=chain.serial_hex,
            record=record,
            chain=chain,
            verified_at=chain.verified_at,
        )
        _log_decision(cn, leaf, Step.BIND_CLIENT_RECORD, "accept", Reason.VERIFIED,
                      f"certificate {match.describe()}" if match.superseded else "")
        if grace_key is None:
            until = self._now() + self.decision_ttl
        else:
            until = self._answered(grace_key, peer) + self.decision_ttl
        if match.grace_until is not None:  # never decided past the end of its grace
            left = (match.grace_until - self.verifier.clock()).total_seconds()
            until = min(until, self._now() + max(0.0, left))
        return peer, until, False

    def _within_reissue_grace(
        self, peer: VerifiedPeer, deadline: float
    ) -> tuple[VerifiedPeer, float] | None:
        """The outage grace of a peer bound as its record's superseded certificate ends
        with the reissue grace too (``None``: over)."""
        old = peer.record.superseded
        if old is None or fingerprint(old.certificate) != peer.fingerprint:
            return peer, deadline
        left = (old.grace_until - self.verifier.clock()).total_seconds()
        if left <= 0:
            return None
        return peer, min(deadline, self._now() + left)

    def _bind(
        self, leaf: x509.Certificate, cn: str, note: list[str]
    ) -> tuple[PeerRecord, BindMatch]:
        step = Step.BIND_CLIENT_RECORD
        with self.gate.slot(cn, step=step):
            record = lookup_peer(self.directory, cn, step=step)
            try:
                match = bind(leaf, record, step=step, now=self.verifier.clock())
            except DirectoryMismatchError:
                # The directory keeps only the current certificate and our copy may be
                # stale (rotation): ask once more, bypassing every cache, then decide.
                record = lookup_peer(self.directory, cn, step=step, fresh=True)
                match = bind(leaf, record, step=step, now=self.verifier.clock())
                note[0] = (f"bound to record {record.id} after a fresh directory query "
                           f"(certificate {match.describe()})")
                return record, match
        note[0] = f"bound to directory record {record.id} (certificate {match.describe()})"
        return record, match


def _no_certificate() -> TransportSecurityError:
    return TransportSecurityError(
        "peer did not return a certificate",
        step=Step.PRESENT_CLIENT_CERT,
        reason=Reason.NO_CLIENT_CERTIFICATE,
    )


def _log_decision(
    cn: str, leaf: x509.Certificate, step: HandshakeStep, outcome: str, reason: Reason,
    detail: str, *, refusals: RefusalLimiter | None = None,
) -> None:
    """One line per decision; a refusal (``outcome="reject"``) with ``refusals`` is
    aggregated per (fingerprint, step, reason): logged at once the first time, then once
    per interval with the count of refusals since the last line."""
    events.decision(step, outcome, reason)  # metrics: every decision, aggregated or not
    fp = fingerprint(leaf)
    count = ""
    if outcome == "reject" and refusals is not None:
        report = refusals.refuse((fp, int(step), reason))
        if not report.log:
            return
        if report.count > 1:
            count = f" count={report.count} in {report.seconds:.0f}s"
            detail = ""  # logged with the first line of the key
    log.info(
        "peer=%s fingerprint=%s serial=%X step=%d outcome=%s reason=%s%s%s",
        peer_text(cn) if cn else "-",
        fp,
        leaf.serial_number,
        int(step),
        outcome,
        reason,
        count,
        f' detail="{peer_text(detail, 300)}"' if detail else "",
    )


def _log_cached_refusal(refusals: RefusalLimiter, leaf_pem: bytes, exc: HandshakeError) -> None:
    """Count (and log, once per interval) a refusal answered from the decision cache,
    under the same key as the fresh decision's line."""
    try:
        leaf = x509.load_pem_x509_certificate(leaf_pem)
    except ValueError:
        return  # never cached: an unparseable certificate is refused before caching
    _log_decision(common_name(leaf), leaf, exc.step, "reject", exc.reason, str(exc),
                  refusals=refusals)


def _fresh(exc: HandshakeError) -> HandshakeError:
    """A new exception object with the same class and fields but no traceback, so a
    cached rejection re-raised many times does not grow (or pin) a traceback chain."""
    clone = exc.__class__.__new__(exc.__class__)
    clone.__dict__.update(exc.__dict__)
    clone.args = exc.args
    return clone
