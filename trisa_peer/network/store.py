"""Persistent transfers: every envelope as it crossed the wire, in one SQLite file.

Each row is one envelope: ``direction`` (``incoming``/``outgoing``), ``kind``
(``request``, or ``reply`` to the row named by ``reply_to``), the peer's common name,
the transfer's ``state`` and the serialised ``SecureEnvelope`` exactly as sent or
received (still sealed; payloads are never stored in clear). Rows are committed
before the node answers, so a reply the peer has seen is never lost by a restart.

Idempotency: an incoming request is identified by (peer, envelope id, SHA-256 of its
bytes). A retry of the same envelope is answered with the stored reply and is not
processed again; a *different* envelope with the same id (the next message of the same
exchange, e.g. an asynchronous callback) is a new request.

For rejected input only the record of the rejection is kept: the request row holds no
envelope bytes, only its digest and the error code. Those *rejection records* (refused
input, not a handler's business rejection, whose request is kept whole) are bounded:
at most ``max_rejections`` are kept, none older than ``keep_rejections``; the oldest go
first, pruned on write (at most once a minute, or after 256 commits).

Durability: a commit is acknowledged only if the path still names the database file
this store opened (same device and inode). A deleted ``--db`` folder leaves SQLite
writing to an unlinked file whose commits vanish at restart; once that is seen the
store refuses every write (:class:`StoreError`, UNAVAILABLE to peers) and
:meth:`TransferStore.problem` says why (health reports the node unready) until restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..fsutil import create_private

__all__ = ["StoredEnvelope", "TransferStore", "TransferSummary", "digest"]

log = logging.getLogger("trisa_peer.network")

#: Rejection records (refused input) kept at most this long, and at most this many.
DEFAULT_KEEP_REJECTIONS = timedelta(days=30)
DEFAULT_MAX_REJECTIONS = 10_000

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS envelopes (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id  TEXT    NOT NULL,
    peer         TEXT    NOT NULL,
    direction    TEXT    NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
    kind         TEXT    NOT NULL CHECK (kind IN ('request', 'reply')),
    state        TEXT    NOT NULL,
    error_code   INTEGER NOT NULL DEFAULT 0,
    digest       TEXT    NOT NULL,
    reply_to     INTEGER REFERENCES envelopes(seq),
    envelope     BLOB    NOT NULL,
    created_at   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS envelopes_by_id ON envelopes (envelope_id);
CREATE INDEX IF NOT EXISTS envelopes_by_reply ON envelopes (reply_to);
CREATE UNIQUE INDEX IF NOT EXISTS incoming_requests
    ON envelopes (peer, envelope_id, digest) WHERE direction = 'incoming' AND kind = 'request';
"""


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class StoredEnvelope:
    seq: int
    envelope_id: str
    peer: str
    direction: str
    kind: str
    state: str
    error_code: int
    digest: str
    reply_to: int | None
    envelope: bytes
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class TransferSummary:
    """One exchange (envelope id) as ``transfers list`` shows it."""

    envelope_id: str
    peer: str
    direction: str
    state: str
    messages: int
    first_at: str
    last_at: str


_COLUMNS = (
    "seq, envelope_id, peer, direction, kind, state, error_code, digest, reply_to, "
    "envelope, created_at, updated_at"
)


#: A rejection record: refused input, kept without its bytes (see the module docstring).
_REFUSED = ("direction = 'incoming' AND kind = 'request' AND error_code != 0 "
            "AND envelope = x''")


def _file_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _set_state(db: sqlite3.Connection, seq: int, state: str, error_code: int, now: str) -> None:
    db.execute(
        "UPDATE envelopes SET state = ?, error_code = ?, updated_at = ? WHERE seq = ?",
        (state, error_code, now, seq),
    )


