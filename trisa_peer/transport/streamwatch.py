"""Long-lived streams re-check their peer (issue 14: rotation and compromise).

A ``TransferStream`` is authenticated when it opens; without more, a peer whose
certificate was later revoked, or whose superseded certificate's reissue grace ended,
could keep the stream forever. Two re-checks close that:

* every message on a stream re-runs the peer decision
  (:meth:`~trisa_peer.authenticate.PeerAuthenticator.authenticate_pem`: a dictionary hit
  while the cached decision holds, a new decision once it expired); a refusal ends the
  stream with the refusal's status (:mod:`.interceptor`);
* :class:`StreamWatch` re-runs it every ``interval`` seconds for streams that are idle,
  and cancels a refused one (the client sees ``CANCELLED``; the server logs why).

So a stream is cut at most ``interval`` seconds after its peer's cached decision
expires (``decision_ttl``, or the end of a superseded certificate's grace). The watch
thread runs only while streams are open (it exits when the last one ends), so nothing
lingers after a server stops. Not checked here: what the decision is (that is
:mod:`trisa_peer.authenticate`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..errors import HandshakeError
from ..logtext import peer_text

__all__ = ["DEFAULT_STREAM_RECHECK", "StreamWatch"]

log = logging.getLogger("trisa_peer.transport")

#: Seconds between two re-checks of an idle stream's peer.
DEFAULT_STREAM_RECHECK = 5.0

Check = Callable[[], object]


class StreamWatch:
    """Re-check the peers of open streams every ``interval`` seconds; cancel refused ones."""

    def __init__(self, interval: float = DEFAULT_STREAM_RECHECK) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval = interval
        self._streams: dict[int, tuple[Any, Check]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._next = 0
        #: streams cancelled by the watch since start
        self.cut = 0

    def open(self, context: Any, check: Check) -> Callable[[], None]:
        """Watch the stream of ``context``; ``check`` raises HandshakeError to refuse.
        Returns the function that stops watching it (call it when the stream ends)."""
        with self._lock:
            self._next += 1
            key = self._next
            self._streams[key] = (context, check)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="stream-watch",
                                                daemon=True)
                self._thread.start()

        def close() -> None:
            with self._lock:
                self._streams.pop(key, None)
                if not self._streams:
                    self._wake.notify_all()  # let the thread end now
        return close

    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._wake.wait(self.interval)
                if not self._streams:
                    self._thread = None
                    return
                streams = list(self._streams.items())
            for key, (context, check) in streams:
                self._check_one(key, context, check)

    def _check_one(self, key: int, context: Any, check: Check) -> None:
        try:
            check()
        except HandshakeError as exc:
            with self._lock:
                if self._streams.pop(key, None) is None:
                    return  # ended meanwhile
                self.cut += 1
            log.info("peer=%s outcome=reject reason=%s detail='open stream cut: %s'",
                     peer_text(exc.peer or "?"), exc.reason, peer_text(str(exc), 200))
            context.cancel()
        except Exception:
            log.exception("stream re-check failed unexpectedly; cutting the stream")
            with self._lock:
                self._streams.pop(key, None)
            context.cancel()
