"""Small network helpers shared by the servers (no gRPC here)."""

from __future__ import annotations

import errno
import ipaddress
import socket

from .limits import port_shared

__all__ = ["bind_problem", "split_host_port", "split_resolve"]


def split_host_port(
    text: str, *, allow_port_zero: bool = False, default_host: str | None = None
) -> tuple[str, int]:
    """``"host:port"`` → ``("host", port)``; brackets around an IPv6 literal are removed.

    The port must be 1-65535 (0 too with ``allow_port_zero``, "any free port" for a
    listener). An empty host is an error unless the caller names ``default_host``: a
    listener never widens to every interface by accident. Raises :class:`ValueError`
    saying what is wrong; callers add which option or field it came from.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port_text.isdigit():
        raise ValueError("not HOST:PORT")
    port = int(port_text)
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    if not host:
        if default_host is None:
            raise ValueError("the host is missing")
        host = default_host
    return host, port


def split_resolve(spec: str) -> tuple[str, str]:
    """curl's ``HOST:PORT:ADDRESS`` → ``("host:port", "address:port")``: dial HOST:PORT
    at ADDRESS (brackets around an IPv6 ADDRESS removed). Raises :class:`ValueError`."""
    parts = spec.rsplit(":", 1)
    head, address = (parts[0], parts[1]) if len(parts) == 2 else ("", "")
    host, _, port = head.rpartition(":")
    address = address.strip("[]")
    if not host or not port.isdigit() or not address:
        raise ValueError(f"{spec!r} is not HOST:PORT:ADDRESS")
    return f"{host.lower()}:{port}", f"{address}:{port}"


def bind_problem(listen: str) -> str | None:
    """Why ``listen`` cannot be bound, in words, or ``None`` when a plain bind works.

    Probed before gRPC binds (gRPC's C core would print its own error lines and only
    say "Failed to bind"); port 0 always binds. In a supervised worker
    (:func:`~trisa_peer.limits.port_shared`) the probe binds with ``SO_REUSEPORT``, as
    the worker's server does, to join the port its supervisor reserved.
    """
    try:
        host, port = split_host_port(listen, allow_port_zero=True, default_host="127.0.0.1")
        if port == 0:
            return None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # as gRPC does: TIME_WAIT leftovers do not block, a listener does
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if port_shared():
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); anything else,
    including a name that might resolve to loopback, counts as off loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