class TransferStore:
    """Thread-safe SQLite store (one connection per thread, WAL).

    ``durable=True`` (the default) fsyncs every commit (``synchronous=FULL``): an
    acknowledged transfer survives a power loss. ``durable=False`` uses
    ``synchronous=NORMAL``: it survives a crash or restart of the process, but a power
    loss may lose the last commits; about 0.3 ms less per commit on this machine.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        durable: bool = True,
        keep_rejections: timedelta = DEFAULT_KEEP_REJECTIONS,
        max_rejections: int = DEFAULT_MAX_REJECTIONS,
    ) -> None:
        self.path = str(path)
        self.durable = durable
        if max_rejections < 0 or keep_rejections < timedelta(0):
            raise StoreError("rejection retention must not be negative")
        self.keep_rejections = keep_rejections
        self.max_rejections = max_rejections
        self.prune_interval = 60.0  # seconds between prunes on write ...
        self.prune_commits = 256  # ... or commits, whichever comes first
        self._pruned_at = time.monotonic()
        self._commits = 0
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the opened file
        self._broken: str | None = None
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._uri = False
        if self.path == ":memory:":
            # One in-memory database shared by this store's per-thread connections; the
            # first connection (kept in ``_keeper``) keeps it alive.
            self.path = f"file:trisa-transfers-{uuid.uuid4()}?mode=memory&cache=shared"
            self._uri = True
        elif not Path(self.path).parent.is_dir():
            raise StoreError(f"{self.path}: directory does not exist")
        else:
            create_private(self.path)  # envelopes and their metadata: owner only
        self._keeper = self._db()
        if not self._uri:
            self._file = _file_id(self.path)
        try:
            self._db().executescript(_SCHEMA)  # executescript commits on its own
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open transfer store: {exc}") from exc
        with self._tx() as db:
            row = db.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {row[0]} is newer than this trisa-peer "
                    f"understands ({SCHEMA_VERSION})"
                )

    def _db(self) -> sqlite3.Connection:
        if self._uri and getattr(self, "_keeper", None) is not None:
            # In-memory: one connection for all threads (shared-cache table locks are
            # not covered by the busy timeout); every statement runs under _write_lock.
            return self._keeper
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(
                    self.path, timeout=30, isolation_level=None, uri=self._uri,
                    check_same_thread=False,
                )
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
                db.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot open transfer store: {exc}") from exc
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._broken is not None:  # known unusable: refuse without touching the file
            raise StoreError(f"transfer store unusable: {self._broken}")
        db = self._db()
        with self._write_lock:
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                db.execute("ROLLBACK")
                raise StoreError(f"{self.path}: transfer store write failed: {exc}") from exc
            except BaseException:
                db.execute("ROLLBACK")
                raise
        # Committed -- but to the file the path names? If not, the caller must not
        # acknowledge: raising here turns its return into StoreError. (One stat.)
        self._check_durable()
        self._maybe_prune()

    # ------------------------------------------------------------ durability

    def problem(self) -> str | None:
        """Why this store cannot durably record anything (None when it can): its path no
        longer names the database file it opened (deleted or replaced). Sticky until
        restart; logged once. One ``stat`` per call."""
        if self._broken is None and self._file is not None:
            try:
                now = _file_id(self.path)
            except OSError as exc:
                reason = f"{self.path} is gone ({exc.strerror or exc})"
            else:
                reason = "" if now == self._file else f"{self.path} now names another file"
            if reason and self._broken is None:
                self._broken = reason
                log.error(
                    "transfer store unusable: %s; commits would be lost at restart, so no "
                    "transfer is acknowledged until the node is restarted on a good store",
                    reason,
                )
        return self._broken

    def _check_durable(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise StoreError(f"transfer store unusable: {problem}")

    # ------------------------------------------------------------ rejection retention

    def _maybe_prune(self) -> None:
        self._commits += 1
        if (self._commits < self.prune_commits
                and time.monotonic() - self._pruned_at < self.prune_interval):
            return
        self._commits = 0
        self._pruned_at = time.monotonic()
        self.prune_rejections()

    def prune_rejections(self, *, now: datetime | None = None) -> int:
        """Delete rejection records (refused input: an incoming request kept without its
        bytes, with an error code, and its reply) beyond ``max_rejections`` or older than
        ``keep_rejections``; return how many records went."""
        cutoff = ((now or datetime.now(UTC)) - self.keep_rejections).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")
        self._commits = 0  # the prune's own commit does not start another one
        self._pruned_at = time.monotonic()
        with self._tx() as db:
            db.execute(f"CREATE INDEX IF NOT EXISTS rejection_records ON envelopes "
                       f"(created_at) WHERE {_REFUSED}")
            row = db.execute(
                f"SELECT created_at, seq FROM envelopes WHERE {_REFUSED} "  # noqa: S608
                "ORDER BY created_at DESC, seq DESC LIMIT 1 OFFSET ?", (self.max_rejections,)
            ).fetchone()
            edge = (row[0], row[1]) if row is not None else ("", 0)
            victims = (
                f"SELECT seq FROM envelopes WHERE {_REFUSED} AND "  # noqa: S608
                "(created_at < ? OR created_at < ? OR (created_at = ? AND seq <= ?))"
            )
            args = (cutoff, edge[0], edge[0], edge[1])
            db.execute(f"DELETE FROM envelopes WHERE reply_to IN ({victims})", args)  # noqa: S608
            cur = db.execute(f"DELETE FROM envelopes WHERE seq IN ({victims})", args)  # noqa: S608
            return int(cur.rowcount)

    def rejection_records(self) -> int:
        """How many rejection records (refused input) the store holds."""
        sql = f"SELECT COUNT(*) FROM envelopes WHERE {_REFUSED}"  # noqa: S608 - constant
        return int(self._read(sql, ())[0][0])

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ------------------------------------------------------------------ writes

    def add(
        self,
        *,
        envelope_id: str,
        peer: str,
        direction: str,
        kind: str,
        state: str,
        envelope: bytes,
        error_code: int = 0,
        reply_to: int | None = None,
    ) -> int:
        """Insert one envelope row (committed on return) and return its ``seq``."""
        now = _now()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO envelopes (envelope_id, peer, direction, kind, state, error_code, "
                "digest, reply_to, envelope, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    envelope_id,
                    peer,
                    direction,
                    kind,
                    state,
                    error_code,
                    digest(envelope),
                    reply_to,
                    envelope,
                    now,
                    now,
                ),
            )
            return int(cur.lastrowid or 0)

    def add_reply(
        self,
        request_seq: int,
        *,
        state: str,
        envelope: bytes,
        direction: str,
        error_code: int = 0,
        discard_request: bool = False,
        origin: tuple[int, str, int] | None = None,
    ) -> int:
        """Store a reply and move its request to ``state``, in one transaction."""
        now = _now()
        with self._tx() as db:
            row = db.execute(
                "SELECT envelope_id, peer FROM envelopes WHERE seq = ?", (request_seq,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no stored request {request_seq}")
            if discard_request:
                db.execute("UPDATE envelopes SET envelope = x'' WHERE seq = ?", (request_seq,))
            db.execute(
                "UPDATE envelopes SET state = ?, error_code = ?, updated_at = ? WHERE seq = ?",
                (state, error_code, now, request_seq),
            )
            cur = db.execute(
                "INSERT INTO envelopes (envelope_id, peer, direction, kind, state, error_code, "
                "digest, reply_to, envelope, created_at, updated_at) "
                "VALUES (?, ?, ?, 'reply', ?, ?, ?, ?, ?, ?, ?)",
                (row[0], row[1], direction, state, error_code, digest(envelope), request_seq,
                 envelope, now, now),
            )
            if origin is not None:
                _set_state(db, *origin, now)
            return int(cur.lastrowid or 0)

    def add_exchange(
        self,
        *,
        envelope_id: str,
        peer: str,
        request: bytes,
        request_digest: str,
        reply: bytes,
        state: str,
        error_code: int = 0,
        origin: tuple[int, str, int] | None = None,
    ) -> int | None:
        """Store an incoming request and our reply in *one* transaction (one fsync).

        Returns the request's ``seq``, or None when the same request (peer, id, digest)
        is already stored: a concurrent retry, which the caller answers from the store.
        ``request`` may be ``b""`` for rejected input (only the record is kept).
        ``origin`` = ``(seq, state, error_code)`` moves the transfer this answers (one we
        originated) to its final state in the same transaction.
        """
        now = _now()
        with self._tx() as db:
            try:
                cur = db.execute(
                    "INSERT INTO envelopes (envelope_id, peer, direction, kind, state, "
                    "error_code, digest, reply_to, envelope, created_at, updated_at) "
                    "VALUES (?, ?, 'incoming', 'request', ?, ?, ?, NULL, ?, ?, ?)",
                    (envelope_id, peer, state, error_code, request_digest, request, now, now),
                )
            except sqlite3.IntegrityError:
                return None
            seq = int(cur.lastrowid or 0)
            db.execute(
                "INSERT INTO envelopes (envelope_id, peer, direction, kind, state, error_code, "
                "digest, reply_to, envelope, created_at, updated_at) "
                "VALUES (?, ?, 'outgoing', 'reply', ?, ?, ?, ?, ?, ?, ?)",
                (envelope_id, peer, state, error_code, digest(reply), seq, reply, now, now),
            )
            if origin is not None:
                _set_state(db, *origin, now)
            return seq

    def set_state(self, seq: int, state: str, *, error_code: int | None = None) -> None:
        with self._tx() as db:
            if error_code is None:
                db.execute(
                    "UPDATE envelopes SET state = ?, updated_at = ? WHERE seq = ?",
                    (state, _now(), seq),
                )
            else:
                db.execute(
                    "UPDATE envelopes SET state = ?, error_code = ?, updated_at = ? WHERE seq = ?",
                    (state, error_code, _now(), seq),
                )

    # ------------------------------------------------------------------- reads

    def _read(self, sql: str, args: tuple[object, ...]) -> list[Any]:  # Any: sqlite3 rows
        guard = self._write_lock if self._uri else contextlib.nullcontext()
        with guard:
            return self._db().execute(sql, args).fetchall()

    def _rows(self, where: str, args: tuple[object, ...]) -> list[StoredEnvelope]:
        sql = f"SELECT {_COLUMNS} FROM envelopes WHERE {where}"  # noqa: S608 - constant text
        try:
            rows = self._read(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: transfer store read failed: {exc}") from exc
        return [StoredEnvelope(*row) for row in rows]

    def find_request(
        self, peer: str, envelope_id: str, envelope_digest: str
    ) -> StoredEnvelope | None:
        rows = self._rows(
            "peer = ? AND envelope_id = ? AND digest = ? "
            "AND direction = 'incoming' AND kind = 'request'",
            (peer, envelope_id, envelope_digest),
        )
        return rows[0] if rows else None

    def reply_to(self, seq: int) -> StoredEnvelope | None:
        rows = self._rows(
            "reply_to = ? ORDER BY seq DESC LIMIT 1",
            (seq,),
        )
        return rows[0] if rows else None

    def get(self, seq: int) -> StoredEnvelope | None:
        rows = self._rows("seq = ?", (seq,))
        return rows[0] if rows else None

    def exchange(self, envelope_id: str) -> list[StoredEnvelope]:
        """Every stored envelope of one exchange, in order."""
        return self._rows(
            "envelope_id = ? ORDER BY seq", (envelope_id,)
        )

    def initiated(self, envelope_id: str) -> StoredEnvelope | None:
        """The request that opened exchange ``envelope_id`` if *this node* sent it.

        Used to recognise asynchronous callbacks: a later incoming envelope with the
        id of a transfer we originated is the beneficiary's answer, not a new transfer.
        """
        rows = self._rows(
            "envelope_id = ? ORDER BY seq LIMIT 1",
            (envelope_id,),
        )
        if rows and rows[0].direction == "outgoing" and rows[0].kind == "request":
            return rows[0]
        return None

    def summaries(self, *, peer: str | None = None, limit: int = 100) -> list[TransferSummary]:
        """One line per exchange, newest first; the state is that of its latest request."""
        sql = (
            "SELECT e.envelope_id, first.peer, first.direction, "
            "(SELECT state FROM envelopes r WHERE r.envelope_id = e.envelope_id "
            " AND r.kind = 'request' ORDER BY r.seq DESC LIMIT 1), "
            "COUNT(*), MIN(e.created_at), MAX(e.updated_at) "
            "FROM envelopes e JOIN envelopes first ON first.seq = "
            "(SELECT MIN(seq) FROM envelopes f WHERE f.envelope_id = e.envelope_id) "
        )
        args: tuple[object, ...] = ()
        if peer:
            sql += "WHERE first.peer = ? "
            args = (peer,)
        sql += "GROUP BY e.envelope_id ORDER BY MAX(e.seq) DESC LIMIT ?"
        try:
            rows = self._read(sql, (*args, limit))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: transfer store read failed: {exc}") from exc
        return [TransferSummary(*row) for row in rows]

    def count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM envelopes", ())[0][0])
