"""Directory storage: the :class:`DirectoryStore` protocol and :class:`SQLStore`, its
implementation on :mod:`trisa_peer.storage` (SQLite or PostgreSQL, chosen by ``--db``).

The store keeps GDS records as serialized protobuf messages next to the few indexed
columns the RPCs need, so that every RPC is one or two indexed reads:

=============  ==========================================================================
table          contents
=============  ==========================================================================
vasps          ``VASP`` proto + ``id`` (PK), normalised common name (UNIQUE), status,
               version, endpoint, origin (``register`` / ``import``) and the
               precomputed ``LookupReply`` bytes (Lookup is a single index hit)
names          name index: common name + every IVMS101 legal / local / phonetic name,
               lower-cased and trimmed (prefix search is a range on the primary key)
websites       website host name index
countries      country of registration + address countries (ISO alpha-2, upper-case)
categories     business category name + VASP categories (lower-case)
contacts       contact verification tokens (48 chars) → VASP, kinds, email, verified
certreqs       ``gds.models.v1.CertificateRequest`` protos
certificates   ``gds.models.v1.Certificate`` protos (id = upper-hex serial)
secrets        PKCS#12 passwords (``<certreq>-password``) and zips (``<certreq>-cert``)
emails         the outbox (GDS test mode: emails are stored, not sent)
changes        the change log: ``(seq, vasp_id)`` per commit (Lookup reply cache)
=============  ==========================================================================

:data:`TABLES` lists them in copy order (``trisa-peer db copy``); the tables and columns
are the same on both backends. On PostgreSQL the text columns that are ordered or
range-searched (``vasps.cn_norm``, ``names.name``) use the ``"C"`` collation, so prefix
ranges are served by the ordinary primary-key index (no ``text_pattern_ops`` index is
needed) and listings sort byte-wise exactly as on SQLite, whatever the server's locale.

Every mutation is one :class:`Changes` applied by :meth:`DirectoryStore.commit` in one
transaction; a VASP update carries the version it was read at and the ``UPDATE``
matches only that version (optimistic locking), so two operators -- or two replicas on
one PostgreSQL database -- cannot overwrite each other's change: at READ COMMITTED the
second ``UPDATE`` waits for the first to commit, re-reads the row and matches nothing.
A duplicate normalised common name is refused by the ``UNIQUE`` constraint on both
backends. Either conflict makes ``commit`` return ``False`` with nothing written.

Freshness (issue 13, section 4): a Lookup or Search that begins after a write has
committed -- through this process, another replica, or the CLI -- returns that write.
Every read is its own statement outside any long transaction (SQLite autocommit,
PostgreSQL autocommit at READ COMMITTED). The one cache, the gRPC server's Lookup reply
cache (:mod:`.replycache`), is validated on every request against the ``changes`` log
that every commit appends to in its own transaction (the invalidation that reaches
every replica); nothing else read from the database is kept.

Durability is the storage layer's (:mod:`trisa_peer.storage.database`): durable
commits by default on both backends.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message

from .._pb.gds.models.v1 import models_pb2 as gds_models_pb2
from .._pb.trisa.gds.models.v1beta1 import models_pb2
from ..errors import StoreConflictError
from ..storage import Database, DatabaseURL, Tx, migrate, open_database
from ..storage.migrate import Migrations
from .convert import enum_name, lookup_reply
from .validate import normalize_common_name, normalize_country, normalize_name, website_host

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TABLES",
    "Changes",
    "ContactToken",
    "DirectoryStore",
    "Email",
    "SQLStore",
    "SQLiteStore",
    "SearchRow",
    "index_terms",
]

VERIFIED = 6  # models.VerificationState.VERIFIED

_M = TypeVar("_M", bound=Message)


@dataclass(frozen=True)
class ContactToken:
    """One contact email's verification token (shared by the contact kinds using it)."""

    token: str
    vasp_id: str
    email: str
    kinds: tuple[str, ...]
    verified: bool = False
    verified_on: str = ""


@dataclass(frozen=True)
class Email:
    """An outbox entry."""

    recipient: str
    subject: str
    body: str
    reason: str = ""
    vasp_id: str = ""
    created: str = ""


@dataclass(frozen=True)
class SearchRow:
    id: str
    registered_directory: str
    common_name: str
    endpoint: str


