"""Operator controls of a node's peer checks: directory-outage grace, the bound on
concurrent directory look-ups, per-peer limits and the local deny-list.

One frozen value passed to :class:`~trisa_peer.transport.server.TrisaServer` and
:class:`~trisa_peer.network.node.TrisaNode` (``controls=``); ``trisa-peer serve`` builds
it from its options. Pure: standard library only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_GRACE_RECHECK",
    "DEFAULT_MAX_LOOKUPS",
    "DEFAULT_UNAVAILABLE_TTL",
    "PeerControls",
]

#: Seconds a peer stays trusted while the directory is unreachable, after the decision
#: TTL of its last positive directory answer (so at most TTL + grace in all).
DEFAULT_GRACE = 300.0
#: While under grace, how often the directory is asked again (seconds).
DEFAULT_GRACE_RECHECK = 5.0
#: Concurrent directory look-ups for callers not yet decided; more fail fast.
DEFAULT_MAX_LOOKUPS = 4
#: How long a "directory unavailable / busy" refusal of one certificate is remembered.
DEFAULT_UNAVAILABLE_TTL = 0.2


@dataclass(frozen=True)
class PeerControls:
    """What an operator may tune about how peers are let in.

    ``grace`` (seconds, >= 0) -- see :data:`DEFAULT_GRACE`; kept in memory only.
    ``max_lookups`` (>= 1) -- concurrent directory look-ups on the server side.
    ``rate`` / ``burst`` -- requests per second per verified peer (0: unlimited) and the
    bucket size (default: ``max(1, rate)``). ``concurrent`` -- requests in flight per
    verified peer (0: unlimited). ``deny_list`` -- a file of common names and SHA-256
    fingerprints refused whatever the directory says (re-read when it changes).
    ``monotonic`` -- the clock of every timer here (injectable for tests).
    """

    grace: float = DEFAULT_GRACE
    grace_recheck: float = DEFAULT_GRACE_RECHECK
    max_lookups: int = DEFAULT_MAX_LOOKUPS
    unavailable_ttl: float = DEFAULT_UNAVAILABLE_TTL
    rate: float = 0.0
    burst: int = 0
    concurrent: int = 0
    max_peers: int = 10_000
    deny_list: Path | None = None
    deny_check_interval: float = 2.0
    monotonic: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        from .errors import ConfigurationError

        if self.grace < 0 or self.grace_recheck <= 0:
            raise ConfigurationError("grace must be >= 0 and its re-check interval > 0")
        if self.max_lookups < 1:
            raise ConfigurationError("max concurrent directory look-ups must be >= 1")
        if self.rate < 0 or self.burst < 0 or self.concurrent < 0:
            raise ConfigurationError("per-peer limits must be >= 0 (0: unlimited)")
        if self.max_peers < 1:
            raise ConfigurationError("max_peers must be >= 1")
