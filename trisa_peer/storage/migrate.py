"""Versioned schema migrations, the same for every store and both backends.

A store describes its schema as ``{version: script}``: version 1 creates the first
tables, each later version changes them. A script is ``;``-separated statements written
once for both backends with the dialect tokens of :data:`~.database.DIALECTS`
(``{BLOB}``, ``{SERIAL_PK}`` ...) or, where the backends differ, a ``{backend: script}``
mapping. Statements must not contain ``;`` inside literals.

The applied version is kept in the store's ``schema_version`` table (the highest
``version`` row). :func:`migrate` runs in one transaction under a lock (so replicas
starting together on one PostgreSQL database migrate once): it applies what is missing,
or with ``apply=False`` only checks. A database newer than the code is refused with one
line (an older replica must not write into a schema it does not know); a database older
than the code with ``apply=False`` is refused with the command that upgrades it.

Rolling out a migration to replicas (README "Deployment"): every migration in this
project is additive (expand: new tables, new nullable or defaulted columns, new
indexes), so replicas still on the older code keep working against the newer schema
only if the code tolerates it; since the newer-schema check refuses that, the procedure
is: stop all replicas, run ``trisa-peer db migrate``, start the new version.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import StoreError
from .database import Database, Tx
from .url import Backend

__all__ = ["Migrations", "current_version", "migrate"]

Script = str | Mapping[Backend, str]
Migrations = Mapping[int, Script]

_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"


def current_version(tx: Tx) -> int:
    """The schema version recorded in the database (0: nothing created yet)."""
    tx.execute(_VERSION_TABLE)
    row = tx.one("SELECT MAX(version) FROM schema_version")
    return int(row[0] or 0) if row else 0


def migrate(
    db: Database,
    migrations: Migrations,
    *,
    component: str,
    apply: bool = True,
    baseline: int = 0,
) -> tuple[int, int]:
    """Bring ``db`` to the newest version in ``migrations``; return (before, after).

    ``baseline``: the version to assume when tables exist but no version was recorded
    (files written before versioning); 0 otherwise.
    """
    latest = max(migrations)
    with db.transaction() as tx:
        tx.lock(f"trisa-peer schema {component}")
        version = current_version(tx) or baseline
        if version > latest:
            raise StoreError(
                f"{db.purpose} {db.name}: schema version {version} is newer than this "
                f"trisa-peer knows ({latest}); upgrade trisa-peer"
            )
        if version < latest and not apply:
            raise StoreError(
                f"{db.purpose} {db.name}: schema version {version}, this trisa-peer needs "
                f"{latest}; run: trisa-peer db migrate --db {db.name}"
            )
        for target in range(version + 1, latest + 1):
            script = migrations[target]
            text = script if isinstance(script, str) else script[db.backend]
            for statement in text.split(";"):
                if statement.strip():
                    tx.execute(statement)
            tx.execute("DELETE FROM schema_version")
            tx.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
    return version, latest