@dataclass
class Changes:
    """One atomic mutation.

    ``vasp`` is inserted when ``create`` is true (refused on a duplicate normalised
    common name), else updated if its stored version still equals ``vasp.version.version``
    (the store then bumps the version). ``certreqs`` and ``certificates`` are upserted by
    id, ``secrets`` by name, ``tokens`` by token; ``emails`` are appended.
    """

    vasp: models_pb2.VASP | None = None
    create: bool = False
    origin: str = "register"
    certreqs: list[gds_models_pb2.CertificateRequest] = field(default_factory=list)
    certificates: list[gds_models_pb2.Certificate] = field(default_factory=list)
    secrets: dict[str, bytes] = field(default_factory=dict)
    tokens: list[ContactToken] = field(default_factory=list)
    emails: list[Email] = field(default_factory=list)


class DirectoryStore(Protocol):
    """What the directory service needs from storage (:class:`SQLStore` on SQLite or
    PostgreSQL). Reads return fresh protobuf copies; ``commit`` is all or nothing and
    returns ``False`` on a conflict (duplicate common name or stale version)."""

    def commit(self, changes: Changes) -> bool: ...

    def get_vasp(self, vasp_id: str) -> models_pb2.VASP | None: ...

    def get_vasp_by_common_name(self, common_name: str) -> models_pb2.VASP | None: ...

    def get_origin(self, vasp_id: str) -> str | None: ...

    def get_lookup(
        self, *, vasp_id: str | None = None, common_name: str | None = None
    ) -> tuple[int, bytes] | None: ...

    def resolve_name(self, name: str, *, prefix: bool) -> list[str]: ...

    def search(
        self,
        *,
        names: Sequence[str] = (),
        websites: Sequence[str] = (),
        countries: Sequence[str] = (),
        categories: Sequence[str] = (),
        status: int | None = VERIFIED,
        limit: int = 1000,
    ) -> list[SearchRow]: ...

    def list_vasps(self, *, status: int | None = None) -> list[models_pb2.VASP]: ...

    def get_token(self, token: str) -> ContactToken | None: ...

    def tokens_for(self, vasp_id: str) -> list[ContactToken]: ...

    def get_certreq(self, certreq_id: str) -> gds_models_pb2.CertificateRequest | None: ...

    def certreqs_for(self, vasp_id: str) -> list[gds_models_pb2.CertificateRequest]: ...

    def get_certificate(self, certificate_id: str) -> gds_models_pb2.Certificate | None: ...

    def certificates_for(self, vasp_id: str) -> list[gds_models_pb2.Certificate]: ...

    def get_secret(self, name: str) -> bytes | None: ...

    def emails(self, *, vasp_id: str | None = None) -> list[Email]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- indexing


def index_terms(vasp: models_pb2.VASP) -> dict[str, set[str]]:
    """The index keys of a VASP: names, websites, countries, categories."""
    names = {normalize_name(vasp.common_name)}
    entity = vasp.entity
    for group in (
        entity.name.name_identifiers,
        entity.name.local_name_identifiers,
        entity.name.phonetic_name_identifiers,
    ):
        for item in group:
            if item.legal_person_name.strip():
                names.add(normalize_name(item.legal_person_name))
    countries = set()
    if entity.country_of_registration.strip():
        countries.add(normalize_country(entity.country_of_registration))
    for address in entity.geographic_addresses:
        if address.country.strip():
            countries.add(normalize_country(address.country))
    websites = {website_host(vasp.website)} - {""}
    categories = {c.strip().lower() for c in vasp.vasp_categories if c.strip()}
    if vasp.business_category:
        # open enum: a value this build does not know indexes as "unknown(99)"
        categories.add(enum_name(models_pb2.BusinessCategory, vasp.business_category).lower())
    return {
        "names": names - {""},
        "websites": websites,
        "countries": countries,
        "categories": categories,
    }


# --------------------------------------------------------------------------- schema

SCHEMA_VERSION = 3

#: Every table of the directory, in the order ``db copy`` fills them (no table refers to
#: a later one; ``schema_version`` is the migrations' own and is not copied).
TABLES: tuple[str, ...] = (
    "vasps",
    "names",
    "websites",
    "countries",
    "categories",
    "contacts",
    "certreqs",
    "certificates",
    "secrets",
    "emails",
    "changes",
)

