"""What a peer may put into the node's log: escaped, capped text, and bounded
aggregation of repeated refusals.

A peer chooses its envelope ids, certificate names and the bytes it sends. Anything of
that which reaches a log line goes through :func:`peer_text` first, so a peer can neither
start a new line (and forge an audit record) nor make one line megabytes long. Refusals
of the same peer for the same reason go through a :class:`RefusalLimiter`, so a hostile
peer sending thousands of requests a second produces one line per interval, and the
limiter's own memory is bounded (least recently seen keys are dropped), because the
keys -- fingerprints, addresses -- are chosen by the attacker.

Pure: standard library only.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["RefusalLimiter", "RefusalReport", "peer_text", "text_digest"]

DEFAULT_LIMIT = 64


def peer_text(value: str | bytes, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` as one printable line of at most ``limit`` characters before escaping.

    Control characters, line and paragraph separators, backslashes and anything not
    printable are written as Python escapes (``\\n``, ``\\x1b``, ``\\u2028``); bytes are
    decoded as UTF-8 with invalid bytes escaped. A longer value is cut and marked with
    how much was left out, e.g. ``abc…(+3,999,940 chars)``.
    """
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    extra = len(text) - limit
    if extra > 0:
        text = text[:limit]
    escaped = "".join(_escape(ch) for ch in text)
    return f"{escaped}…(+{extra:,} chars)" if extra > 0 else escaped


def _escape(ch: str) -> str:
    if ch.isprintable() and ch != "\\":
        return ch
    if "\udc80" <= ch <= "\udcff":  # an undecodable byte (surrogateescape)
        return f"\\x{ord(ch) - 0xDC00:02x}"
    return ch.encode("unicode_escape").decode("ascii")


def text_digest(value: str | bytes) -> str:
    """SHA-256 (hex) of ``value`` (UTF-8 for text): names a long or hostile value exactly
    without repeating it."""
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class RefusalReport:
    """What to log for one refusal: ``log`` is False while the key is being aggregated;
    ``count`` refusals (this one included) happened over ``seconds`` since the last line
    logged for the key."""

    log: bool
    count: int
    seconds: float


class RefusalLimiter:
    """Aggregates repeated refusals per key (e.g. ``(fingerprint, reason)``).

    The first refusal of a key is logged at once; later ones within ``interval`` seconds
    are counted, and the next refusal after the interval is logged with the count of
    everything since the last line (``count=N in Ts``). At most ``max_keys`` keys are
    remembered; the least recently refused is forgotten first (its pending count is then
    lost, which costs a line of detail, never a refusal). Thread-safe.
    """

    def __init__(
        self,
        *,
        interval: float = 10.0,
        max_keys: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval < 0 or max_keys < 1:
            raise ValueError("interval must be >= 0 and max_keys >= 1")
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (time of the last logged line, refusals since then)
        self._seen: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def refuse(self, key: Hashable) -> RefusalReport:
        """Count one refusal of ``key`` and say whether (and with what count) to log."""
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None:
                self._remember(key, now, 0)
                return RefusalReport(True, 1, 0.0)
            logged_at, pending = entry
            self._seen.move_to_end(key)
            if now - logged_at >= self.interval:
                self._seen[key] = (now, 0)
                return RefusalReport(True, pending + 1, now - logged_at)
            self._seen[key] = (logged_at, pending + 1)
            return RefusalReport(False, pending + 1, now - logged_at)

    def _remember(self, key: Hashable, now: float, pending: int) -> None:
        self._seen[key] = (now, pending)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
