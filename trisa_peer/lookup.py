"""Looking a peer up in the directory as a handshake step (1 and 4), failing closed.

A missing or unverified record is :class:`~trisa_peer.errors.PeerNotRegisteredError`;
a directory that cannot answer is a :class:`~trisa_peer.errors.HandshakeError` with
reason :attr:`~trisa_peer.steps.Reason.DIRECTORY_UNAVAILABLE` (the caller should try
again later, and a server answers UNAVAILABLE).

A directory that hangs would hold every caller that waits on it: :class:`LookupGate`
bounds how many look-ups run at once; one over the bound is refused at once with reason
:attr:`~trisa_peer.steps.Reason.DIRECTORY_BUSY` (UNAVAILABLE, fail closed).
:data:`DIRECTORY_DOWN` holds the reasons that mean "no answer" (as opposed to a
negative answer): only those may be covered by a grace.

Pure: imports neither grpc nor the generated protobuf code.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from . import events
from .errors import (
    DirectoryError,
    DirectoryNotFoundError,
    HandshakeError,
    PeerNotRegisteredError,
    TrisaPeerError,
)
from .logtext import peer_text
from .records import DirectoryLookup, PeerRecord
from .steps import HandshakeStep, Reason

__all__ = ["DIRECTORY_DOWN", "LookupGate", "answer_age", "lookup_peer"]

#: Reasons that mean the directory did not answer (down, timed out, over the bound).
DIRECTORY_DOWN = frozenset({Reason.DIRECTORY_UNAVAILABLE, Reason.DIRECTORY_BUSY})


def answer_age(record: PeerRecord) -> float:
    """Seconds since the directory gave ``record`` (0 when unknown): a record served
    from the directory client's cache is as old as the answer it came from."""
    if record.fetched_at is None:
        return 0.0
    return max(0.0, (datetime.now(UTC) - record.fetched_at).total_seconds())


class LookupGate:
    """At most ``limit`` directory look-ups at once; more are refused without waiting."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)
        self.refused = 0  # look-ups refused over the bound since start

    @contextlib.contextmanager
    def slot(self, cn: str, *, step: HandshakeStep) -> Iterator[None]:
        if not self._free.acquire(blocking=False):
            self.refused += 1
            events.lookup("busy", False, 0.0)
            raise HandshakeError(
                f"directory busy ({self.limit} look-ups in flight) while looking up "
                f"{cn!r}; try again later",
                step=step, peer=cn, reason=Reason.DIRECTORY_BUSY,
            )
        try:
            yield
        finally:
            self._free.release()

log = logging.getLogger("trisa_peer.handshake")


def lookup_peer(
    directory: DirectoryLookup, cn: str, *, step: HandshakeStep, fresh: bool = False
) -> PeerRecord:
    """The VERIFIED record of ``cn`` (a common name or id), as step ``step``."""
    if not cn.strip():
        raise PeerNotRegisteredError(
            "the certificate has no common name to look up", step=step, reason=Reason.NO_COMMON_NAME
        )
    try:
        return _observed(directory, cn, fresh)
    except DirectoryNotFoundError as exc:
        status = None
        with contextlib.suppress(DirectoryError):
            status = directory.verification_status(cn)
        if status and status != "VERIFIED":
            why, reason = f"is registered but not VERIFIED (status {status})", Reason.NOT_VERIFIED
        else:
            why, reason = "has no VERIFIED directory record", Reason.NOT_REGISTERED
        raise PeerNotRegisteredError(f"{cn!r} {why}", step=step, peer=cn, reason=reason) from exc
    except DirectoryError as exc:
        # The detail (addresses, gRPC text) goes to our log, not to the peer.
        log.warning("directory unavailable while looking up %s: %s", peer_text(cn),
                    peer_text(str(exc), 300))
        raise HandshakeError(
            f"directory unavailable while looking up {cn!r}; try again later",
            step=step,
            peer=cn,
            reason=Reason.DIRECTORY_UNAVAILABLE,
        ) from exc
    except TrisaPeerError as exc:  # e.g. a name the directory client refuses
        raise PeerNotRegisteredError(
            f"cannot look {cn!r} up in the directory: {exc}", step=step, peer=cn,
            reason=Reason.NOT_REGISTERED,
        ) from exc


def _observed(directory: DirectoryLookup, cn: str, fresh: bool) -> PeerRecord:
    """``directory.lookup`` with its event (:func:`trisa_peer.events.lookup`): found,
    not found or unavailable, and whether the answer came from the client's cache (its
    ``fetched_at`` is older than this call)."""
    started, clock = datetime.now(UTC), time.monotonic()
    try:
        record = directory.lookup(common_name=cn, fresh=fresh)
    except DirectoryNotFoundError:
        events.lookup("not-found", False, time.monotonic() - clock)
        raise
    except DirectoryError:
        events.lookup("unavailable", False, time.monotonic() - clock)
        raise
    cached = record.fetched_at is not None and record.fetched_at < started
    events.lookup("found", cached, time.monotonic() - clock)
    return record