# Version 1 is the schema SQLite files were created with before the storage layer (the
# SQLite text is unchanged, so those files open as version 1 and migrate to 2).
# PostgreSQL differs only where noted: BYTEA, identity keys, "C" collation on the
# range-searched and ordered keys, no WITHOUT ROWID.
_V1 = """
CREATE TABLE vasps (
    id TEXT PRIMARY KEY,
    common_name TEXT NOT NULL,
    cn_norm TEXT{C} NOT NULL UNIQUE,
    status INTEGER NOT NULL,
    version INTEGER NOT NULL,
    registered_directory TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    origin TEXT NOT NULL,
    record {BLOB} NOT NULL,
    lookup {BLOB} NOT NULL,
    last_updated TEXT NOT NULL DEFAULT ''
);
CREATE INDEX vasps_status ON vasps(status);
CREATE TABLE names (name TEXT{C} NOT NULL, vasp_id TEXT NOT NULL,
    PRIMARY KEY (name, vasp_id)){NO_ROWID};
CREATE INDEX names_vasp ON names(vasp_id);
CREATE TABLE websites (host TEXT NOT NULL, vasp_id TEXT NOT NULL,
    PRIMARY KEY (host, vasp_id)){NO_ROWID};
CREATE INDEX websites_vasp ON websites(vasp_id);
CREATE TABLE countries (country TEXT NOT NULL, vasp_id TEXT NOT NULL,
    PRIMARY KEY (country, vasp_id)){NO_ROWID};
CREATE INDEX countries_vasp ON countries(vasp_id);
CREATE TABLE categories (category TEXT NOT NULL, vasp_id TEXT NOT NULL,
    PRIMARY KEY (category, vasp_id)){NO_ROWID};
CREATE INDEX categories_vasp ON categories(vasp_id);
CREATE TABLE contacts (
    token TEXT PRIMARY KEY,
    vasp_id TEXT NOT NULL,
    email TEXT NOT NULL,
    kinds TEXT NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0,
    verified_on TEXT NOT NULL DEFAULT ''
);
CREATE INDEX contacts_vasp ON contacts(vasp_id);
CREATE TABLE certreqs (
    id TEXT PRIMARY KEY,
    vasp_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    created TEXT NOT NULL,
    record {BLOB} NOT NULL
);
CREATE INDEX certreqs_vasp ON certreqs(vasp_id, created);
CREATE TABLE certificates (
    id TEXT PRIMARY KEY,
    vasp_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record {BLOB} NOT NULL
);
CREATE INDEX certificates_vasp ON certificates(vasp_id, seq);
CREATE TABLE secrets (name TEXT PRIMARY KEY, value {BLOB} NOT NULL);
CREATE TABLE emails (
    seq {SERIAL_PK},
    vasp_id TEXT NOT NULL,
    created TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX emails_vasp ON emails(vasp_id)
"""

# Version 2: an explicit insertion order for contacts and certificate requests (SQLite's
# rowid, which version 1 ordered by, does not exist on PostgreSQL); existing rows keep
# their rowid order. ``seq`` counts per VASP.
_V2 = """
ALTER TABLE contacts ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE certreqs ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
{FROM_ROWID}
DROP INDEX contacts_vasp;
CREATE INDEX contacts_vasp ON contacts(vasp_id, seq)
"""

# Version 3: the change log (issue 16, the Lookup reply cache of :mod:`.replycache`):
# every commit adds the rows ``(seq, vasp_id)`` of the records whose Lookup it may
# change, under the next ``seq`` (commits are serialised, so ``seq`` is the commit
# order without gaps); the latest :data:`CHANGE_LOG_KEEP` seqs are kept.
_V3 = """
CREATE TABLE changes (seq {BIGINT} NOT NULL, vasp_id TEXT NOT NULL,
    PRIMARY KEY (seq, vasp_id)){NO_ROWID}
"""

