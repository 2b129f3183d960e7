"""Prometheus metrics of a node or directory, fed by :mod:`trisa_peer.events`.

Imported only when ``--metrics-listen`` is given (it needs the ``metrics`` extra,
``prometheus-client``). :class:`Metrics` subscribes to the events and owns its own
registry (several in one process do not collide); :class:`NodeCollector` adds what is
read at scrape time: certificate expiry, pending transfers, readiness.

Label values are bounded by construction: steps and reasons are enums, states,
directions and outcomes go through :func:`~trisa_peer.events.bounded`, TRISA codes
outside the protocol's code list become ``other``. Peer-supplied text (common names,
envelope ids) is never a label; certificates are labelled by the operator's own
configuration (``own``, ``root`` and the root's SHA-256 fingerprint prefix).
Not checked here: whether the node is serving -- that is the probe server's business.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import events
from .._pb.trisa.api.v1beta1 import errors_pb2
from ..certs import fingerprint
from ..errors import TrisaPeerError
from ..steps import HandshakeStep, Reason

__all__ = ["Metrics", "NodeCollector", "code_label"]

# no ``*_created`` series: half the series count, and nothing a dashboard here uses
disable_created_metrics()  # type: ignore[no-untyped-call]

log = logging.getLogger("trisa_peer.metrics")

_CODES = frozenset(errors_pb2.Error.Code.values())
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def code_label(code: int) -> str:
    """A TRISA error code as a label: its protocol name, ``other`` if unknown."""
    return errors_pb2.Error.Code.Name(code) if code in _CODES else "other"  # type: ignore[arg-type]


class Metrics(events.Listener):
    """Counters and histograms of the events; ``subscribe()`` starts receiving them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "trisa_handshake_decisions", "Handshake decisions by step, outcome and reason",
            ["step", "outcome", "reason"], registry=r)
        self.lookups = Counter(
            "trisa_directory_lookups", "Directory look-ups by result; cached: answered "
            "from the directory client's cache", ["result", "cached"], registry=r)
        self.lookup_seconds = Histogram(
            "trisa_directory_lookup_seconds", "Directory look-up latency", ["cached"],
            buckets=_LATENCY, registry=r)
        self.directory_up = Gauge(
            "trisa_directory_reachable", "1 when the last directory look-up got an answer, "
            "0 when the directory was unavailable", multiprocess_mode="mostrecent", registry=r)
        self.workers = Gauge(
            "trisa_workers", "Processes counting into these metrics (--workers)",
            multiprocess_mode="livesum", registry=r)
        self.transfers = Counter(
            "trisa_transfers", "Transfers answered (incoming) or sent (outgoing) by state",
            ["direction", "state"], registry=r)
        self.transfer_seconds = Histogram(
            "trisa_transfer_seconds", "Transfer latency, from the start of the call",
            ["direction"], buckets=_LATENCY, registry=r)
        self.envelope_errors = Counter(
            "trisa_envelope_errors", "Error envelopes by TRISA code, sent (incoming "
            "transfers) or received (outgoing)", ["direction", "code"], registry=r)
        self.webhook_calls = Counter(
            "trisa_webhook_calls", "Calls of the back office's webhook by outcome",
            ["outcome"], registry=r)
        self.webhook_seconds = Histogram(
            "trisa_webhook_seconds", "Webhook call latency", buckets=_LATENCY, registry=r)
        self.requests = Counter(
            "trisa_requests", "Requests served by the directory or the Sectigo service",
            ["service", "method", "code"], registry=r)
        self.request_seconds = Histogram(
            "trisa_request_seconds", "Request latency of the directory or Sectigo service",
            ["service"], buckets=_LATENCY, registry=r)
        self._unsubscribe: Callable[[], None] | None = None

    def subscribe(self) -> Metrics:
        if self._unsubscribe is None:
            self._unsubscribe = events.subscribe(self)
        return self

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # ------------------------------------------------------------------ events

    def decision(self, step: HandshakeStep, outcome: str, reason: Reason) -> None:
        self.decisions.labels(str(int(HandshakeStep(step))),
                              events.bounded(outcome, events.OUTCOMES),
                              Reason(reason).value).inc()

    def lookup(self, result: str, cached: bool, seconds: float) -> None:
        result = events.bounded(result, events.LOOKUP_RESULTS)
        self.lookups.labels(result, "true" if cached else "false").inc()
        if result in ("found", "not-found"):
            self.directory_up.set(1)
            self.lookup_seconds.labels("true" if cached else "false").observe(seconds)
        elif result == "unavailable":
            self.directory_up.set(0)

    def transfer(self, direction: str, state: str, code: int, seconds: float) -> None:
        direction = events.bounded(direction, events.DIRECTIONS)
        self.transfers.labels(direction, events.bounded(state, events.STATES)).inc()
        self.transfer_seconds.labels(direction).observe(seconds)
        if code:
            self.envelope_errors.labels(direction, code_label(code)).inc()

    def webhook_call(self, outcome: str, seconds: float) -> None:
        self.webhook_calls.labels(events.bounded(outcome, events.WEBHOOK_OUTCOMES)).inc()
        self.webhook_seconds.observe(seconds)

    def request(self, service: str, method: str, code: str, seconds: float) -> None:
        self.requests.labels(service, method, code).inc()
        self.request_seconds.labels(service).observe(seconds)


