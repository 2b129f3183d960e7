"""``--metrics-listen`` and ``--log-format`` of ``serve`` and ``gds serve``.

:func:`add_metrics_args` adds both options; :func:`start_metrics` starts the metrics and
probe listener (:mod:`trisa_peer.metrics`, imported only here and only when the option
is given, so a node without it never loads ``prometheus_client``). ``--log-format`` is
applied by the runner (:mod:`trisa_peer.logsetup`) before the command runs.

Checked: the address is ``[HOST:]PORT`` (host 127.0.0.1 when left out); the extra is
installed; the port can be bound (one line, exit 1 otherwise). With ``--workers`` above
1, prometheus-client's multiprocess mode: one scrape of worker 0's listener sees every
worker. A non-loopback host is allowed, with a warning, since the listener has no
authentication.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from ..errors import ConfigurationError
from ..logsetup import LOG_FORMATS
from .options import host_port_arg

__all__ = ["add_log_format_arg", "add_metrics_args", "directory_sources", "metrics_for_workers",
           "node_sources", "start_metrics"]

#: prometheus-client's switch to multiprocess mode (read when it is first imported)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def add_metrics_args(parser: Any) -> None:
    group = parser.add_argument_group("metrics, probes and logs")
    group.add_argument(
        "--metrics-listen", metavar="[HOST:]PORT",
        help="serve /metrics (Prometheus), /livez and /readyz over plain HTTP on this "
             "address (host 127.0.0.1 when left out; no authentication: keep it on "
             "loopback or a private network; needs the 'metrics' extra)")
    add_log_format_arg(group)


def add_log_format_arg(parser: Any) -> None:
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text",
        help="log lines as text (default) or one JSON object per line with UTC "
             "timestamps and a request id")


@contextlib.contextmanager
def metrics_for_workers(args: argparse.Namespace) -> Iterator[None]:
    """Around ``supervise()``: with ``--metrics-listen`` and ``--workers`` above 1, a
    directory of this supervisor's own for prometheus-client's multiprocess mode (set in
    the environment before any worker imports the library, removed at the end), so that
    the one listener, served by worker 0, sees every worker's counts."""
    if not getattr(args, "metrics_listen", None) or int(getattr(args, "workers", 1) or 1) < 2:
        yield
        return
    _address(args.metrics_listen)  # a mistake is one line before any worker starts
    path = tempfile.mkdtemp(prefix="trisa-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def _address(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    return host_port_arg("--metrics-listen", text)


def start_metrics(
    args: argparse.Namespace,
    *,
    problem: Callable[[], str | None],
    own: Callable[[], Any] | None = None,
    roots: Callable[[], Iterable[Any]] | None = None,
    pending: Callable[[], Iterable[tuple[str, datetime, datetime | None]]] | None = None,
    worker: Any = None,
) -> Callable[[], None]:
    """Start the listener when ``--metrics-listen`` is given; returns its stop function
    (a no-op without the option). Under ``--workers`` (``worker`` given, multiprocess
    mode set up by :func:`metrics_for_workers`) every worker counts into the shared
    directory and worker 0 alone serves the listener, reading all of it."""
    if not getattr(args, "metrics_listen", None):
        return lambda: None
    host, port = _address(args.metrics_listen)
    shared = os.environ.get(MULTIPROC_ENV) if worker is not None else None
    try:
        from prometheus_client import CollectorRegistry, multiprocess

        from ..metrics import Metrics, NodeCollector
        from ..metrics.probes import ProbeServer
    except ImportError:
        raise ConfigurationError("--metrics-listen needs prometheus-client: "
                                 "pip install 'trisa-peer[metrics]'") from None
    from ..directory.server import is_loopback

    metrics = Metrics()
    metrics.workers.set(1)

    def forget() -> None:
        metrics.close()
        if shared:
            multiprocess.mark_process_dead(os.getpid(), shared)  # type: ignore[no-untyped-call]

    if shared and worker.index != 0:
        metrics.subscribe()
        return forget
    registry = metrics.registry
    if shared:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=shared)  # type: ignore[no-untyped-call]
    registry.register(NodeCollector(own=own, roots=roots, pending=pending, problem=problem))
    server = ProbeServer(host, port, registry, problem)
    metrics.subscribe()
    bound = server.start()
    if not is_loopback(host):
        print(f"trisa-peer: warning: --metrics-listen {host}: the metrics listener has no "
              "authentication", file=sys.stderr, flush=True)
    print(f"metrics and probes on http://{host}:{bound}/metrics", flush=True)

    def stop() -> None:
        server.stop()
        forget()

    return stop


def node_sources(node: Any) -> dict[str, Any]:
    """What :func:`start_metrics` reads from a :class:`~trisa_peer.network.node.TrisaNode`."""
    from ..network.node import reply_deadline, stored_time

    def pending() -> list[tuple[str, datetime, datetime | None]]:
        return [(row.direction, stored_time(row.created_at), reply_deadline(row))
                for row in node.store.pending()]

    return {
        "problem": node.server.problem,
        "own": lambda: node.material.current().identity.leaf,
        "roots": lambda: node.material.current().pool.roots,
        "pending": pending,
    }


def directory_sources(db: str, tls: tuple[bytes, bytes] | None) -> dict[str, Any]:
    """What :func:`start_metrics` reads for ``gds serve``: ready while the database file
    is where it was opened and the server certificate (with TLS) is valid."""
    from pathlib import Path

    from cryptography import x509

    from ..reload import expiry_problem

    leaf = x509.load_pem_x509_certificate(tls[0]) if tls else None

    def problem() -> str | None:
        if "://" not in db and not Path(db).exists():  # a PostgreSQL URL: not checked
            return f"the directory database {db} is gone"
        return expiry_problem(leaf, datetime.now(UTC)) if leaf is not None else None

    return {"problem": problem, "own": (lambda: leaf) if leaf is not None else None}
