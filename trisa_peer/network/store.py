"""Persistent transfers: every envelope as it crossed the wire, in SQLite or PostgreSQL.

Each row is one envelope: ``direction`` (``incoming``/``outgoing``), ``kind``
(``request``, or ``reply`` to the row named by ``reply_to``), the peer's common name,
the transfer's ``state`` and the serialised ``SecureEnvelope`` exactly as sent or
received (still sealed; payloads are never stored in clear). Rows are committed
before the node answers, so a reply the peer has seen is never lost by a restart.

Idempotency: an incoming request is identified by (peer, envelope id, digest of its
*opened payload*) (``payload_digest``; ``digest`` keeps the SHA-256 of the bytes first
received, a fast path for byte-identical retries). A retry of the same message (same
bytes, or re-sealed, re-encoded, with unknown fields appended) is answered with the
stored reply and is not processed again; a *different* payload with the same id is a
new request only as a continuation of that transfer (see ``Exchange``).

Claims (schema 2): before the user's handler runs, the request row is committed in
state ``claimed`` with ``attempt`` 1; the reply and the final state are committed after
it returns. A claim found unfinished (the process died in between) runs again with
``attempt`` + 1: the handler runs at least once, and exactly-once side effects key on
the idempotency key it is given.

Pending transfers (schema 2): ``deadline`` holds the reply window's end
(``reply_not_after``), ``resolver`` the name of the resolve hook to ask after a
restart and ``resolution`` a decision not yet delivered (``accept`` or ``reject:CODE``).

For rejected input only the record of the rejection is kept: the request row holds no
envelope bytes, only its digest and the error code. Those *rejection records* (refused
input, not a handler's business rejection, whose request is kept whole) are bounded:
at most ``max_rejections`` are kept, none older than ``keep_rejections``; the oldest go
first, pruned on write (at most once a minute, or after 256 commits).

Transfers (schema 3): one ``transfers`` row per envelope id (peer and direction of its
first envelope, state of its latest request, message count, first and last times, and
``last_seq``, the key ``transfers list`` orders and pages by), rewritten from that id's
envelopes in the same transaction as every change to them; indexed for the newest
first and a peer's newest first, so listing costs the same at any history size.

Retention (schema 4): stored envelopes hold customers' personal data (sealed, but
the node can open them). :meth:`TransferStore.purge` empties the envelope bytes of
transfers whose last envelope is older than a retention period and none of whose
requests is still ``pending`` or ``claimed``, and stamps ``purged_at``; every other
column stays as the audit record (ids, peer, direction, kind, states, TRISA codes,
digests, attempts, times). :meth:`TransferStore.audit` reads that record (never
envelope bytes nor a resolution's message text) for ``transfers export``. Purged
rows are not rejection records (they are never pruned as such).

Several processes or replicas on one database (schema-independent): every write takes
:meth:`~trisa_peer.storage.Tx.lock` on ``transfer <envelope id>`` (PostgreSQL advisory
lock; SQLite writers exclude each other anyway), so the claim check, the insert and the
``transfers`` row see each other's commits; the unique index on (peer, id, digest) is
the last guard (a :class:`StoreConflictError` there is re-read, never shown to a peer).
A claim is also *held* (:meth:`~trisa_peer.storage.Database.hold`) by the store object
that runs its handler until :meth:`TransferStore.release`: a claim that is unfinished
but held by a live replica is ``busy`` (the caller waits for it, then answers from it);
one whose holder died (its process is gone, kill -9 included) is taken again with
``attempt`` + 1.

Durability: commits are durable by default on both backends (see
:mod:`trisa_peer.storage.database`). On SQLite a commit is acknowledged only if the path
still names the database file this store opened (same device and inode): a deleted
``--db`` folder leaves SQLite writing to an unlinked file whose commits vanish at
restart; once that is seen the store refuses every write (:class:`StoreError`,
UNAVAILABLE to peers) and :meth:`TransferStore.problem` says why (health reports the
node unready) until restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, StoreConflictError, StoreError
from ..storage import Database, Tx, migrate, open_database, parse_url
from ..storage.url import DatabaseURL

__all__ = [
    "AUDIT_FIELDS", "DEFAULT_PURGE_BATCH", "Claim", "ExchangeView", "RowBrief", "StoredEnvelope",
    "TransferStore", "TransferSummary", "digest", "open_store",
]

log = logging.getLogger("trisa_peer.network")

#: Rejection records (refused input) kept at most this long, and at most this many.
DEFAULT_KEEP_REJECTIONS = timedelta(days=30)
DEFAULT_MAX_REJECTIONS = 10_000

SCHEMA_VERSION = 5

#: A rejection record: refused input, kept without its bytes (see the module docstring).
_REFUSED = ("direction = 'incoming' AND kind = 'request' AND error_code != 0 "
            "AND envelope = {EMPTY_BLOB}")

_FIRST = ("(SELECT {col} FROM envelopes f WHERE f.envelope_id = e.envelope_id "
          "ORDER BY f.seq LIMIT 1)")
_LATEST_STATE = ("(SELECT r.state FROM envelopes r WHERE r.envelope_id = e.envelope_id "
                 "AND r.kind = 'request' ORDER BY r.seq DESC LIMIT 1)")

#: Transfers a purge may take (a ``transfers t`` row): bytes still stored, nothing open.
_PURGEABLE = (
    "EXISTS (SELECT 1 FROM envelopes b WHERE b.envelope_id = t.envelope_id "
    "AND length(b.envelope) > 0) AND NOT EXISTS (SELECT 1 FROM envelopes p "
    "WHERE p.envelope_id = t.envelope_id AND p.kind = 'request' "
    "AND p.state IN ('pending', 'claimed'))"
)
#: Transfers purged per pass by default (each in its own short transaction).
DEFAULT_PURGE_BATCH = 500
#: What ``transfers export`` writes per envelope (:meth:`TransferStore.audit`), in order.
AUDIT_FIELDS = (
    "seq", "envelope_id", "peer", "direction", "kind", "state", "error_code", "digest",
    "payload_digest", "reply_to", "attempt", "created_at", "updated_at", "deadline",
    "purged_at", "stored",
)

#: The schema, version by version (:mod:`trisa_peer.storage.migrate`).
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE IF NOT EXISTS envelopes (
    seq          {SERIAL_PK},
    envelope_id  TEXT    NOT NULL,
    peer         TEXT    NOT NULL,
    direction    TEXT    NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
    kind         TEXT    NOT NULL CHECK (kind IN ('request', 'reply')),
    state        TEXT    NOT NULL,
    error_code   INTEGER NOT NULL DEFAULT 0,
    digest       TEXT    NOT NULL,
    reply_to     {BIGINT} REFERENCES envelopes(seq),
    envelope     {BLOB}  NOT NULL,
    created_at   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS envelopes_by_id ON envelopes (envelope_id);
CREATE INDEX IF NOT EXISTS envelopes_by_reply ON envelopes (reply_to);
CREATE UNIQUE INDEX IF NOT EXISTS incoming_requests
    ON envelopes (peer, envelope_id, digest) WHERE direction = 'incoming' AND kind = 'request'
""",
    # payload digest, attempt counter, pending deadline/resolver/resolution
    2: """
ALTER TABLE envelopes ADD COLUMN payload_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE envelopes ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE envelopes ADD COLUMN deadline TEXT;
ALTER TABLE envelopes ADD COLUMN resolver TEXT NOT NULL DEFAULT '';
ALTER TABLE envelopes ADD COLUMN resolution TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS incoming_by_payload
    ON envelopes (peer, envelope_id, payload_digest)
    WHERE direction = 'incoming' AND kind = 'request';
CREATE INDEX IF NOT EXISTS envelopes_by_deadline ON envelopes (deadline)
    WHERE deadline IS NOT NULL
""",
    # one row per transfer (backfilled), rejection records indexed
    3: f"""
CREATE TABLE transfers (
    envelope_id  TEXT     PRIMARY KEY,
    peer         TEXT     NOT NULL,
    direction    TEXT     NOT NULL,
    state        TEXT,
    messages     INTEGER  NOT NULL,
    first_at     TEXT     NOT NULL,
    last_at      TEXT     NOT NULL,
    last_seq     {{BIGINT}} NOT NULL
);
INSERT INTO transfers (envelope_id, peer, direction, state, messages, first_at, last_at,
                       last_seq)
    SELECT e.envelope_id, {_FIRST.format(col="f.peer")}, {_FIRST.format(col="f.direction")},
           {_LATEST_STATE}, COUNT(*), MIN(e.created_at), MAX(e.updated_at), MAX(e.seq)
    FROM envelopes e GROUP BY e.envelope_id;
CREATE UNIQUE INDEX transfers_latest ON transfers (last_seq);
CREATE INDEX transfers_by_peer ON transfers (peer, last_seq);
CREATE INDEX IF NOT EXISTS rejection_records ON envelopes (created_at) WHERE {_REFUSED}
""",  # noqa: S608 - constant text
    # retention: when an envelope's bytes were purged (NULL: still stored)
    4: """
ALTER TABLE envelopes ADD COLUMN purged_at TEXT;
CREATE INDEX IF NOT EXISTS transfers_by_last_at ON transfers (last_at)
""",
    # the pending loop asks for pending requests every second: without this index that
    # was a scan of every stored envelope (about 9 ms at 20,000, growing with the store)
    5: """
CREATE INDEX IF NOT EXISTS pending_requests ON envelopes (seq)
    WHERE kind = 'request' AND state = 'pending'
""",
}


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
    payload_digest: str = ""
    attempt: int = 0
    deadline: str | None = None
    resolver: str = ""
    resolution: str = ""


