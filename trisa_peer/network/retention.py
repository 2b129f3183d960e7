"""The node's periodic retention purge (``serve --retention-days N``).

:class:`RetentionPurger` runs :meth:`~trisa_peer.network.store.TransferStore.purge` in a
background thread: one bounded batch per pass (each transfer in its own short
transaction), a pass at start and then every ``interval`` seconds; after a full batch
the next pass comes sooner (a backlog drains without one long transaction). A failed
pass is logged in one line (no payloads, no URLs with passwords) and retried at the
next one; it never stops the node. What a purge keeps and never touches (pending
transfers) is the store's business, not this module's. Not checked: the wall clock
(a clock set back only delays the purge).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from ..errors import StoreError, TrisaPeerError
from .store import DEFAULT_PURGE_BATCH, TransferStore

__all__ = ["DEFAULT_PURGE_INTERVAL", "RetentionPurger"]

log = logging.getLogger("trisa_peer.network")

#: seconds between two passes of the node's purge
DEFAULT_PURGE_INTERVAL = 3600.0
#: at most this long between passes while a backlog drains (a full batch was purged)
_BACKLOG_PAUSE = 1.0


class RetentionPurger:
    """Purge ``store`` of envelopes older than ``older_than``, periodically.

    ``on_pass`` (tests, metrics) is called with the number of transfers each pass purged.
    """

    def __init__(
        self,
        store: TransferStore,
        *,
        older_than: timedelta,
        interval: float = DEFAULT_PURGE_INTERVAL,
        batch: int = DEFAULT_PURGE_BATCH,
        on_pass: Callable[[int], None] | None = None,
    ) -> None:
        if older_than <= timedelta(0) or interval <= 0 or batch < 1:
            raise StoreError("retention needs a positive age, interval and batch size")
        self.store = store
        self.older_than = older_than
        self.interval = interval
        self.batch = batch
        self._on_pass = on_pass
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="retention-purge", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current transaction (a pass in progress ends early)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> int:
        """One pass: at most ``batch`` transfers; returns how many were purged."""
        count = self.store.purge(self.older_than, batch=self.batch)
        if self._on_pass is not None:
            self._on_pass(count)
        return count

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.interval
            try:
                if self.run_once() >= self.batch:
                    wait = min(self.interval, _BACKLOG_PAUSE)
            except TrisaPeerError as exc:
                log.warning("retention purge failed (retried in %gs): %s", wait, exc)
            except Exception as exc:  # a failed pass must not stop the node
                log.warning("retention purge failed (retried in %gs): %s", wait,
                            type(exc).__name__)
            self._stop.wait(wait)
