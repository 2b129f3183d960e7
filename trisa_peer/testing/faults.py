"""Fault injection on loopback for the reliability tests: a directory that hangs.

:class:`HangingProxy` forwards TCP connections to a target (e.g. ``gds serve``) until
:meth:`~HangingProxy.hang` is called; from then on it accepts connections and reads
what arrives on every connection, old and new, but never forwards or answers a byte:
the peer sees a directory that is up and never replies, as opposed to one that is down
(connection refused). :meth:`~HangingProxy.resume` closes the hung connections (so
clients reconnect) and forwards again. 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["HangingProxy"]


class HangingProxy:
    def __init__(self, target_port: int, *, listen_port: int = 0) -> None:
        self.target = ("127.0.0.1", target_port)
        self._hung = threading.Event()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", listen_port), backlog=256)
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def hung(self) -> bool:
        return self._hung.is_set()

    def hang(self) -> None:
        self._hung.set()

    def resume(self) -> None:
        self._hung.clear()
        self._close_all()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self._close_all()

    def _close_all(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, set()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.add(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            if self._hung.is_set():
                threading.Thread(target=self._drain, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                with contextlib.suppress(OSError):
                    client.close()
                continue
            self._track(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _drain(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self._hung.is_set():  # swallow everything from now on: no answer
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if not self._hung.is_set():
                for sock in (src, dst):
                    with contextlib.suppress(OSError):
                        sock.close()