@dataclass(frozen=True)
class Claim:
    """The request row a handler run belongs to: ``attempt`` 1 for a new claim.

    ``busy``: another live replica holds this unfinished claim right now (nothing to run
    here; wait with :meth:`TransferStore.wait`, then claim again)."""

    seq: int
    attempt: int
    #: the stored reply when this message was already answered (nothing to run)
    reply: StoredEnvelope | None = None
    busy: bool = False
    #: the holder key this store holds while the handler runs (see ``release``)
    key: str = ""


@dataclass(frozen=True)
class TransferSummary:
    """One exchange (envelope id) as ``transfers list`` shows it; ``key`` pages the list
    (``before=key`` gives the ones listed after it)."""

    envelope_id: str
    peer: str
    direction: str
    state: str
    messages: int
    first_at: str
    last_at: str
    key: int = 0


@dataclass(frozen=True)
class RowBrief:
    """One stored envelope without its bytes (``stored``: whether it still has them)."""

    seq: int
    peer: str
    direction: str
    kind: str
    state: str
    error_code: int
    digest: str
    payload_digest: str
    reply_to: int | None
    stored: bool


_BRIEF = ("seq, peer, direction, kind, state, error_code, digest, payload_digest, reply_to, "
          "length(envelope) > 0")


class ExchangeView:
    """Every envelope of one envelope id as one read saw them (no bytes), answering what
    the incoming path asks of the store (``find_request``, ``find_message``,
    ``initiated``, ``latest_request``, ``reply_to``) with the same rules as those
    methods, from one snapshot instead of one query each. Rows that need their bytes
    (a stored reply, the request this node initiated) are read by ``seq`` when asked."""

    def __init__(self, store: TransferStore, envelope_id: str, rows: list[RowBrief]) -> None:
        self.store = store
        self.envelope_id = envelope_id
        self.rows = rows  # oldest first

    def _incoming(self, peer: str) -> Iterator[RowBrief]:
        return (r for r in self.rows if r.peer == peer and r.direction == "incoming"
                and r.kind == "request")

    def request(self, peer: str, envelope_digest: str) -> RowBrief | None:
        """:meth:`TransferStore.find_request` (at most one row: the unique index)."""
        return next((r for r in self._incoming(peer) if r.digest == envelope_digest), None)

    def message(self, peer: str, payload_digest: str) -> RowBrief | None:
        """:meth:`TransferStore.find_message`: the first request carrying this payload."""
        return next((r for r in self._incoming(peer) if r.payload_digest == payload_digest),
                    None)

    def latest_request(self, peer: str) -> RowBrief | None:
        """:meth:`TransferStore.latest_request`: the newest opened request of ``peer``."""
        return next((r for r in reversed(self.rows) if r.peer == peer
                     and r.direction == "incoming" and r.kind == "request" and r.stored), None)

    def reply_to(self, seq: int) -> StoredEnvelope | None:
        """:meth:`TransferStore.reply_to` (read by ``seq`` only when there is one)."""
        reply = next((r for r in reversed(self.rows) if r.reply_to == seq), None)
        return None if reply is None else self.store.get(reply.seq)

    def initiated(self) -> StoredEnvelope | None:
        """:meth:`TransferStore.initiated` (read by ``seq`` only when this node sent it)."""
        first = self.rows[0] if self.rows else None
        if first is None or (first.direction, first.kind) != ("outgoing", "request"):
            return None
        return self.store.get(first.seq)

    def new_transfer(self, peer: str) -> bool:
        """No transfer under this id exchanged with ``peer`` yet: neither one we sent nor
        an envelope of theirs we took in (refused input does not count)."""
        return not any(
            r.peer.lower() == peer.lower()
            and (r.error_code == 0 or (r.direction, r.kind) == ("outgoing", "request"))
            for r in self.rows
        )


