"""Binding a gRPC server to its ``--listen`` address, the same way for every server.

:func:`listen_and_start` probes the address first (``netutil.bind_problem``: gRPC's C
core would print its own error lines and only return 0), binds with the given
credentials (plaintext without), starts the server and returns the port; any failure
stops the server and is one :class:`~trisa_peer.errors.ConfigurationError` line
("cannot listen on HOST:PORT: why"). Used by the node, the directory and the
directory's members endpoint.
"""

from __future__ import annotations

import grpc

from ..errors import ConfigurationError
from ..netutil import bind_problem

__all__ = ["listen_and_start"]


def listen_and_start(server: grpc.Server, listen: str,
                     credentials: grpc.ServerCredentials | None) -> int:
    """Bind ``listen`` and start ``server``; the bound port."""
    problem = bind_problem(listen)
    try:
        if problem is not None:
            raise ConfigurationError(f"cannot listen on {listen}: {problem}")
        try:
            port = (server.add_secure_port(listen, credentials) if credentials is not None
                    else server.add_insecure_port(listen))
        except RuntimeError as exc:
            raise ConfigurationError(f"cannot listen on {listen}: {exc}") from exc
        if not port:
            raise ConfigurationError(f"cannot listen on {listen}")
    except ConfigurationError:
        server.stop(None)
        raise
    server.start()
    return int(port)
