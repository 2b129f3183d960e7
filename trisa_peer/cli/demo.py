"""``trisa-peer demo``: run the simulated network and every scenario (``make demo``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

__all__ = ["register"]


def register(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the simulated TRISA network (CA, Sectigo, directory, five VASPs)",
        description="Start a CA, the Sectigo-compatible service, a directory and the VASPs "
        "Alice, Bob, Charlie, Evil and Mallory on 127.0.0.1; run the eight steps, the "
        "TestNet wallet-policy matrix and the impostor scenarios; exit 0 only when every "
        "scenario behaved as expected.",
    )
    demo.add_argument("--workdir", metavar="DIR",
                      help="keep the network's files (CA, databases) here instead of a temp dir")
    demo.add_argument("--key-size", type=int, default=2048,
                      help="RSA key size of the simulated certificates (default 2048)")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from ..testing.demo import run_demo

    workdir = Path(args.workdir) if args.workdir else None
    if workdir is not None:
        if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
            raise ConfigurationError(
                f"{workdir}: --workdir must be a new or empty directory (the demo creates a "
                "fresh CA, directory and stores there)"
            )
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"{workdir}: cannot create: {exc.strerror}") from exc
    ok = run_demo(out=lambda line: print(line, flush=True), workdir=workdir,
                  key_size=args.key_size)
    return 0 if ok else 1
