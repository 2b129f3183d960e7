"""The one way both console scripts (``trisa-peer``, ``sectigo``) run a command.

:func:`run` parses the arguments, sets up logging from ``-v`` and calls the chosen
command's ``func(args) -> int``. Between the two, :func:`.options.finish` takes old
option spellings into their one public name (docs/cli.md) and checks required
options. How a failure reaches the user is decided here only:

- an argparse mistake, or a :class:`~trisa_peer.errors.UsageError` raised after
  parsing: usage and ``PROG: error: ...`` on stderr, exit 2 (a sub-command that sets
  ``command_parser`` gets its own usage line);
- ``--help`` and ``--version``: exit 0. The status is always *returned*, so that
  ``main(argv)`` can be called in-process; the console script passes it to
  :func:`sys.exit`;
- any other :class:`~trisa_peer.errors.TrisaPeerError`: one line
  ``PROG: error: ...`` on stderr, exit 1, no traceback;
- the reader of stdout went away (``| head``): quiet, exit 0;
- Ctrl-C: ``PROG: interrupted``, exit 130.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from ..errors import TrisaPeerError, UsageError
from ..logsetup import use_format
from .options import finish
from .placeholders import refuse_placeholders

__all__ = ["run"]

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _log_level(verbose: int, quiet: int) -> int:
    """``-v``: INFO, ``-vv`` or more: DEBUG; otherwise ``quiet``."""
    if verbose <= 0:
        return quiet
    return logging.INFO if verbose == 1 else logging.DEBUG


def run(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    *,
    quiet_level: Callable[[argparse.Namespace], int] = lambda args: logging.WARNING,
    check: Callable[[argparse.Namespace], None] | None = None,
) -> int:
    """Parse ``argv``, configure logging and run ``args.func``; returns the exit status.

    ``quiet_level(args)`` is the log level without ``-v``. ``check(args)`` validates
    global options before the command runs; a :class:`UsageError` from it is reported
    with the top-level usage.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, or a usage error (2)
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=_log_level(int(getattr(args, "verbose", 0) or 0), quiet_level(args)),
        format=_LOG_FORMAT,
    )
    use_format(getattr(args, "log_format", None) or "text")  # --log-format (cli/observe.py)
    usage_parser = getattr(args, "command_parser", parser)
    try:
        refuse_placeholders(sys.argv[1:] if argv is None else argv)  # README's VASP_ID...
        finish(args, parser.prog)  # old spellings, defaults, required options
        usage_parser = parser
        if check is not None:
            check(args)
        usage_parser = getattr(args, "command_parser", parser)
        return int(args.func(args) or 0)
    except UsageError as exc:
        usage_parser.print_usage(sys.stderr)
        print(f"{usage_parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except TrisaPeerError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours. Point stdout at
        # /dev/null so that the flush at exit does not fail a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def stop_event() -> threading.Event:
    """An event that SIGTERM and SIGINT set (a long-running command's stop request)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def wait_until_set(stop: threading.Event) -> None:
    """Block the main thread until ``stop`` is set, waking every 0.5 s.

    Not ``stop.wait()``: Python runs signal handlers only in the main thread between
    bytecodes, and a signal the kernel delivers to another thread (gRPC's, a cache
    warmer's) does not interrupt a main thread blocked in an untimed wait, so the
    handler -- and the stop -- would never run.
    """
    while not stop.wait(0.5):
        pass
