"""The ``trisa-peer`` command: one sub-command module per area.

Each module listed in ``_COMMAND_MODULES`` exposes ``register(subparsers)`` which adds
its parser(s) and sets ``func`` (``Callable[[argparse.Namespace], int]``) as a default.
:func:`.runner.run` turns failures into exit statuses (shared with the ``sectigo``
command): a TrisaPeerError prints one line on stderr and exits 1, a usage error exits
2; no traceback reaches the user for a mistake of theirs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from .. import __version__
from .runner import run

__all__ = ["build_parser", "main"]

# Sub-command modules, in the order they appear in --help, with the commands each one
# registers (tests/test_cli_modules.py checks the two agree).
_COMMANDS: dict[str, tuple[str, ...]] = {
    "ca": ("ca",), "gds": ("gds",), "node": ("serve", "check", "send"), "status": ("status",),
    "envelope": ("envelope", "transfers"), "db": ("db",), "demo": ("demo",), "csr": ("csr",),
}
_COMMAND_MODULES: tuple[str, ...] = tuple(_COMMANDS)

PROG = "trisa-peer"


# The gRPC C core prints lines such as "Handshake failed" or "Failed to add port" on
# stderr; the toolkit reports those failures itself, one line each.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def _command_word(argv: Sequence[str]) -> str:
    """The sub-command named in ``argv`` (its first word that is not one of the global
    options, which take no value); "" if there is none."""
    for word in argv:
        if word == "--":
            return ""
        if not word.startswith("-"):
            return word
    return ""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``trisa-peer`` parser. With ``argv`` naming a known command, only the module
    of that command is loaded and registered (a ``serve`` process does not load the CA,
    directory, CSR and envelope commands' code); the parse is the same either way."""
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
    word = _command_word(argv) if argv is not None else ""
    owner = [name for name, commands in _COMMANDS.items() if word in commands]
    for name in owner or _COMMAND_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        module.register(sub)
    return parser


def _quiet_level(args: argparse.Namespace) -> int:
    # One-shot commands report failures in their own single line; only long-running
    # services (and -v) show the library's warnings.
    service = args.command == "serve" or getattr(args, "gds_command", None) == "serve"
    return logging.WARNING if service else logging.CRITICAL


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    return run(build_parser(words), argv, quiet_level=_quiet_level)
