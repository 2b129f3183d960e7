"""The metrics and probe listener: ``/metrics``, ``/livez``, ``/readyz`` over plain HTTP.

A separate listener from the gRPC port, loopback unless the operator binds it elsewhere,
without authentication: it serves nothing personal (counters, gauges, and the reason a
process is not ready, which names only its own certificate or store). ``/livez``
answers 200 while the process serves HTTP at all; ``/readyz`` answers 200 when
``problem()`` returns None and 503 with the problem otherwise. Directory and webhook
reachability are metrics, not readiness: one directory outage must not make every
replica unready at once. Only GET and HEAD; any other path is 404. Requests are not
logged (a scrape every few seconds is noise).
"""

from __future__ import annotations

import http.server
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..errors import ConfigurationError

__all__ = ["ProbeServer"]

log = logging.getLogger("trisa_peer.metrics")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    problem: Callable[[], str | None]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line instead of socketserver's traceback on stderr."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            log.warning("metrics listener: request failed: %s", type(exc).__name__)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes and probes are not logged

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body = generate_latest(self.server.registry)
            except Exception as exc:  # a collector failed: one line, not a traceback
                log.warning("metrics: scrape failed: %s: %s", type(exc).__name__, exc)
                self._answer(500, b"scrape failed\n")
                return
            self._answer(200, body, CONTENT_TYPE_LATEST)
        elif path == "/livez":
            self._answer(200, b"ok\n")
        elif path == "/readyz":
            try:
                problem = self.server.problem()
            except Exception as exc:  # fail closed: a check that breaks is not ready
                problem = f"readiness check failed ({type(exc).__name__})"
            if problem is None:
                self._answer(200, b"ready\n")
            else:
                self._answer(503, f"not ready: {problem}\n".encode())
        else:
            self._answer(404, b"not found\n")

    do_HEAD = do_GET

    def _answer(self, status: int, body: bytes,
                content_type: str = "text/plain; charset=utf-8") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class ProbeServer:
    """Serves ``registry`` and ``problem`` on ``host:port`` (port 0: any free port)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 problem: Callable[[], str | None]) -> None:
        try:
            self._server = _Server((host, port), _Handler)
        except OSError as exc:
            raise ConfigurationError(
                f"--metrics-listen {host}:{port}: cannot listen: {exc.strerror or exc}") from None
        self._server.registry = registry
        self._server.problem = problem
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> int:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="trisa-metrics", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