class NodeCollector(Collector):
    """Read at scrape time: certificate expiry, pending transfers, readiness.

    ``own`` returns the node's own leaf certificate, ``roots`` its trust anchors,
    ``pending`` the pending rows (``direction``, ``created_at``, ``deadline`` as
    datetimes or None), ``problem`` why the process is not ready (None when ready).
    Any of them may be None (a directory has no transfers).
    """

    def __init__(
        self,
        *,
        own: Callable[[], Any] | None = None,
        roots: Callable[[], Iterable[Any]] | None = None,
        pending: Callable[[], Iterable[tuple[str, datetime, datetime | None]]] | None = None,
        problem: Callable[[], str | None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._own, self._roots, self._pending, self._problem = own, roots, pending, problem
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock()
        expiry = GaugeMetricFamily(
            "trisa_certificate_expiry_seconds",
            "Seconds until a certificate expires (negative once expired): the node's own "
            "(certificate=own) and each trust root (certificate=root)",
            labels=["certificate", "fingerprint"])
        if self._own is not None:
            leaf = self._own()
            expiry.add_metric(["own", fingerprint(leaf)[:16]], _left(leaf, now))
        for root in self._roots() if self._roots is not None else ():
            expiry.add_metric(["root", fingerprint(root)[:16]], _left(root, now))
        yield expiry
        rows: list[tuple[str, datetime, datetime | None]] | None = None
        if self._pending is not None:
            try:
                rows = list(self._pending())
            except TrisaPeerError as exc:  # the store broke: /readyz says so; scrape the rest
                log.warning("metrics: cannot read pending transfers: %s", exc)
        if rows is not None:
            count = {"incoming": 0.0, "outgoing": 0.0}
            oldest = {"incoming": 0.0, "outgoing": 0.0}
            overdue = {"incoming": 0.0, "outgoing": 0.0}
            for direction, created, deadline in rows:
                d = direction if direction in count else "incoming"
                count[d] += 1
                oldest[d] = max(oldest[d], (now - created).total_seconds())
                if deadline is not None and now > deadline:
                    overdue[d] += 1
            for name, text, values in (
                ("trisa_pending_transfers", "Transfers awaiting an answer", count),
                ("trisa_pending_oldest_age_seconds", "Age of the oldest pending transfer",
                 oldest),
                ("trisa_pending_overdue", "Pending transfers past their reply deadline",
                 overdue),
            ):
                family = GaugeMetricFamily(name, text, labels=["direction"])
                for d, v in values.items():
                    family.add_metric([d], v)
                yield family
        if self._problem is not None:
            yield GaugeMetricFamily("trisa_ready", "1 when /readyz answers 200",
                                    value=0.0 if self._problem() else 1.0)


def _left(cert: Any, now: datetime) -> float:
    return float((cert.not_valid_after_utc - now).total_seconds())
