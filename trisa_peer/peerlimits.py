"""Per-peer limits: requests per second and requests in flight, per verified peer.

A token bucket (``rate`` per second, ``burst`` deep) and a counter of calls in flight
per peer key (the peer's common name). A call over either limit is refused with a
:class:`~trisa_peer.errors.HandshakeError` at step 8, reason
:attr:`~trisa_peer.steps.Reason.RATE_LIMITED` or
:attr:`~trisa_peer.steps.Reason.TOO_MANY_CONCURRENT`, which the transport answers with
RESOURCE_EXHAUSTED (retryable). At most ``max_peers`` peers are remembered, the least
recently seen forgotten first, so memory is bounded whoever calls.

Pure: standard library only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .controls import PeerControls
from .errors import HandshakeError
from .logtext import RefusalLimiter, peer_text
from .steps import HandshakeStep, Reason

__all__ = ["PeerLimiter", "peer_limiter"]

log = logging.getLogger("trisa_peer.handshake")


def peer_limiter(controls: PeerControls | None) -> PeerLimiter | None:
    """The limiter ``controls`` ask for, or None when they set no per-peer limit."""
    if controls is None or (controls.rate <= 0 and controls.concurrent <= 0):
        return None
    return PeerLimiter(rate=controls.rate, burst=controls.burst,
                       concurrent=controls.concurrent, max_peers=controls.max_peers,
                       monotonic=controls.monotonic)


class _State:
    __slots__ = ("inflight", "last", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.last = now
        self.inflight = 0


class PeerLimiter:
    """``admit(key)`` a call (raises when over a limit) and ``release`` it when done."""

    def __init__(
        self,
        *,
        rate: float = 0.0,
        burst: int = 0,
        concurrent: int = 0,
        max_peers: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = float(rate)
        self.burst = float(burst or max(1.0, self.rate))
        self.concurrent = concurrent
        self.max_peers = max_peers
        self._now = monotonic
        self._lock = threading.Lock()
        self._peers: OrderedDict[str, _State] = OrderedDict()
        self.refused: dict[Reason, int] = {Reason.RATE_LIMITED: 0, Reason.TOO_MANY_CONCURRENT: 0}
        # one log line per peer and reason per interval, however fast a peer is refused
        self._logged = RefusalLimiter(interval=10.0, max_keys=4096, clock=monotonic)

    @property
    def active(self) -> bool:
        return self.rate > 0 or self.concurrent > 0

    def __len__(self) -> int:
        return len(self._peers)

    def admit(self, key: str) -> Callable[[], None]:
        """Count one call of ``key``; returns the function that ends it (call it once)."""
        now = self._now()
        with self._lock:
            state = self._peers.get(key)
            if state is None:
                state = _State(self.burst, now)
                self._peers[key] = state
                while len(self._peers) > self.max_peers:
                    self._peers.popitem(last=False)
            else:
                self._peers.move_to_end(key)
            if self.rate > 0:
                state.tokens = min(self.burst, state.tokens + (now - state.last) * self.rate)
                state.last = now
                if state.tokens < 1.0:
                    raise self._refuse(key, Reason.RATE_LIMITED,
                                       f"more than {self.rate:g} requests/s")
            if self.concurrent > 0 and state.inflight >= self.concurrent:
                raise self._refuse(key, Reason.TOO_MANY_CONCURRENT,
                                   f"more than {self.concurrent} requests in flight")
            if self.rate > 0:
                state.tokens -= 1.0
            state.inflight += 1
        done = False

        def release() -> None:
            nonlocal done
            with self._lock:
                if not done:
                    done = True
                    state.inflight -= 1

        return release


    def _refuse(self, key: str, reason: Reason, what: str) -> HandshakeError:
        self.refused[reason] += 1
        report = self._logged.refuse((key, reason))
        if report.log:
            log.info("peer=%s step=8 outcome=reject reason=%s count=%d in %.0fs",
                     peer_text(key), reason, report.count, report.seconds)
        return _refusal(key, reason, what)


def _refusal(key: str, reason: Reason, what: str) -> HandshakeError:
    return HandshakeError(
        f"per-peer limit: {what}; try again later",
        step=HandshakeStep.EXCHANGE, peer=key, reason=reason,
    )