MIGRATIONS: Migrations = {
    1: {
        "sqlite": _V1.replace("{C}", "").replace("{NO_ROWID}", " WITHOUT ROWID"),
        "postgresql": _V1.replace("{C}", ' COLLATE "C"').replace("{NO_ROWID}", ""),
    },
    2: {
        "sqlite": _V2.replace("{FROM_ROWID}", "UPDATE contacts SET seq = rowid; "
                              "UPDATE certreqs SET seq = rowid;"),
        "postgresql": _V2.replace("{FROM_ROWID}", ""),
    },
    3: {
        "sqlite": _V3.replace("{NO_ROWID}", " WITHOUT ROWID"),
        "postgresql": _V3.replace("{NO_ROWID}", ""),
    },
}

#: How many commits the change log keeps (a reader further behind starts afresh).
CHANGE_LOG_KEEP = 4096
#: A change-log ``vasp_id``: the commit may change any Lookup reply.
ALL_RECORDS = "*"
#: A change-log ``vasp_id``: the commit changes no Lookup reply (emails, tokens, ...).
NO_RECORD = ""
#: Secrets that no Lookup reads (``<certreq>-password``, ``<certreq>-cert``).
_LOOKUP_FREE_SECRETS = ("-password", "-cert")
_GRACE_SUFFIX = "-superseded-grace"  # directory/grace.py: ``<vasp id>-superseded-grace``


def changed_records(changes: Changes) -> set[str]:
    """The ids whose Lookup reply (record, status, grace headers) ``changes`` may
    change: :data:`ALL_RECORDS` when it cannot tell, :data:`NO_RECORD` for none."""
    ids: set[str] = set()
    if changes.vasp is not None:
        ids.add(changes.vasp.id)
    ids.update(cert.vasp for cert in changes.certificates)
    for name in changes.secrets:
        if name.endswith(_GRACE_SUFFIX):
            ids.add(name[: -len(_GRACE_SUFFIX)])
        elif not name.endswith(_LOOKUP_FREE_SECRETS):
            ids.add(ALL_RECORDS)
    return ids or {NO_RECORD}

# (table, column, key of index_terms())
_INDEX_TABLES = (
    ("names", "name", "names"),
    ("websites", "host", "websites"),
    ("countries", "country", "countries"),
    ("categories", "category", "categories"),
)


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def _bucket(values: list[str]) -> list[str]:
    """``values`` padded (repeating the last) to a power of two: an ``IN`` list then
    has one of a few lengths, so the SQL texts the storage layer translates and caches
    stay few whatever the requests carry (the repeats change no result)."""
    size = 1
    while size < len(values):
        size *= 2
    return values + values[-1:] * (size - len(values))


def _prefix_upper(prefix: str) -> str:
    return prefix + "\U0010ffff"


class _Stale(Exception):
    """The VASP's stored version is not the one the change was read at."""


# --------------------------------------------------------------------------- the store


