"""The HTTP API's listener: uvicorn on a thread with its own event loop, in the node's
process, started after the node and stopped before it.

Checked at start (one line each, nothing left listening): ``HOST:PORT`` is an address;
off loopback a server certificate, its key and a client CA are all given (TLS 1.2+ with
a *required* client certificate that chains to the CA: mutual TLS), otherwise the start
is refused; the certificate, key and CA load; the port binds. On loopback TLS is optional
(given all three, it is used the same way). The bearer token (:mod:`.auth`) is needed
in both cases. Not checked: the client certificate's name (any certificate the client
CA issued is accepted: the CA is the operator's own, for its back office), revocation.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError, UsageError
from ..netutil import is_loopback, split_host_port

__all__ = ["ApiServer", "TlsFiles", "is_loopback"]

log = logging.getLogger("trisa_peer.api")

START_TIMEOUT = 10.0


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str
    client_ca: str



def parse_listen(listen: str, tls: TlsFiles | None) -> tuple[str, int]:
    """``HOST:PORT`` of ``--api-listen``; :class:`UsageError` when it is not an address
    or when it is off loopback without TLS files."""
    try:
        host, port = split_host_port(listen, allow_port_zero=True)
    except ValueError as exc:
        raise UsageError(f"--api-listen {listen[:60]!r}: {exc}") from None
    if not is_loopback(host) and tls is None:
        raise UsageError(f"--api-listen {host}: off loopback the API needs mutual TLS: "
                         "give --api-tls-cert, --api-tls-key and --api-client-ca")
    return host, port


def server_context(tls: TlsFiles) -> ssl.SSLContext:
    """TLS 1.2+ server context that requires a client certificate from ``client_ca``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"--api-tls-cert/--api-tls-key: cannot load "
                                 f"{tls.cert}: {getattr(exc, 'strerror', None) or exc}"
                                 ) from None
    try:
        ctx.load_verify_locations(cafile=tls.client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"--api-client-ca: cannot load {tls.client_ca}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
    return ctx


class ApiServer:
    """Serves ``app`` on ``listen``; :meth:`start` returns the bound port."""

    def __init__(self, app: Any, listen: str, *, tls: TlsFiles | None = None) -> None:
        self.host, self.requested_port = parse_listen(listen, tls)
        self.context = server_context(tls) if tls is not None else None
        self.app = app
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.context is not None else "http"

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.requested_port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ConfigurationError(f"--api-listen {self.host}:{self.requested_port}: "
                                     f"cannot listen: {exc.strerror or exc}") from None
        sock.setblocking(False)
        return sock

    def start(self) -> int:
        import uvicorn

        sock = self._bind()
        self.port = int(sock.getsockname()[1])
        context = self.context
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off",
            server_header=False, timeout_graceful_shutdown=5, loop="asyncio",
            ssl_context_factory=(lambda _c, _d: context) if context is not None else None,
        )
        server = uvicorn.Server(config)
        self._server = server

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as exc:  # reported by start() or logged
                self._failed = exc
                if server.started:
                    log.error("the API server stopped: %s", type(exc).__name__)
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name="trisa-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.02)
        if not server.started:
            self.stop()
            raise ConfigurationError(f"--api-listen: the API server did not start: "
                                     f"{self._failed or 'it exited'}")
        log.info("API on %s://%s:%d", self.scheme, self.host, self.port)
        return self.port

    def stop(self) -> None:
        """Stop accepting, finish requests in flight (at most 5 s); idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(START_TIMEOUT)
