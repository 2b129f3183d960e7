"""Copy a whole store between databases of either backend, verified by counts and digests.

:func:`copy_store` copies every table of a transfer store or a directory store (which
one is seen from its tables, :func:`detect_kind`) into an empty database:

1. the source must be at the schema version this code knows (older: migrate it first;
   newer: refused), the target must hold no rows in any table (refused otherwise);
2. the target gets the store's schema through its own migrations (so types, indexes
   and constraints are the target backend's own), then every table is copied in one
   transaction, parents before children (foreign keys), each in primary-key order, with
   every key kept as it was (serial/identity values too); PostgreSQL identity sequences
   are then moved past the copied values;
3. both sides are read again (streamed: bounded memory at any size): per table, the
   row count and a SHA-256 over the rows in key order (text keys in byte order on both
   backends; values encoded by type, so a text ``'1'`` and an integer ``1`` differ).
   Any difference raises :class:`StoreError` naming the first table that differs.

Not checked: that nothing writes to the source during the copy (stop its node first);
columns are matched by name, and a column the target's schema lacks is an error.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError, StoreError
from .database import Database
from .migrate import Migrations, migrate

__all__ = ["CopyReport", "TableDigest", "copy_store", "detect_kind", "list_tables",
           "migrations_for", "table_digests"]

#: store kind -> (the table that identifies it, the module whose MIGRATIONS build it)
KINDS: dict[str, tuple[str, str]] = {
    "transfers": ("envelopes", "trisa_peer.network.store"),
    "directory": ("vasps", "trisa_peer.directory.store"),
}

_INTERNAL = {"schema_version"}
_BATCH = 2000


@dataclass(frozen=True)
class TableDigest:
    table: str
    rows: int
    digest: str


@dataclass
class CopyReport:
    kind: str
    source: list[TableDigest] = field(default_factory=list)
    target: list[TableDigest] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{t.table}: {t.rows} rows, sha256 {t.digest[:16]}" for t in self.target]
        total = sum(t.rows for t in self.target)
        out.append(f"copied {self.kind} store: {len(self.target)} tables, {total} rows; "
                   "counts and digests match")
        return out


def list_tables(db: Database) -> list[str]:
    """The store's tables (the database's internal ones left out), sorted."""
    if db.backend == "sqlite":
        rows = db.read("SELECT name FROM sqlite_master WHERE type = 'table' "
                       "AND name NOT LIKE 'sqlite%'")
    else:
        rows = db.read("SELECT table_name FROM information_schema.tables WHERE "
                       "table_schema = current_schema() AND table_type = 'BASE TABLE'")
    return sorted(str(r[0]) for r in rows)


def detect_kind(db: Database) -> str | None:
    """``transfers`` or ``directory`` from the tables ``db`` holds; None for neither."""
    tables = set(list_tables(db))
    for kind, (marker, _) in KINDS.items():
        if marker in tables:
            return kind
    return None


def migrations_for(kind: str) -> tuple[Migrations, int]:
    """The store's portable migrations (``MIGRATIONS`` of its module) and baseline."""
    module = importlib.import_module(KINDS[kind][1])
    migrations = getattr(module, "MIGRATIONS", None)
    if not isinstance(migrations, dict):
        raise ConfigurationError(
            f"this trisa-peer has no portable schema for the {kind} store")
    return migrations, int(getattr(module, "MIGRATION_BASELINE", 0))


# ------------------------------------------------------------------ schema facts


@dataclass(frozen=True)
class _Column:
    name: str
    text: bool  # ordered in byte order on PostgreSQL (COLLATE "C")
    identity: bool


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(db: Database, table: str) -> list[_Column]:
    if db.backend == "sqlite":
        rows = db.read(f"PRAGMA table_info({_quote(table)})")
        return [_Column(str(r[1]), False, False) for r in rows]
    rows = db.read(
        "SELECT column_name, data_type, is_identity FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
        (table,))
    return [_Column(str(r[0]), str(r[1]) in ("text", "character varying"), r[2] == "YES")
            for r in rows]


def _primary_key(db: Database, table: str) -> list[str]:
    if db.backend == "sqlite":
        rows = db.read(f"PRAGMA table_info({_quote(table)})")
        return [str(r[1]) for r in sorted((r for r in rows if r[5]), key=lambda r: r[5])]
    rows = db.read(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = to_regclass(quote_ident(?)) AND i.indisprimary "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)", (table,))
    return [str(r[0]) for r in rows]


def _parents(db: Database, table: str) -> set[str]:
    if db.backend == "sqlite":
        rows = db.read(f"PRAGMA foreign_key_list({_quote(table)})")
        return {str(r[2]) for r in rows}
    rows = db.read(
        "SELECT DISTINCT ccu.table_name FROM information_schema.table_constraints tc "
        "JOIN information_schema.constraint_column_usage ccu "
        "ON tc.constraint_name = ccu.constraint_name AND tc.table_schema = ccu.table_schema "
        "WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = current_schema() "
        "AND tc.table_name = ?", (table,))
    return {str(r[0]) for r in rows}


def _dependency_order(db: Database, tables: Sequence[str]) -> list[str]:
    """Parents before children; self-references are satisfied by key order."""
    pending = {t: _parents(db, t) - {t} for t in tables}
    order: list[str] = []
    while pending:
        ready = sorted(t for t, deps in pending.items() if not deps - set(order))
        if not ready:
            raise StoreError(f"foreign keys form a cycle among {sorted(pending)}")
        order.extend(ready)
        for t in ready:
            del pending[t]
    return order


