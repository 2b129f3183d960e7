"""``trisa-peer db migrate`` and ``trisa-peer db copy``, and the ``--db`` options.

* ``db migrate --db URL``: bring a transfer store or a directory store (which one is
  seen from its tables, or named with ``--store``) to the schema this trisa-peer knows;
  prints ``before -> after``. A newer schema than the code knows is refused.
* ``db copy --from-db URL --to-db URL`` (``--from``/``--to`` also work): copy a whole
  store (either kind) to an empty database of either backend, table by table, keeping
  every key; verified by per-table row counts and digests over the rows in key order,
  printed; one line and exit 1 on any mismatch (see :mod:`trisa_peer.storage.copy`).

Not checked here: that no node writes to the source during a copy (stop it first).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigurationError
from .options import add_option

__all__ = ["add_db_args", "register"]

_AUTH_FILE_HELP = ("PostgreSQL password: first line of FILE (owner-only, 0600); libpq's "
                  "PGPASSWORD and PGPASSFILE work too. Never put it in --db")


def add_db_args(parser: Any, *, required: bool = False, help: str | None = None) -> None:
    """``--db URL`` (a path, sqlite:///path or postgresql://...) and
    ``--db-password-file FILE``."""
    parser.add_argument(
        "--db", required=required, metavar="URL",
        help=(help or "transfer store: a file path, sqlite:///PATH or postgresql://HOST/DB")
        + " (a PostgreSQL server on another host: add ?sslmode=verify-full)")
    parser.add_argument("--db-password-file", metavar="FILE", help=_AUTH_FILE_HELP)


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="migrate or copy a transfer or directory database")
    dsub = db.add_subparsers(dest="db_command", metavar="COMMAND")
    dsub.required = True
    mig = dsub.add_parser(
        "migrate", help="apply schema migrations (prints before -> after)",
        description="Bring a transfer store or directory store to the schema this trisa-peer "
        "knows. Replicas: stop them all, migrate, start the new version.")
    add_db_args(mig, required=True, help="the store: a file path, sqlite:///PATH or "
                "postgresql://HOST/DB")
    mig.add_argument("--store", choices=("transfers", "directory"),
                     help="which store (default: seen from its tables)")
    mig.set_defaults(func=_migrate, command_parser=mig)
    cp = dsub.add_parser(
        "copy", help="copy a store to an empty database, verified by counts and digests",
        description="Copy a transfer store or directory store, table by table with every "
        "key kept, into an empty database (of either backend), then compare row counts and "
        "digests of every table. Stop the node or directory first.")
    add_option(cp, "--from-db", aliases=["--from"], dest="source", required=True,
               metavar="URL", help="the store to copy (path, sqlite:///PATH, postgresql://...)")
    add_option(cp, "--to-db", aliases=["--to"], dest="target", required=True, metavar="URL",
               help="an empty database to copy into")
    cp.add_argument("--from-db-password-file", metavar="FILE", help=_AUTH_FILE_HELP)
    cp.add_argument("--to-db-password-file", metavar="FILE", help=_AUTH_FILE_HELP)
    cp.set_defaults(func=_copy, command_parser=cp)


def _migrate(args: argparse.Namespace) -> int:
    from ..storage import migrate, open_database
    from ..storage.copy import detect_kind, migrations_for

    db = open_database(args.db, purpose="store", password_file=args.db_password_file,
                       create=bool(args.store))
    try:
        kind = args.store or detect_kind(db)
        if kind is None:
            raise ConfigurationError(
                f"{db.name}: neither a transfer store nor a directory store (name it with "
                "--store transfers|directory to create one)")
        migrations, baseline = migrations_for(kind)
        before, after = migrate(db, migrations, component=kind, baseline=baseline)
    finally:
        db.close()
    print(f"{kind} store {db.name}: schema {before} -> {after}")
    return 0


def _copy(args: argparse.Namespace) -> int:
    from ..storage import open_database
    from ..storage.copy import copy_store

    source = open_database(args.source, purpose="source", password_file=args.from_db_password_file,
                           create=False)
    try:
        target = open_database(args.target, purpose="target",
                               password_file=args.to_db_password_file)
        try:
            report = copy_store(source, target)
        finally:
            target.close()
    finally:
        source.close()
    for line in report.lines():
        print(line)
    return 0
