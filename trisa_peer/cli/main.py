"""The ``trisa-peer`` command: one sub-command module per area.

Each module listed in ``_COMMAND_MODULES`` exposes ``register(subparsers)`` which adds
its parser(s) and sets ``func`` (``Callable[[argparse.Namespace], int]``) as a default.
Errors derived from :class:`~trisa_peer.errors.TrisaPeerError` print one line on stderr
and exit 1; argparse usage errors exit 2; no traceback reaches the user for a mistake
of theirs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import TrisaPeerError, UsageError

__all__ = ["build_parser", "main"]

# Sub-command modules, in the order they appear in --help.
_COMMAND_MODULES: tuple[str, ...] = ("ca", "gds", "node", "envelope", "demo")

PROG = "trisa-peer"


# The gRPC C core prints lines such as "Handshake failed" or "Failed to add port" on
# stderr; the toolkit reports those failures itself, one line each.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="TRISA Travel Rule toolkit: verified peers, envelopes, directory, CA.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (repeatable)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # One-shot commands report failures in their own single line; only long-running
    # services (and -v) show the library's warnings.
    service = args.command == "serve" or getattr(args, "gds_command", None) == "serve"
    if args.verbose:
        level = logging.INFO if args.verbose == 1 else logging.DEBUG
    else:
        level = logging.WARNING if service else logging.CRITICAL
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except TrisaPeerError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours; stay quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