_COLUMNS = (
    "seq, envelope_id, peer, direction, kind, state, error_code, digest, reply_to, "
    "envelope, created_at, updated_at, payload_digest, attempt, deadline, resolver, resolution"
)

_INSERT = (
    "INSERT INTO envelopes (envelope_id, peer, direction, kind, state, error_code, digest, "
    "reply_to, envelope, created_at, updated_at, payload_digest, attempt) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _envelope(row: tuple[Any, ...]) -> StoredEnvelope:  # Any: one database row
    values = list(row)
    values[9] = bytes(values[9])  # memoryview on some drivers
    return StoredEnvelope(*values)


def _transfer_lock(tx: Tx, envelope_id: str) -> None:
    tx.lock(f"transfer {envelope_id}")


_REFRESH = (
    "INSERT INTO transfers (envelope_id, peer, direction, state, messages, first_at, "
    "last_at, last_seq) SELECT ?, f.peer, f.direction, (SELECT r.state FROM envelopes r "
    "WHERE r.envelope_id = ? AND r.kind = 'request' ORDER BY r.seq DESC LIMIT 1), "
    "a.n, a.first_at, a.last_at, a.last_seq FROM (SELECT COUNT(*) AS n, "
    "MIN(created_at) AS first_at, MAX(updated_at) AS last_at, MAX(seq) AS last_seq "
    "FROM envelopes WHERE envelope_id = ?) a, (SELECT peer, direction FROM envelopes "
    "WHERE envelope_id = ? ORDER BY seq LIMIT 1) f WHERE a.n > 0 "
    "ON CONFLICT (envelope_id) DO UPDATE SET peer = excluded.peer, "
    "direction = excluded.direction, state = excluded.state, messages = excluded.messages, "
    "first_at = excluded.first_at, last_at = excluded.last_at, last_seq = excluded.last_seq"
)


def _refresh(tx: Tx, envelope_id: str, *, deleted: bool = False) -> None:
    """Rewrite the ``transfers`` row of ``envelope_id`` from its envelopes (one
    statement); ``deleted``: envelopes were deleted, so the row may have to go."""
    tx.execute(_REFRESH, (envelope_id,) * 4)
    if deleted:
        tx.execute("DELETE FROM transfers WHERE envelope_id = ? AND NOT EXISTS "
                   "(SELECT 1 FROM envelopes WHERE envelope_id = ?)", (envelope_id,) * 2)


def _set_state(tx: Tx, seq: int, state: str, error_code: int, now: str) -> None:
    tx.execute(
        "UPDATE envelopes SET state = ?, error_code = ?, updated_at = ? WHERE seq = ?",
        (state, error_code, now, seq),
    )


class TransferStore:
    """Thread-safe transfer store on a :class:`~trisa_peer.storage.Database`.

    ``location``: a path, ``sqlite:///...``, ``:memory:`` or ``postgresql://...`` (see
    :mod:`trisa_peer.storage.url`), or an open :class:`Database` (then closed with the
    store). ``durable=True`` (the default) makes every acknowledged commit survive a
    power loss (SQLite ``synchronous=FULL``, PostgreSQL ``synchronous_commit=on``);
    ``durable=False`` survives a crash of the process only.
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | DatabaseURL | Database,
        *,
        durable: bool = True,
        keep_rejections: timedelta = DEFAULT_KEEP_REJECTIONS,
        max_rejections: int = DEFAULT_MAX_REJECTIONS,
        password_file: str | os.PathLike[str] | None = None,
        migrate_schema: bool = True,
    ) -> None:
        if max_rejections < 0 or keep_rejections < timedelta(0):
            raise StoreError("rejection retention must not be negative")
        self.keep_rejections = keep_rejections
        self.max_rejections = max_rejections
        self.prune_interval = 60.0  # seconds between prunes on write ...
        self.prune_commits = 256  # ... or commits, whichever comes first
        self._pruned_at = time.monotonic()
        self._commits = 0
        if isinstance(location, Database):
            self.db = location
        else:
            if isinstance(location, Path | str) and not isinstance(location, DatabaseURL):
                text = os.fspath(location)
                if "://" not in text and text != ":memory:" \
                        and not Path(text).parent.is_dir():
                    raise StoreError(f"{text}: directory does not exist")
            self.db = open_database(location, purpose="transfer store", durable=durable,
                                    password_file=password_file)
        self.durable = self.db.durable
        self.path = self.db.name  # redacted: safe to show
        try:
            migrate(self.db, MIGRATIONS, component="transfers", apply=migrate_schema)
        except BaseException:
            self.db.close()
            raise

    # ------------------------------------------------------------ transactions

    def _tx(self) -> _Write:
        return _Write(self)

    # ------------------------------------------------------------ durability

    def problem(self) -> str | None:
        """Why this store cannot durably record anything (None when it can): on SQLite,
        its path no longer names the database file it opened (deleted or replaced).
        Sticky until restart; logged once. One ``stat`` per call."""
        return self.db.problem()

    # ------------------------------------------------------------ rejection retention

    def _maybe_prune(self) -> None:
        self._commits += 1
        if (self._commits < self.prune_commits
                and time.monotonic() - self._pruned_at < self.prune_interval):
            return
        self.prune_rejections()

    def prune_rejections(self, *, now: datetime | None = None) -> int:
        """Delete rejection records (refused input: an incoming request kept without its
        bytes, with an error code, and its reply) beyond ``max_rejections`` or older than
        ``keep_rejections``; return how many records went."""
        cutoff = ((now or datetime.now(UTC)) - self.keep_rejections).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")
        self._commits = 0  # the prune's own commit does not start another one
        self._pruned_at = time.monotonic()
        with self.db.transaction() as tx:
            tx.lock("transfer store prune")
            row = tx.one(
                f"SELECT created_at, seq FROM envelopes WHERE {_REFUSED} "  # noqa: S608
                "AND purged_at IS NULL "
                "ORDER BY created_at DESC, seq DESC LIMIT 1 OFFSET ?", (self.max_rejections,)
            )
            edge = (row[0], row[1]) if row is not None else ("", 0)
            victims = (
                f"SELECT seq FROM envelopes WHERE {_REFUSED} "  # noqa: S608
                "AND purged_at IS NULL AND "
                "(created_at < ? OR created_at < ? OR (created_at = ? AND seq <= ?))"
            )
            args = (cutoff, edge[0], edge[0], edge[1])
            ids = [r[0] for r in tx.all(f"SELECT DISTINCT envelope_id FROM envelopes "  # noqa: S608
                                        f"WHERE seq IN ({victims})", args)]
            tx.execute(f"DELETE FROM envelopes WHERE reply_to IN ({victims})", args)  # noqa: S608
            gone = tx.execute(f"DELETE FROM envelopes WHERE seq IN ({victims})", args)  # noqa: S608
            for envelope_id in ids:
                _refresh(tx, envelope_id, deleted=True)
            return gone

    def rejection_records(self) -> int:
        """How many rejection records (refused input) the store holds."""
        row = self.db.read_one(f"SELECT COUNT(*) FROM envelopes WHERE {_REFUSED} "  # noqa: S608
                               "AND purged_at IS NULL")
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.db.close()

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
        with self._tx() as tx:
            _transfer_lock(tx, envelope_id)
            seq = tx.insert(_INSERT, (envelope_id, peer, direction, kind, state, error_code,
                                      digest(envelope), reply_to, envelope, now, now, "", 0))
            _refresh(tx, envelope_id)
            return seq

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
        pending: tuple[str, str] | None = None,
        envelope_id: str | None = None,
    ) -> int:
        """Store a reply and move its request to ``state``, in one transaction.

        ``pending`` = ``(deadline, resolver)`` records a pending transfer's reply window
        end and resolve hook on the request row in the same transaction.
        ``envelope_id``: the request's id when the caller knows it (one statement fewer:
        the state change checks it and returns the request's peer); a request ``seq``
        that is not of that id is a :class:`StoreError` like an unknown one."""
        now = _now()
        with self._tx() as tx:
            if envelope_id is not None:
                _transfer_lock(tx, envelope_id)
                found = tx.all(
                    "UPDATE envelopes SET state = ?, error_code = ?, updated_at = ? "
                    "WHERE seq = ? AND envelope_id = ? RETURNING envelope_id, peer",
                    (state, error_code, now, request_seq, envelope_id))
                if not found:
                    raise StoreError(f"no stored request {request_seq} of {envelope_id}")
                row = found[0]
            else:
                known = tx.one("SELECT envelope_id, peer FROM envelopes WHERE seq = ?",
                               (request_seq,))
                if known is None:
                    raise StoreError(f"no stored request {request_seq}")
                row = known
                _transfer_lock(tx, row[0])
                _set_state(tx, request_seq, state, error_code, now)
            if discard_request:
                tx.execute("UPDATE envelopes SET envelope = {EMPTY_BLOB} WHERE seq = ?",
                           (request_seq,))
            seq = tx.insert(_INSERT, (row[0], row[1], direction, "reply", state, error_code,
                                      digest(envelope), request_seq, envelope, now, now, "", 0))
            if origin is not None:
                _set_state(tx, *origin, now)
            if pending is not None:
                tx.execute("UPDATE envelopes SET deadline = ?, resolver = ? WHERE seq = ?",
                           (*pending, request_seq))
            _refresh(tx, row[0])
            if origin is not None:
                self._refresh_seq(tx, origin[0], row[0])
            return seq

    @staticmethod
    def _refresh_seq(tx: Tx, seq: int, done: str) -> None:
        other = tx.one("SELECT envelope_id FROM envelopes WHERE seq = ?", (seq,))
        if other is not None and other[0] != done:
            _refresh(tx, other[0])

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
        payload_digest: str = "",
    ) -> int | None:
        """Store an incoming request and our reply in *one* transaction (one fsync).

        Returns the request's ``seq``, or None when the same request (peer, id, digest)
        is already stored: a concurrent retry, which the caller answers from the store.
        ``request`` may be ``b""`` for rejected input (only the record is kept).
        ``origin`` = ``(seq, state, error_code)`` moves the transfer this answers (one we
        originated) to its final state in the same transaction.
        """
        now = _now()
        try:
            with self._tx() as tx:
                _transfer_lock(tx, envelope_id)
                if tx.one("SELECT seq FROM envelopes WHERE peer = ? AND envelope_id = ? "
                          "AND digest = ? AND direction = 'incoming' AND kind = 'request'",
                          (peer, envelope_id, request_digest)) is not None:
                    return None
                seq = tx.insert(_INSERT, (envelope_id, peer, "incoming", "request", state,
                                          error_code, request_digest, None, request, now, now,
                                          payload_digest, 0))
                tx.insert(_INSERT, (envelope_id, peer, "outgoing", "reply", state, error_code,
                                    digest(reply), seq, reply, now, now, "", 0))
                if origin is not None:
                    _set_state(tx, *origin, now)
                _refresh(tx, envelope_id)
                if origin is not None:
                    self._refresh_seq(tx, origin[0], envelope_id)
                return seq
        except StoreConflictError:
            # the unique index: another writer stored the same request first
            log.info("envelope stored concurrently by another writer; answering from it")
            return None

    def claim(
        self,
        *,
        envelope_id: str,
        peer: str,
        request: bytes,
        request_digest: str,
        payload_digest: str,
    ) -> Claim:
        """Record, committed, that the handler is about to run for this message, and hold
        it (:meth:`release` when the reply is committed or the run is abandoned).

        A new message gets a row in state ``claimed`` (attempt 1). A message already
        answered returns its stored reply. A claim left unfinished is taken again with
        ``attempt`` + 1 when its holder is gone (a crash between the claim and the
        reply's commit), and is ``busy`` while another live store object holds it.
        """
        key = f"claim {peer}\x00{envelope_id}\x00{payload_digest}"
        for _ in range(3):  # a unique-index race is re-read (at most twice in practice)
            try:
                return self._claim(key, envelope_id, peer, request, request_digest,
                                   payload_digest)
            except StoreConflictError:
                self.db.release(key)
                log.info("claim raced with another writer; reading it again")
        raise StoreError(f"{envelope_id}: claim kept conflicting with other writers")

    def _claim(self, key: str, envelope_id: str, peer: str, request: bytes,
               request_digest: str, payload_digest: str) -> Claim:
        now = _now()
        try:
            with self._tx() as tx:
                _transfer_lock(tx, envelope_id)
                # This payload's request (the first), else the same bytes stored before
                # under no payload digest (a version-1 row): one statement for both.
                row = tx.one(
                    "SELECT seq, attempt, payload_digest FROM envelopes WHERE peer = ? "
                    "AND envelope_id = ? AND direction = 'incoming' AND kind = 'request' "
                    "AND (payload_digest = ? OR (digest = ? AND payload_digest = '')) "
                    "ORDER BY CASE WHEN payload_digest = ? THEN 0 ELSE 1 END, seq LIMIT 1",
                    (peer, envelope_id, payload_digest, request_digest, payload_digest),
                )
                if row is not None and row[2] != payload_digest:
                    tx.execute("UPDATE envelopes SET payload_digest = ? WHERE seq = ?",
                               (payload_digest, row[0]))
                if row is not None:
                    reply = tx.one(
                        f"SELECT {_COLUMNS} FROM envelopes WHERE reply_to = ? "  # noqa: S608
                        "ORDER BY seq DESC LIMIT 1", (row[0],),
                    )
                    if reply is not None:
                        return Claim(int(row[0]), int(row[1]), _envelope(reply))
                    if not self.db.hold(key):
                        return Claim(int(row[0]), int(row[1]), busy=True, key=key)
                    attempt = int(row[1]) + 1
                    tx.execute("UPDATE envelopes SET attempt = ?, updated_at = ? WHERE seq = ?",
                               (attempt, now, row[0]))
                    _refresh(tx, envelope_id)
                    return Claim(int(row[0]), attempt, key=key)
                if not self.db.hold(key):  # a holder without a row: its commit failed
                    return Claim(0, 0, busy=True, key=key)
                seq = tx.insert(_INSERT, (envelope_id, peer, "incoming", "request", "claimed", 0,
                                          request_digest, None, request, now, now,
                                          payload_digest, 1))
                _refresh(tx, envelope_id)
                return Claim(seq, 1, key=key)
        except BaseException:
            self.db.release(key)
            raise

    def release(self, claim: Claim) -> None:
        """This store no longer works on ``claim`` (its reply is committed, or the run was
        abandoned): another replica may take it."""
        if claim.key and not claim.busy:
            self.db.release(claim.key)

    @contextmanager
    def exclusive(self, peer: str, envelope_id: str, timeout: float) -> Iterator[bool]:
        """Hold (peer, envelope id) across processes and replicas while the body runs:
        yields True once this store object holds it (waiting up to ``timeout`` seconds
        for another holder to finish or die), False when it is still held elsewhere."""
        key = f"exchange {peer}\x00{envelope_id}"
        end = time.monotonic() + timeout
        while not self.db.hold(key):
            if time.monotonic() >= end:
                yield False
                return
            time.sleep(0.005)
        try:
            yield True
        finally:
            self.db.release(key)

    def wait(self, claim: Claim, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the holder of a ``busy`` claim to finish or
        die; True when it did (claim again to get its reply or run it)."""
        return self.db.wait_free(claim.key, timeout)

    def set_resolution(self, seq: int, resolution: str) -> bool:
        """Record a pending transfer's decision (delivered later); False unless pending."""
        with self._tx() as tx:
            self._lock_seq(tx, seq)
            changed = tx.execute(
                "UPDATE envelopes SET resolution = ?, updated_at = ? "
                "WHERE seq = ? AND state = 'pending' AND kind = 'request'",
                (resolution, _now(), seq),
            )
            self._refresh_seq(tx, seq, "")
            return changed == 1

    @staticmethod
    def _lock_seq(tx: Tx, seq: int) -> None:
        row = tx.one("SELECT envelope_id FROM envelopes WHERE seq = ?", (seq,))
        if row is not None:
            _transfer_lock(tx, row[0])

    def pending(self, *, direction: str | None = None) -> list[StoredEnvelope]:
        """Requests (either direction) still ``pending``, oldest first."""
        where = "kind = 'request' AND state = 'pending'"
        args: tuple[object, ...] = ()
        if direction is not None:
            where += " AND direction = ?"
            args = (direction,)
        return self._rows(where + " ORDER BY seq", args)

    def set_state(self, seq: int, state: str, *, error_code: int | None = None) -> None:
        with self._tx() as tx:
            self._lock_seq(tx, seq)
            if error_code is None:
                tx.execute("UPDATE envelopes SET state = ?, updated_at = ? WHERE seq = ?",
                           (state, _now(), seq))
            else:
                _set_state(tx, seq, state, error_code, _now())
            self._refresh_seq(tx, seq, "")

    # ------------------------------------------------------------------- reads

    def _rows(self, where: str, args: tuple[object, ...]) -> list[StoredEnvelope]:
        sql = f"SELECT {_COLUMNS} FROM envelopes WHERE {where}"  # noqa: S608 - constant text
        return [_envelope(row) for row in self.db.read(sql, args)]

    def view(self, envelope_id: str) -> ExchangeView:
        """Every envelope of ``envelope_id`` without bytes, in one read (see
        :class:`ExchangeView`)."""
        rows = self.db.read(f"SELECT {_BRIEF} FROM envelopes WHERE envelope_id = ? "  # noqa: S608
                            "ORDER BY seq", (envelope_id,))
        return ExchangeView(self, envelope_id, [
            RowBrief(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7],
                     None if r[8] is None else int(r[8]), bool(r[9])) for r in rows])

    def find_request(
        self, peer: str, envelope_id: str, envelope_digest: str
    ) -> StoredEnvelope | None:
        rows = self._rows(
            "peer = ? AND envelope_id = ? AND digest = ? "
            "AND direction = 'incoming' AND kind = 'request'",
            (peer, envelope_id, envelope_digest),
        )
        return rows[0] if rows else None

    def find_message(
        self, peer: str, envelope_id: str, payload_digest: str
    ) -> StoredEnvelope | None:
        """The incoming request carrying this opened payload under this id, if any."""
        rows = self._rows(
            "peer = ? AND envelope_id = ? AND payload_digest = ? "
            "AND direction = 'incoming' AND kind = 'request' ORDER BY seq LIMIT 1",
            (peer, envelope_id, payload_digest),
        )
        return rows[0] if rows else None

    def latest_request(self, peer: str, envelope_id: str) -> StoredEnvelope | None:
        """The newest incoming request from ``peer`` under ``envelope_id`` that was opened
        (rows of input rejected before it could be opened keep no bytes and use no id)."""
        rows = self._rows(
            "peer = ? AND envelope_id = ? AND direction = 'incoming' AND kind = 'request' "
            "AND length(envelope) > 0 ORDER BY seq DESC LIMIT 1",
            (peer, envelope_id),
        )
        return rows[0] if rows else None

    def latest_outgoing(self, envelope_id: str) -> StoredEnvelope | None:
        """The newest request this node sent under ``envelope_id``."""
        rows = self._rows(
            "envelope_id = ? AND direction = 'outgoing' AND kind = 'request' "
            "ORDER BY seq DESC LIMIT 1",
            (envelope_id,),
        )
        return rows[0] if rows else None

    def reply_to(self, seq: int) -> StoredEnvelope | None:
        rows = self._rows("reply_to = ? ORDER BY seq DESC LIMIT 1", (seq,))
        return rows[0] if rows else None

    def get(self, seq: int) -> StoredEnvelope | None:
        rows = self._rows("seq = ?", (seq,))
        return rows[0] if rows else None

    def exchange(self, envelope_id: str) -> list[StoredEnvelope]:
        """Every stored envelope of one exchange, in order."""
        return self._rows("envelope_id = ? ORDER BY seq", (envelope_id,))

    def initiated(self, envelope_id: str) -> StoredEnvelope | None:
        """The request that opened exchange ``envelope_id`` if *this node* sent it.

        Used to recognise asynchronous callbacks: a later incoming envelope with the
        id of a transfer we originated is the beneficiary's answer, not a new transfer.
        """
        rows = self._rows("envelope_id = ? ORDER BY seq LIMIT 1", (envelope_id,))
        if rows and rows[0].direction == "outgoing" and rows[0].kind == "request":
            return rows[0]
        return None

    def summaries(
        self, *, peer: str | None = None, limit: int = 100, before: int | None = None
    ) -> list[TransferSummary]:
        """One line per exchange, newest first (by its latest envelope); the state is that
        of its latest request. ``before``: only those older than the summary whose
        ``key`` it is (paging by key: the same cost on every page)."""
        where: list[str] = []
        args: list[object] = []
        if peer:
            where.append("peer = ?")
            args.append(peer)
        if before is not None:
            where.append("last_seq < ?")
            args.append(before)
        cols = "envelope_id, peer, direction, state, messages, first_at, last_at, last_seq"
        cond = f"WHERE {' AND '.join(where)} " if where else ""
        sql = f"SELECT {cols} FROM transfers {cond}ORDER BY last_seq DESC LIMIT ?"  # noqa: S608
        return [TransferSummary(*row) for row in self.db.read(sql, (*args, limit))]

    def count(self) -> int:
        row = self.db.read_one("SELECT COUNT(*) FROM envelopes")
        return int(row[0]) if row else 0


    # ------------------------------------------------------------------ retention

    def purge(self, older_than: timedelta, *, now: datetime | None = None,
              batch: int = DEFAULT_PURGE_BATCH) -> int:
        """Purge the envelope bytes of at most ``batch`` transfers (oldest first) whose
        last envelope is older than ``older_than`` and none of whose requests is still
        ``pending`` or ``claimed``; return how many transfers were purged.

        Each transfer is purged in its own transaction under its transfer lock, with
        the conditions checked again there (a retry or a new pending reply that arrived
        meanwhile keeps it whole). What stays is the audit record (see the module
        docstring); ``purged_at`` says when. Not checked: that the peer will not retry
        a purged message (its timestamp is long outside the window by then).
        """
        if older_than <= timedelta(0) or batch < 1:
            raise StoreError("retention needs a positive age and batch size")
        moment = now or datetime.now(UTC)
        cutoff = (moment - older_than).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rows = self.db.read(
            f"SELECT t.envelope_id FROM transfers t WHERE t.last_at < ? AND {_PURGEABLE} "  # noqa: S608
            "ORDER BY t.last_at, t.last_seq LIMIT ?", (cutoff, batch))
        purged = 0
        for (envelope_id,) in rows:
            with self._tx() as tx:
                _transfer_lock(tx, envelope_id)
                again = (f"SELECT 1 FROM transfers t WHERE t.envelope_id = ? "  # noqa: S608
                         f"AND t.last_at < ? AND {_PURGEABLE}")
                if tx.one(again, (envelope_id, cutoff)) is None:
                    continue
                tx.execute("UPDATE envelopes SET envelope = {EMPTY_BLOB}, purged_at = ? "
                           "WHERE envelope_id = ? AND length(envelope) > 0",
                           (stamp, envelope_id))
                purged += 1
        if purged:
            log.info("retention: purged the envelopes of %d transfer(s) older than %s",
                     purged, cutoff)
        return purged

    def audit(self, *, since: str | None = None,
              page: int = 1000) -> Iterator[dict[str, object]]:
        """The audit record of every stored envelope, oldest first (``since``: only
        envelopes created at or after that UTC timestamp, ``YYYY-MM-DDTHH:MM:SS...Z``).

        Fields (:data:`AUDIT_FIELDS`): never the envelope bytes, the opened payload or
        a resolution's message; ``stored`` says whether the bytes are still held.
        Read page by page (``page`` rows), so a large store is not held in memory.
        """
        cols = ", ".join(c for c in AUDIT_FIELDS if c != "stored")
        after = 0
        while True:
            where = "seq > ?" + (" AND created_at >= ?" if since else "")
            args: tuple[object, ...] = (after, since) if since else (after,)
            rows = self.db.read(
                f"SELECT {cols}, length(envelope) > 0 FROM envelopes "  # noqa: S608
                f"WHERE {where} ORDER BY seq LIMIT ?", (*args, page))
            for row in rows:
                record = dict(zip(AUDIT_FIELDS, row, strict=True))
                record["stored"] = bool(record["stored"])
                record["error_code"] = int(record["error_code"])  # type: ignore[call-overload]
                yield record
            if len(rows) < page:
                return
            after = int(rows[-1][0])


def open_store(
    location: str | os.PathLike[str],
    *,
    password_file: str | os.PathLike[str] | None = None,
    existing: bool = False,
    **kwargs: Any,  # Any: TransferStore's keyword options
) -> TransferStore:
    """The transfer store at ``location`` (a ``--db`` value). ``existing``: refuse, with
    one line, a SQLite file that does not exist or a database without a transfer store
    (commands that read one must not create an empty one)."""
    url = parse_url(location)
    if existing and url.backend == "sqlite" and not url.in_memory \
            and not Path(url.path).is_file():
        raise ConfigurationError(f"{url.display}: no such transfer store")
    if not existing:
        return TransferStore(url, password_file=password_file, **kwargs)
    db = open_database(url, purpose="transfer store", password_file=password_file)
    try:
        tables = _tables(db)
    except BaseException:
        db.close()
        raise
    if "envelopes" not in tables:
        db.close()
        raise ConfigurationError(f"{url.display}: no such transfer store (no envelopes table)")
    return TransferStore(db, **kwargs)


def _tables(db: Database) -> set[str]:
    """The table names in ``db`` (its current schema on PostgreSQL)."""
    if db.backend == "sqlite":
        rows = db.read("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = db.read("SELECT table_name FROM information_schema.tables "
                       "WHERE table_schema = current_schema()")
    return {str(r[0]) for r in rows}


class _Write:
    """``with store._tx() as tx``: one write transaction, then the rejection prune."""

    def __init__(self, store: TransferStore) -> None:
        self._store = store
        self._cm = store.db.transaction()

    def __enter__(self) -> Tx:
        return self._cm.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)  # type: ignore[arg-type]
        if exc[0] is None:
            self._store._maybe_prune()