# ------------------------------------------------------------------ reading and digests


def _order_by(db: Database, columns: list[_Column], key: list[str]) -> str:
    by_name = {c.name: c for c in columns}
    names = key or [c.name for c in columns]
    parts = []
    for name in names:
        col = by_name[name]
        parts.append(_quote(name) + (' COLLATE "C"' if col.text else ""))
    return ", ".join(parts)


def _rows(db: Database, table: str, names: list[str], columns: list[_Column],
          key: list[str]) -> Iterator[tuple[Any, ...]]:  # Any: one database row
    """Rows in key order (text in byte order on both backends), streamed."""
    select = ", ".join(_quote(n) for n in names)
    order = _order_by(db, columns, key)
    yield from db.stream(f"SELECT {select} FROM {_quote(table)} ORDER BY {order}",  # noqa: S608
                         size=_BATCH)


def _feed(h: Any, row: Sequence[object]) -> None:  # Any: a hashlib object
    for value in row:
        if value is None:
            h.update(b"n;")
        elif isinstance(value, bool | int):
            h.update(b"i%d;" % int(value))
        elif isinstance(value, float):
            h.update(b"f" + repr(value).encode() + b";")
        elif isinstance(value, str):
            data = value.encode()
            h.update(b"s%d:" % len(data) + data)
        elif isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
            h.update(b"b%d:" % len(data) + data)
        else:
            data = str(value).encode()
            h.update(b"o%d:" % len(data) + data)
    h.update(b"\n")


def _shape(db: Database, table: str) -> tuple[list[_Column], list[str]]:
    return _columns(db, table), _primary_key(db, table)


def table_digests(db: Database, tables: Sequence[str]) -> list[TableDigest]:
    """Row count and SHA-256 over the rows in key order, per table, columns by name."""
    out = []
    for table in tables:
        columns, key = _shape(db, table)
        names = sorted(c.name for c in columns)
        h = hashlib.sha256()
        count = 0
        for row in _rows(db, table, names, columns, key):
            _feed(h, row)
            count += 1
        out.append(TableDigest(table, count, h.hexdigest()))
    return out


# ------------------------------------------------------------------ the copy


def _refuse_non_empty(target: Database) -> None:
    for table in list_tables(target):
        if table in _INTERNAL:
            continue
        row = target.read_one(f"SELECT COUNT(*) FROM {_quote(table)}")  # noqa: S608
        if row and row[0]:
            raise ConfigurationError(
                f"{target.name}: not empty (table {table} has {row[0]} rows); "
                "copy into an empty database")


def copy_store(
    source: Database,
    target: Database,
    *,
    kind: str | None = None,
    migrations: Migrations | None = None,
) -> CopyReport:
    """Copy the store in ``source`` into the empty ``target``; verify; return the report.

    ``kind``/``migrations`` default to what :func:`detect_kind` sees and that store's
    module's ``MIGRATIONS``."""
    kind = kind or detect_kind(source)
    if kind is None:
        raise ConfigurationError(
            f"{source.name}: neither a transfer store nor a directory store")
    if migrations is None:
        migrations, _ = migrations_for(kind)
    migrate(source, migrations, component=kind, apply=False)  # same version as the code
    _refuse_non_empty(target)
    migrate(target, migrations, component=kind)
    _refuse_non_empty(target)  # a migration's backfill left nothing either
    tables = [t for t in _dependency_order(source, [
        t for t in list_tables(source) if t not in _INTERNAL])]
    missing = sorted(set(tables) - set(list_tables(target)))
    if missing:
        raise StoreError(f"{target.name}: the {kind} schema has no table {missing[0]}")
    shapes = {t: _shape(source, t) for t in tables}
    target_columns = {t: _columns(target, t) for t in tables}  # read before the write
    with target.transaction() as tx:
        for table in tables:
            columns, key = shapes[table]
            names = [c.name for c in columns]
            have = {c.name for c in target_columns[table]}
            lacking = [n for n in names if n not in have]
            if lacking:
                raise StoreError(f"{target.name}: table {table} has no column {lacking[0]}")
            insert = (f"INSERT INTO {_quote(table)} ({', '.join(_quote(n) for n in names)}) "  # noqa: S608
                      f"VALUES ({', '.join('?' for _ in names)})")
            batch: list[tuple[Any, ...]] = []  # Any: one database row
            for row in _rows(source, table, names, columns, key):
                batch.append(row)
                if len(batch) >= _BATCH:
                    tx.execute_many(insert, batch)
                    batch = []
            if batch:
                tx.execute_many(insert, batch)
        if target.backend == "postgresql":
            for table in tables:
                for col in target_columns[table]:
                    if col.identity:
                        tx.one(
                            f"SELECT setval(pg_get_serial_sequence(?, ?), MAX({_quote(col.name)})) "  # noqa: S608
                            f"FROM {_quote(table)} HAVING MAX({_quote(col.name)}) IS NOT NULL",
                            (_quote(table), col.name))
    report = CopyReport(kind, table_digests(source, tables), table_digests(target, tables))
    for ours, theirs in zip(report.source, report.target, strict=True):
        if ours != theirs:
            raise StoreError(
                f"copy verification failed: table {ours.table}: source {ours.rows} rows "
                f"sha256 {ours.digest[:16]}, target {theirs.rows} rows "
                f"sha256 {theirs.digest[:16]}")
    return report
