"""Operational events of a node or directory: a pure hook the core calls, no-op by default.

The core (authenticate, lookup, the exchange, the directory and Sectigo services) calls
the functions here; subscribers -- :mod:`trisa_peer.metrics` when ``--metrics-listen``
is given -- receive them. With no subscriber an event costs a list iteration over
nothing. A subscriber that raises is logged once and never breaks the call it observes.

Every argument a subscriber may turn into a label is of a bounded type: a
:class:`~trisa_peer.steps.HandshakeStep`, a :class:`~trisa_peer.steps.Reason`, one of
:data:`OUTCOMES`, :data:`STATES`, :data:`DIRECTIONS`, :data:`LOOKUP_RESULTS`,
:data:`WEBHOOK_OUTCOMES`, or an integer TRISA code. :func:`bounded` maps any other value
to ``"other"``, so a caller's mistake cannot open a label set. The ``peer`` and
``envelope_id`` arguments are peer-supplied text: they reach log lines only (escaped,
capped by :func:`~trisa_peer.logtext.peer_text`), never labels.

:func:`begin_call` starts a call (one RPC, one HTTP request): a fresh request id and
start time in a context variable, which :func:`request_id` and :func:`elapsed` read, so
every log line of one call carries the same id (see :mod:`trisa_peer.logsetup`).

Pure: standard library and :mod:`trisa_peer.steps` only.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable

from .logtext import peer_text
from .steps import HandshakeStep, Reason

__all__ = [
    "DIRECTIONS",
    "LOOKUP_RESULTS",
    "OUTCOMES",
    "STATES",
    "WEBHOOK_OUTCOMES",
    "Listener",
    "begin_call",
    "bounded",
    "decision",
    "elapsed",
    "lookup",
    "request",
    "request_id",
    "subscribe",
    "transfer",
    "webhook_call",
]

OUTCOMES = frozenset({"accept", "reject"})
#: Transfer states as the transfer store records them.
STATES = frozenset({"accepted", "rejected", "pending", "repair", "expired", "sent",
                    "completed", "failed", "claimed", "undecodable"})
DIRECTIONS = frozenset({"incoming", "outgoing"})
LOOKUP_RESULTS = frozenset({"found", "not-found", "unavailable", "busy"})
WEBHOOK_OUTCOMES = frozenset({"accept", "reject", "pending", "repair", "error", "timeout",
                              "unreachable", "bad-answer"})

log = logging.getLogger("trisa_peer.events")
transfer_log = logging.getLogger("trisa_peer.transfer")


def bounded(value: str, allowed: frozenset[str]) -> str:
    """``value`` if it is in ``allowed``; ``"other"`` otherwise."""
    return value if value in allowed else "other"


class Listener:
    """Receives events; every method is a no-op here. Subclass and override."""

    def decision(self, step: HandshakeStep, outcome: str, reason: Reason) -> None:
        """A handshake decision (fresh or from the decision cache)."""

    def lookup(self, result: str, cached: bool, seconds: float) -> None:
        """A directory look-up: ``result`` in :data:`LOOKUP_RESULTS`; ``cached`` when
        the directory client answered from its cache."""

    def transfer(self, direction: str, state: str, code: int, seconds: float) -> None:
        """A transfer answered (incoming) or sent (outgoing): its state, TRISA error code
        (0 for none) and the call's latency so far."""

    def webhook_call(self, outcome: str, seconds: float) -> None:
        """One call of the back office's webhook."""

    def request(self, service: str, method: str, code: str, seconds: float) -> None:
        """One request served by the directory or the Sectigo service: ``service`` and
        ``method`` come from the server's own method table, ``code`` is the status."""


_listeners: tuple[Listener, ...] = ()
_lock = threading.Lock()
_failed: set[str] = set()
_call: contextvars.ContextVar[tuple[str, float] | None] = contextvars.ContextVar(
    "trisa_peer_call", default=None)


def subscribe(listener: Listener) -> Callable[[], None]:
    """Add ``listener``; returns the function that removes it again."""
    global _listeners
    with _lock:
        _listeners = (*_listeners, listener)

    def unsubscribe() -> None:
        global _listeners
        with _lock:
            _listeners = tuple(x for x in _listeners if x is not listener)

    return unsubscribe


def begin_call() -> str:
    """Start a call in the current context: a new request id (16 hex digits)."""
    rid = os.urandom(8).hex()
    _call.set((rid, time.monotonic()))
    return rid


def request_id() -> str | None:
    """The current call's request id; None outside a call."""
    call = _call.get()
    return call[0] if call is not None else None


def elapsed() -> float:
    """Seconds since :func:`begin_call` in this context (0 outside a call)."""
    call = _call.get()
    return time.monotonic() - call[1] if call is not None else 0.0


def _each(name: str, fn: Callable[[Listener], None]) -> None:
    for listener in _listeners:
        try:
            fn(listener)
        except Exception:
            if name not in _failed:  # once per event kind: a broken subscriber is a bug
                _failed.add(name)
                log.exception("event subscriber failed on %s", name)


def decision(step: HandshakeStep, outcome: str, reason: Reason) -> None:
    if _listeners:
        _each("decision", lambda x: x.decision(step, outcome, reason))


def lookup(result: str, cached: bool, seconds: float) -> None:
    if _listeners:
        _each("lookup", lambda x: x.lookup(result, cached, seconds))


def transfer(direction: str, state: str, code: int, *, peer: str, envelope_id: str,
             seconds: float | None = None) -> None:
    """A transfer's one line (INFO on ``trisa_peer.transfer``) and its event.
    ``seconds`` defaults to the time since :func:`begin_call`."""
    took = elapsed() if seconds is None else seconds
    if transfer_log.isEnabledFor(logging.INFO):
        _log_transfer(direction, state, code, peer, envelope_id, took)
    if _listeners:
        _each("transfer", lambda x: x.transfer(direction, state, code, took))


def _log_transfer(direction: str, state: str, code: int, peer: str, envelope_id: str,
                  took: float) -> None:
    peer, envelope_id = peer_text(peer), peer_text(envelope_id)
    transfer_log.info(
        "direction=%s peer=%s envelope=%s state=%s code=%d latency=%.3fs",
        direction, peer, envelope_id, state, code, took,
        extra={"event": "transfer", "direction": direction, "peer": peer,
               "envelope_id": envelope_id, "state": state, "code": code,
               "latency": round(took, 6)})


def webhook_call(outcome: str, seconds: float) -> None:
    """For the webhook client: one call and how it ended (:data:`WEBHOOK_OUTCOMES`)."""
    if _listeners:
        _each("webhook", lambda x: x.webhook_call(outcome, seconds))


def request(service: str, method: str, code: str, seconds: float) -> None:
    if _listeners:
        _each("request", lambda x: x.request(service, method, code, seconds))
