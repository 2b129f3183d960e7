"""``trisa-peer transfers purge`` and ``transfers export``: retention and audit.

* ``purge --older-than DAYS --db URL``: empty the envelope bytes of every transfer last
  active more than DAYS days ago, keeping its audit record; pending (and claimed)
  transfers are kept whole whatever their age (see ``TransferStore.purge``). Runs in
  passes of ``--batch`` transfers until none is left.
* ``export --db URL [--since T] [--out FILE]``: the audit trail as JSON lines, one per
  stored envelope, oldest first, with exactly the fields of
  :data:`~trisa_peer.network.store.AUDIT_FIELDS` (never envelope bytes, payloads or a
  rejection's message). ``--out`` writes a new 0600 file (an existing one is refused;
  written to a temporary file first, so nothing is half-written); default stdout.

Not checked: that a node is not writing meanwhile (both commands are safe beside one:
each purge is its own transaction under the transfer's lock, and export reads committed
rows page by page).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from ..errors import ConfigurationError
from ..network.store import DEFAULT_PURGE_BATCH
from .db import add_db_args
from .options import positive_float, positive_int

__all__ = ["register_retention", "since_timestamp"]

_SINCE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|\+00:00))?$")


def since_timestamp(text: str) -> str:
    """An argparse ``type``: a UTC date or time, as the store writes times."""
    value = text.strip()
    if not _SINCE.match(value):
        raise argparse.ArgumentTypeError(
            f"not a UTC date or time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ): {text[:40]!r}")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a valid date: {text[:40]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def register_retention(tsub: Any) -> None:
    purge = tsub.add_parser(
        "purge", help="delete old envelope bytes, keeping the audit record",
        description="Empty the stored envelopes (customers' personal data) of every "
        "transfer last active more than DAYS days ago; ids, peers, states, times, TRISA "
        "codes and digests stay. Pending transfers are kept whole. 'serve "
        "--retention-days' does the same periodically.")
    purge.add_argument("--older-than", metavar="DAYS", type=positive_float, required=True,
                       help="purge transfers last active more than DAYS days ago")
    add_db_args(purge, required=True)
    purge.add_argument("--batch", metavar="N", type=positive_int, default=DEFAULT_PURGE_BATCH,
                       help="transfers per pass (each its own transaction; default "
                       "%(default)s)")
    purge.set_defaults(func=_purge)
    export = tsub.add_parser(
        "export", help="write the audit trail as JSON lines (no payloads)",
        description="One JSON object per stored envelope, oldest first: seq, envelope_id, "
        "peer, direction, kind, state, error_code, digest, payload_digest, reply_to, "
        "attempt, created_at, updated_at, deadline, purged_at, stored. Never envelope "
        "bytes, payloads or rejection messages.")
    add_db_args(export, required=True)
    export.add_argument("--since", metavar="TIME", type=since_timestamp,
                        help="only envelopes created at or after this UTC date or time")
    export.add_argument("--out", metavar="FILE",
                        help="write a new file (mode 0600; an existing one is refused) "
                        "instead of stdout")
    export.set_defaults(func=_export)


def _open(args: argparse.Namespace) -> Any:
    from ..network.store import open_store

    return open_store(args.db, password_file=args.db_password_file, existing=True)


def _purge(args: argparse.Namespace) -> int:
    store = _open(args)
    total = 0
    try:
        while True:
            count = store.purge(timedelta(days=args.older_than), batch=args.batch)
            total += count
            if count < args.batch:
                break
    finally:
        store.close()
    print(f"purged the envelopes of {total} transfer(s) last active more than "
          f"{args.older_than:g} days ago (pending ones kept)")
    return 0


def _lines(records: Iterable[dict[str, object]], out: TextIO) -> int:
    count = 0
    for record in records:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        count += 1
    return count


def _export(args: argparse.Namespace) -> int:
    target = Path(args.out) if args.out else None
    if target is not None:
        if target.exists() or target.is_symlink():
            raise ConfigurationError(f"{target} exists; refusing to overwrite it")
        if not target.parent.is_dir():
            raise ConfigurationError(f"{target}: directory {target.parent} does not exist")
    store = _open(args)
    try:
        if target is None:
            _lines(store.audit(since=args.since), sys.stdout)
            return 0
        count = _write_new(target, lambda out: _lines(store.audit(since=args.since), out))
    finally:
        store.close()
    print(f"wrote {count} audit records to {target}")
    return 0


def _write_new(target: Path, write: Any) -> int:
    """Write through ``write(file)`` into a temporary 0600 file beside ``target``, then
    link it to ``target`` (which must not exist: never replaced)."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            count = int(write(out))
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise ConfigurationError(f"{target} exists; refusing to overwrite it") from None
        except OSError as exc:
            raise ConfigurationError(f"{target}: cannot write: {exc.strerror}") from exc
        return count
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