class SQLStore:
    """:class:`DirectoryStore` on a :class:`~trisa_peer.storage.Database`.

    ``location`` is a ``--db`` value: a path, ``sqlite:///...`` or ``postgresql://...``
    (see :mod:`trisa_peer.storage.url`), or an open :class:`Database` (the store then
    owns it and closes it). With ``create=False`` a missing SQLite file is a
    :class:`StoreError` ("no such directory database") and nothing is created (operator
    commands on an existing directory); a PostgreSQL database must exist either way (its
    tables are created or migrated at open). ``password_file``: PostgreSQL only.

    Checked at open: the schema version (migrated forward; a newer one is refused).
    Not checked: that two processes on one SQLite file run the same code version.
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | DatabaseURL | Database,
        *,
        create: bool = True,
        durable: bool = True,
        password_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(location, Database):
            self._db = location
        else:
            self._db = open_database(location, purpose="directory database", durable=durable,
                                     create=create, password_file=password_file)
        try:
            migrate(self._db, MIGRATIONS, component="directory")
        except BaseException:
            self._db.close()
            raise
        self._join = "CROSS JOIN" if self._db.backend == "sqlite" else "JOIN"
        #: commits through this object so far (see :mod:`.replycache`)
        self.writes = 0

    @property
    def database(self) -> Database:
        return self._db

    @property
    def location(self) -> str:
        """The database as logs and errors show it (a file path, or a redacted URL)."""
        return self._db.name

    @property
    def path(self) -> str:
        """Same as :attr:`location` (kept for callers written for SQLite files)."""
        return self._db.name

    def __repr__(self) -> str:
        return f"SQLStore({self._db.name!r})"

    def __enter__(self) -> SQLStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        # Any: database rows; each caller knows its columns
        return self._db.read(sql, params)

    def schema_version(self) -> int:
        return int(self._read("SELECT MAX(version) FROM schema_version")[0][0] or 0)

    def table_counts(self) -> dict[str, int]:
        """Rows per table of :data:`TABLES` (for ``db copy`` checks and tests)."""
        return {
            table: int(self._read(f"SELECT COUNT(*) FROM {table}")[0][0])  # noqa: S608
            for table in TABLES
        }

    # -- writes ---------------------------------------------------------------------------

    def commit(self, changes: Changes) -> bool:
        """Apply ``changes`` in one transaction; ``False`` (nothing written) on a stale
        version or a duplicate common name. Other database errors: :class:`StoreError`."""
        vasp = changes.vasp
        before = int(vasp.version.version) if vasp is not None else 0
        try:
            with self._db.transaction() as tx:
                if vasp is not None:
                    self._write_vasp(tx, vasp, changes)
                self._write_rest(tx, changes)
                self._log_changes(tx, changes)
        except (_Stale, StoreConflictError):
            # The transaction is rolled back (on PostgreSQL it is also unusable after the
            # constraint error, which is why the conflict is caught out here).
            if vasp is not None:
                vasp.version.version = before
            return False
        finally:
            # this process's own commits do not move its SQLite connections'
            # data_version: the reply cache watches this counter too
            self.writes += 1
        return True

    def _log_changes(self, tx: Tx, changes: Changes) -> None:
        """The change-log rows of this commit (last in its transaction): the lock
        serialises the writers until commit, so ``seq`` follows the commit order."""
        tx.lock("directory-changes")
        row = tx.one("SELECT MAX(seq) FROM changes")
        seq = int(row[0] or 0) + 1 if row is not None else 1
        tx.execute_many("INSERT INTO changes (seq, vasp_id) VALUES (?, ?)",
                        [(seq, vasp_id) for vasp_id in sorted(changed_records(changes))])
        if seq > CHANGE_LOG_KEEP:
            tx.execute("DELETE FROM changes WHERE seq <= ?", (seq - CHANGE_LOG_KEEP,))

    def change_seq(self) -> int:
        """The ``seq`` of the latest commit in the change log (0: none yet)."""
        return int(self._read("SELECT MAX(seq) FROM changes")[0][0] or 0)

    def changes_since(self, seq: int) -> list[tuple[int, str]]:
        """The change-log rows after ``seq``, in commit order."""
        return [(int(a), str(b)) for a, b in self._read(
            "SELECT seq, vasp_id FROM changes WHERE seq > ? ORDER BY seq", (seq,))]

    def verified_lookups(self, *, after: str = "", limit: int = 500
                         ) -> list[tuple[str, str, bytes]]:
        """``(id, common name, LookupReply bytes)`` of VERIFIED records with ids after
        ``after``, in id order (a page of the reply cache's warm-up)."""
        return [(str(a), str(b), bytes(c)) for a, b, c in self._read(
            "SELECT id, common_name, lookup FROM vasps WHERE id > ? AND status = ? "
            "ORDER BY id LIMIT ?", (after, VERIFIED, int(limit)))]

    def graced_ids(self) -> set[str]:
        """Ids with a reissue-grace secret set (directory/grace.py)."""
        rows = self._read("SELECT name FROM secrets WHERE name LIKE ?", (f"%{_GRACE_SUFFIX}",))
        return {str(r[0])[: -len(_GRACE_SUFFIX)] for r in rows
                if str(r[0]).endswith(_GRACE_SUFFIX)}

    def data_version(self) -> int | None:
        """SQLite's ``PRAGMA data_version`` of this thread's connection (moves when
        another connection commits); None on PostgreSQL."""
        if self._db.backend != "sqlite":
            return None
        return int(self._read("PRAGMA data_version")[0][0])

    def _write_rest(self, tx: Tx, changes: Changes) -> None:
        for req in changes.certreqs:
            tx.execute(
                "INSERT INTO certreqs (id, vasp_id, status, created, record, seq) "
                "VALUES (?, ?, ?, ?, ?, "
                "(SELECT COALESCE(MAX(seq), 0) + 1 FROM certreqs WHERE vasp_id = ?)) "
                "ON CONFLICT(id) DO UPDATE SET "
                "status = excluded.status, record = excluded.record",
                (req.id, req.vasp, int(req.status), req.created, req.SerializeToString(),
                 req.vasp),
            )
        for cert in changes.certificates:
            # seq orders one VASP's certificates: the next number of that VASP (an index
            # range; a table-wide MAX would read every certificate on each import).
            tx.execute(
                "INSERT INTO certificates (id, vasp_id, seq, record) VALUES (?, ?, "
                "(SELECT COALESCE(MAX(seq), 0) + 1 FROM certificates WHERE vasp_id = ?), ?) "
                "ON CONFLICT(id) DO UPDATE SET record = excluded.record",
                (cert.id, cert.vasp, cert.vasp, cert.SerializeToString()),
            )
        for name, value in changes.secrets.items():
            tx.execute(
                "INSERT INTO secrets (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, bytes(value)),
            )
        for tok in changes.tokens:
            tx.execute(
                "INSERT INTO contacts (token, vasp_id, email, kinds, verified, verified_on, "
                "seq) VALUES (?, ?, ?, ?, ?, ?, "
                "(SELECT COALESCE(MAX(seq), 0) + 1 FROM contacts WHERE vasp_id = ?)) "
                "ON CONFLICT(token) DO UPDATE "
                "SET verified = excluded.verified, verified_on = excluded.verified_on",
                (tok.token, tok.vasp_id, tok.email, ",".join(tok.kinds), int(tok.verified),
                 tok.verified_on, tok.vasp_id),
            )
        for mail in changes.emails:
            tx.execute(
                "INSERT INTO emails (vasp_id, created, recipient, subject, reason, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (mail.vasp_id, mail.created, mail.recipient, mail.subject, mail.reason,
                 mail.body),
            )

    def _write_vasp(self, tx: Tx, vasp: models_pb2.VASP, changes: Changes) -> None:
        """Insert or update ``vasp`` and its index rows; :class:`_Stale` when the stored
        version moved on, :class:`StoreConflictError` on a duplicate common name."""
        cn_norm = normalize_common_name(vasp.common_name)
        if changes.create:
            vasp.version.version = max(1, int(vasp.version.version))
            tx.execute(
                "INSERT INTO vasps (id, common_name, cn_norm, status, version, "
                "registered_directory, endpoint, origin, record, lookup, last_updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                self._vasp_row(vasp, cn_norm, changes.origin),
            )
        else:
            expected = int(vasp.version.version)
            vasp.version.version = expected + 1
            row = self._vasp_row(vasp, cn_norm, "")
            # The version test in the WHERE is the lock: it holds across connections,
            # processes and replicas (a concurrent UPDATE of the row waits, then
            # re-checks the WHERE against the committed row).
            changed = tx.execute(
                "UPDATE vasps SET common_name = ?, cn_norm = ?, status = ?, version = ?, "
                "registered_directory = ?, endpoint = ?, record = ?, lookup = ?, "
                "last_updated = ? WHERE id = ? AND version = ?",
                (row[1], row[2], row[3], row[4], row[5], row[6], row[8], row[9], row[10],
                 vasp.id, expected),
            )
            if changed != 1:
                raise _Stale
            for table, _, _ in _INDEX_TABLES:
                tx.execute(f"DELETE FROM {table} WHERE vasp_id = ?", (vasp.id,))  # noqa: S608
        terms = index_terms(vasp)
        for table, column, key in _INDEX_TABLES:
            values = sorted(terms[key])
            if not values:
                continue
            rows = ", ".join("(?, ?)" for _ in values)
            args: list[object] = []
            for term in values:
                args.extend((term, vasp.id))
            tx.execute(
                f"INSERT INTO {table} ({column}, vasp_id) VALUES {rows} "  # noqa: S608
                "ON CONFLICT DO NOTHING",
                args,
            )

    @staticmethod
    def _vasp_row(vasp: models_pb2.VASP, cn_norm: str, origin: str) -> tuple[object, ...]:
        return (
            vasp.id,
            vasp.common_name,
            cn_norm,
            int(vasp.verification_status),
            int(vasp.version.version),
            vasp.registered_directory,
            vasp.trisa_endpoint,
            origin,
            vasp.SerializeToString(),
            lookup_reply(vasp).SerializeToString(),
            vasp.last_updated,
        )

    # -- reads ----------------------------------------------------------------------------

    def _record(self, cls: type[_M], sql: str, params: Sequence[object]) -> _M | None:
        """The message of type ``cls`` serialised in the first column of the first row."""
        rows = self._read(sql, params)
        return cls.FromString(bytes(rows[0][0])) if rows else None

    def _records(self, cls: type[_M], sql: str, params: Sequence[object] = ()) -> list[_M]:
        """The messages of type ``cls`` serialised in the first column of every row."""
        return [cls.FromString(bytes(row[0])) for row in self._read(sql, params)]

    def get_vasp(self, vasp_id: str) -> models_pb2.VASP | None:
        return self._record(models_pb2.VASP, "SELECT record FROM vasps WHERE id = ?", (vasp_id,))

    def get_vasp_by_common_name(self, common_name: str) -> models_pb2.VASP | None:
        return self._record(
            models_pb2.VASP,
            "SELECT record FROM vasps WHERE cn_norm = ?",
            (normalize_common_name(common_name),),
        )

    def get_origin(self, vasp_id: str) -> str | None:
        rows = self._read("SELECT origin FROM vasps WHERE id = ?", (vasp_id,))
        return str(rows[0][0]) if rows else None

    def get_lookup(
        self, *, vasp_id: str | None = None, common_name: str | None = None
    ) -> tuple[int, bytes] | None:
        if vasp_id:
            rows = self._read("SELECT status, lookup FROM vasps WHERE id = ?", (vasp_id,))
        elif common_name:
            rows = self._read(
                "SELECT status, lookup FROM vasps WHERE cn_norm = ?",
                (normalize_common_name(common_name),),
            )
        else:
            return None
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def resolve_name(self, name: str, *, prefix: bool) -> list[str]:
        """Ids whose name index holds ``name`` (or a name starting with it), at most two
        (enough to tell unique from ambiguous)."""
        key = normalize_name(name)
        if not key:
            return []
        if prefix:
            rows = self._read(
                "SELECT DISTINCT vasp_id FROM names WHERE name >= ? AND name < ? LIMIT 2",
                (key, _prefix_upper(key)),
            )
        else:
            rows = self._read("SELECT DISTINCT vasp_id FROM names WHERE name = ? LIMIT 2", (key,))
        return [str(r[0]) for r in rows]

    def search(
        self,
        *,
        names: Sequence[str] = (),
        websites: Sequence[str] = (),
        countries: Sequence[str] = (),
        categories: Sequence[str] = (),
        status: int | None = VERIFIED,
        limit: int = 1000,
    ) -> list[SearchRow]:
        # Candidates come from one index (names/websites, else countries, else
        # categories), then each is joined to its row by primary key and filtered with
        # EXISTS probes on the (term, vasp_id) primary keys: no scan of the vasps table.
        # (SQLite: CROSS JOIN keeps that join order.)
        params: list[object] = []
        sources: list[str] = []
        for key in sorted({normalize_name(name) for name in names} - {""}):
            sources.append("SELECT DISTINCT vasp_id FROM names WHERE name >= ? AND name < ?")
            params.extend((key, _prefix_upper(key)))
        hosts = _bucket(sorted({website_host(w) for w in websites} - {""}))
        if hosts:
            sources.append(
                f"SELECT vasp_id FROM websites WHERE host IN ({_marks(hosts)})"  # noqa: S608
            )
            params.extend(hosts)
        if (names or websites) and not sources:
            return []
        filters: list[tuple[str, str, list[str]]] = [
            ("countries", "country",
             _bucket(sorted({normalize_country(c) for c in countries} - {""}))),
            ("categories", "category",
             _bucket(sorted({c.strip().lower() for c in categories} - {""}))),
        ]
        filters = [f for f in filters if f[2]]
        if not sources:
            if not filters:
                return []
            table, column, values = filters.pop(0)
            sources.append(
                f"SELECT vasp_id FROM {table} WHERE {column} IN ({_marks(values)})"  # noqa: S608
            )
            params.extend(values)
        where: list[str] = []
        for table, column, values in filters:
            where.append(
                f"EXISTS (SELECT 1 FROM {table} f WHERE f.vasp_id = v.id AND "  # noqa: S608
                f"f.{column} IN ({_marks(values)}))"
            )
            params.extend(values)
        if status is not None:
            where.append("v.status = ?")
            params.append(int(status))
        sql = (  # only placeholders and fixed names are interpolated
            "SELECT v.id, v.registered_directory, v.common_name, v.endpoint FROM "  # noqa: S608
            f"({' UNION '.join(sources)}) m {self._join} vasps v ON v.id = m.vasp_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY v.cn_norm LIMIT ?"
        )
        params.append(int(limit))
        return [SearchRow(str(a), str(b), str(c), str(d)) for a, b, c, d in self._read(sql, params)]

    def list_vasps(self, *, status: int | None = None) -> list[models_pb2.VASP]:
        if status is None:
            return self._records(models_pb2.VASP, "SELECT record FROM vasps ORDER BY cn_norm")
        return self._records(
            models_pb2.VASP, "SELECT record FROM vasps WHERE status = ? ORDER BY cn_norm",
            (int(status),),
        )

    @staticmethod
    def _token(row: Sequence[Any]) -> ContactToken:  # Any: one database row
        return ContactToken(
            token=str(row[0]),
            vasp_id=str(row[1]),
            email=str(row[2]),
            kinds=tuple(k for k in str(row[3]).split(",") if k),
            verified=bool(row[4]),
            verified_on=str(row[5]),
        )

    _CONTACT_COLUMNS = "token, vasp_id, email, kinds, verified, verified_on"

    def get_token(self, token: str) -> ContactToken | None:
        rows = self._read(
            f"SELECT {self._CONTACT_COLUMNS} FROM contacts WHERE token = ?", (token,)  # noqa: S608
        )
        return self._token(rows[0]) if rows else None

    def tokens_for(self, vasp_id: str) -> list[ContactToken]:
        rows = self._read(
            f"SELECT {self._CONTACT_COLUMNS} FROM contacts WHERE vasp_id = ? "  # noqa: S608
            "ORDER BY seq, token",
            (vasp_id,),
        )
        return [self._token(r) for r in rows]

    def get_certreq(self, certreq_id: str) -> gds_models_pb2.CertificateRequest | None:
        return self._by_id(gds_models_pb2.CertificateRequest, "certreqs", certreq_id)

    def certreqs_for(self, vasp_id: str) -> list[gds_models_pb2.CertificateRequest]:
        return self._of_vasp(gds_models_pb2.CertificateRequest, "certreqs", vasp_id,
                             "created, seq, id")

    def get_certificate(self, certificate_id: str) -> gds_models_pb2.Certificate | None:
        return self._by_id(gds_models_pb2.Certificate, "certificates", certificate_id)

    def certificates_for(self, vasp_id: str) -> list[gds_models_pb2.Certificate]:
        return self._of_vasp(gds_models_pb2.Certificate, "certificates", vasp_id, "seq, id")

    # table and order names below are constants of this module, never user input
    def _by_id(self, cls: type[_M], table: str, record_id: str) -> _M | None:
        sql = f"SELECT record FROM {table} WHERE id = ?"  # noqa: S608
        return self._record(cls, sql, (record_id,))

    def _of_vasp(self, cls: type[_M], table: str, vasp_id: str, order: str) -> list[_M]:
        sql = f"SELECT record FROM {table} WHERE vasp_id = ? ORDER BY {order}"  # noqa: S608
        return self._records(cls, sql, (vasp_id,))

    def get_secret(self, name: str) -> bytes | None:
        rows = self._read("SELECT value FROM secrets WHERE name = ?", (name,))
        return bytes(rows[0][0]) if rows else None

    def emails(self, *, vasp_id: str | None = None) -> list[Email]:
        sql = "SELECT recipient, subject, body, reason, vasp_id, created FROM emails"
        params: tuple[object, ...] = ()
        if vasp_id is not None:
            sql += " WHERE vasp_id = ?"
            params = (vasp_id,)
        rows = self._read(sql + " ORDER BY seq", params)
        return [Email(*map(str, r)) for r in rows]


#: The name this class had when it was SQLite only.
SQLiteStore = SQLStore
