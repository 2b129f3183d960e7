"""Small network helpers shared by the servers (no gRPC here)."""

from __future__ import annotations

import errno
import socket

__all__ = ["bind_problem"]


def bind_problem(listen: str) -> str | None:
    """Why ``listen`` cannot be bound, in words, or ``None`` when a plain bind works.

    Probed before gRPC binds (gRPC's C core would print its own error lines and only
    say "Failed to bind"); port 0 always binds.
    """
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
        if port == 0:
            return None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # as gRPC does: TIME_WAIT leftovers do not block, a listener does
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except ValueError:
        return "not HOST:PORT"
    except socket.gaierror:
        return None  # a host name gRPC resolves itself
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "address already in use"
        if exc.errno == errno.EADDRNOTAVAIL:
            return "address not available on this host"
        if exc.errno == errno.EACCES:
            return "permission denied"
        return exc.strerror or str(exc)
    return None
