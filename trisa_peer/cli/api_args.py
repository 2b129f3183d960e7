"""``serve --api-listen``: the back-office HTTP API's flags, checks and start.

Off by default. Flags only (no ``TRISA_PEER_*`` variable or ``--config`` key yet). The
checks run before the node starts, so a bad API setting refuses the whole ``serve``
with one line and nothing listening: ``--api-listen`` needs ``--api-token-file``; off
loopback it needs ``--api-tls-cert``, ``--api-tls-key`` and ``--api-client-ca``
(mutual TLS); it needs ``--workers 1`` (the API runs in the node's process and a second
worker would contend for its port; a back office wanting more throughput runs several
single-worker replicas on one PostgreSQL store); the ``api`` extra must be installed.
Starlette and uvicorn are imported only here, only when ``--api-listen`` is given.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigurationError, UsageError

__all__ = ["add_api_args", "check_api_args", "start_api"]

INSTALL_HINT = "pip install 'trisa-peer[api]'"


def add_api_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("back-office HTTP API (off unless --api-listen)")
    group.add_argument("--api-listen", metavar="HOST:PORT",
                       help="serve the JSON API (docs/api.md) on this address; off loopback "
                       "mutual TLS is required (needs the api extra and --workers 1)")
    group.add_argument("--api-token-file", metavar="FILE",
                       help="bearer tokens of the API, one per line (a private 0600 file, "
                       "re-read when it changes: rotate by adding the new token first)")
    group.add_argument("--api-tls-cert", metavar="FILE", help="the API's TLS certificate "
                       "chain (PEM)")
    group.add_argument("--api-tls-key", metavar="FILE", help="its private key (PEM)")
    group.add_argument("--api-client-ca", metavar="FILE",
                       help="CA certificates (PEM) the API's clients' certificates must "
                       "chain to; required off loopback")


def _tls(args: argparse.Namespace) -> Any:
    from ..api.server import TlsFiles

    given = [args.api_tls_cert, args.api_tls_key, args.api_client_ca]
    if not any(given):
        return None
    if not all(given):
        raise UsageError("--api-tls-cert, --api-tls-key and --api-client-ca go together")
    return TlsFiles(args.api_tls_cert, args.api_tls_key, args.api_client_ca)


def check_api_args(args: argparse.Namespace) -> None:
    """Refuse a ``serve`` whose API settings cannot work (before anything starts)."""
    if not args.api_listen:
        extra = [f for f in ("api_token_file", "api_tls_cert", "api_tls_key", "api_client_ca")
                 if getattr(args, f)]
        if extra:
            raise UsageError(f"--{extra[0].replace('_', '-')} needs --api-listen")
        return
    if (args.workers or 1) > 1:
        raise UsageError("--api-listen needs --workers 1: the API runs in the node's "
                         "process (run replicas for more; see docs/api.md)")
    if not args.api_token_file:
        raise UsageError("--api-listen needs --api-token-file: no API without "
                         "authentication")
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigurationError(f"--api-listen needs the api extra: {INSTALL_HINT}") from None
    from ..api.auth import read_tokens
    from ..api.server import parse_listen

    parse_listen(args.api_listen, _tls(args))
    read_tokens(args.api_token_file)


def start_api(args: argparse.Namespace, node: Any) -> Any:
    """Start the API over a started ``node``; returns its server (``stop()`` it before
    the node) or None without ``--api-listen``. Prints one line with its address."""
    if not args.api_listen:
        return None
    from ..api.app import build_app
    from ..api.auth import TokenFile
    from ..api.server import ApiServer

    server = ApiServer(build_app(node, TokenFile(args.api_token_file)), args.api_listen,
                       tls=_tls(args))
    port = server.start()
    print(f"trisa-peer: API on {server.scheme}://{server.host}:{port}", flush=True)
    return server
