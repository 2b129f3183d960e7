"""The directory store on both backends (issue 13, sections 1, 4 and 5 for the directory).

* migrations: a SQLite file written before the storage layer opens and keeps its order;
* replicas: two stores on one database -- optimistic locking and duplicate common names
  hold across them (PostgreSQL: the conflict is caught outside the failed transaction);
* durability and the exported table list;
* PostgreSQL prefix search: byte-wise "C" collation, served by the primary-key index;
* freshness: a Lookup or Search that begins after a committed write (another replica,
  or the CLI) returns it; the twin shows a cached replica would fail the same check;
* import cost: the SQLite work (VM steps) of one import does not grow with the table;
* CLI: ``gds serve``/operator commands on a PostgreSQL URL, ``--db-password-file``.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import CliResult

from trisa_peer._pb.gds.models.v1 import models_pb2 as gds_models_pb2
from trisa_peer._pb.ivms101 import ivms101_pb2
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2_grpc as gds_grpc
from trisa_peer._pb.trisa.gds.models.v1beta1 import models_pb2
from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import Identity, certs_to_pem
from trisa_peer.directory import Directory, DirectoryServer, SQLStore
from trisa_peer.directory.convert import go_serial
from trisa_peer.directory.store import (
    SCHEMA_VERSION,
    TABLES,
    Changes,
    ContactToken,
    SearchRow,
)
from trisa_peer.errors import StoreError

VS = models_pb2.VerificationState


@pytest.fixture(scope="module")
def alice(ca: CertificateAuthority) -> Identity:
    return ca.issue("alice.example.com", key_size=2048)


@pytest.fixture
def replicas(db_location: str) -> Iterator[tuple[SQLStore, SQLStore]]:
    """Two stores on one database, as two replicas (or a replica and the CLI) have."""
    first = SQLStore(db_location)
    second = SQLStore(db_location)
    yield first, second
    first.close()
    second.close()


def vasp_changes(n: int, cn: str | None = None, *, name: str | None = None) -> Changes:
    """A VERIFIED import of VASP ``n`` with one certificate record (no x509 needed)."""
    cn = cn or f"vasp{n:06d}.example.net"
    vasp = models_pb2.VASP(
        id=f"id-{n:06d}", registered_directory="testnet.local", common_name=cn,
        trisa_endpoint=f"{cn}:443", website=f"https://{cn}/",
        verification_status=VS.VERIFIED, version=models_pb2.Version(pid=1, version=1),
    )
    vasp.entity.name.name_identifiers.append(ivms101_pb2.LegalPersonNameId(
        legal_person_name=name or f"VASP {n} Ltd", legal_person_name_identifier_type=1))
    vasp.entity.country_of_registration = "DE"
    cert = gds_models_pb2.Certificate(id=f"{n:012X}", vasp=vasp.id)
    return Changes(vasp=vasp, create=True, origin="import", certificates=[cert])


# --------------------------------------------------------------------------- migrations

# Version 1 exactly as SQLite files were created before the storage layer.
_OLD_V1 = [
    """CREATE TABLE vasps (id TEXT PRIMARY KEY, common_name TEXT NOT NULL,
        cn_norm TEXT NOT NULL UNIQUE, status INTEGER NOT NULL, version INTEGER NOT NULL,
        registered_directory TEXT NOT NULL, endpoint TEXT NOT NULL, origin TEXT NOT NULL,
        record BLOB NOT NULL, lookup BLOB NOT NULL, last_updated TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX vasps_status ON vasps(status)",
    """CREATE TABLE names (name TEXT NOT NULL, vasp_id TEXT NOT NULL,
        PRIMARY KEY (name, vasp_id)) WITHOUT ROWID""",
    "CREATE INDEX names_vasp ON names(vasp_id)",
    """CREATE TABLE websites (host TEXT NOT NULL, vasp_id TEXT NOT NULL,
        PRIMARY KEY (host, vasp_id)) WITHOUT ROWID""",
    "CREATE INDEX websites_vasp ON websites(vasp_id)",
    """CREATE TABLE countries (country TEXT NOT NULL, vasp_id TEXT NOT NULL,
        PRIMARY KEY (country, vasp_id)) WITHOUT ROWID""",
    "CREATE INDEX countries_vasp ON countries(vasp_id)",
    """CREATE TABLE categories (category TEXT NOT NULL, vasp_id TEXT NOT NULL,
        PRIMARY KEY (category, vasp_id)) WITHOUT ROWID""",
    "CREATE INDEX categories_vasp ON categories(vasp_id)",
    """CREATE TABLE contacts (token TEXT PRIMARY KEY, vasp_id TEXT NOT NULL,
        email TEXT NOT NULL, kinds TEXT NOT NULL, verified INTEGER NOT NULL DEFAULT 0,
        verified_on TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX contacts_vasp ON contacts(vasp_id)",
    """CREATE TABLE certreqs (id TEXT PRIMARY KEY, vasp_id TEXT NOT NULL,
        status INTEGER NOT NULL, created TEXT NOT NULL, record BLOB NOT NULL)""",
    "CREATE INDEX certreqs_vasp ON certreqs(vasp_id, created)",
    """CREATE TABLE certificates (id TEXT PRIMARY KEY, vasp_id TEXT NOT NULL,
        seq INTEGER NOT NULL, record BLOB NOT NULL)""",
    "CREATE INDEX certificates_vasp ON certificates(vasp_id, seq)",
    "CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    """CREATE TABLE emails (seq INTEGER PRIMARY KEY AUTOINCREMENT, vasp_id TEXT NOT NULL,
        created TEXT NOT NULL, recipient TEXT NOT NULL, subject TEXT NOT NULL,
        reason TEXT NOT NULL, body TEXT NOT NULL)""",
    "CREATE INDEX emails_vasp ON emails(vasp_id)",
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "INSERT INTO schema_version (version) VALUES (1)",
]


def test_a_version_1_sqlite_file_opens_migrates_and_keeps_its_order(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in _OLD_V1:
        conn.execute(statement)
    # insertion order differs from the tokens' and ids' text order on purpose
    for token in ("z" * 48, "a" * 48, "m" * 48):
        conn.execute("INSERT INTO contacts (token, vasp_id, email, kinds) VALUES (?, ?, ?, ?)",
                     (token, "v1", f"{token[0]}@example.com", "technical"))
    for req_id in ("req-z", "req-a"):
        record = gds_models_pb2.CertificateRequest(id=req_id, vasp="v1", created="2026-01-01")
        conn.execute("INSERT INTO certreqs (id, vasp_id, status, created, record) "
                     "VALUES (?, ?, 0, ?, ?)", (req_id, "v1", "2026-01-01",
                                                record.SerializeToString()))
    conn.commit()
    conn.close()
    with SQLStore(path) as store:
        assert store.schema_version() == SCHEMA_VERSION == 3
        assert [t.token[0] for t in store.tokens_for("v1")] == ["z", "a", "m"]
        assert [r.id for r in store.certreqs_for("v1")] == ["req-z", "req-a"]
        # a token added after the migration comes last (twin of the order check:
        # text order would put "b" second)
        store.commit(Changes(tokens=[ContactToken("b" * 48, "v1", "b@example.com",
                                                  ("billing",))]))
        assert [t.token[0] for t in store.tokens_for("v1")] == ["z", "a", "m", "b"]
    with SQLStore(path) as again:  # migrated once: reopening changes nothing
        assert again.schema_version() == 3


def test_a_newer_schema_is_refused_on_both_backends(db_location: str) -> None:
    SQLStore(db_location).close()
    with SQLStore(db_location) as store:  # accepted: the version this code knows
        assert store.schema_version() == SCHEMA_VERSION
        with store.database.transaction() as tx:
            tx.execute("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(StoreError, match="schema version 99 is newer than this trisa-peer"):
        SQLStore(db_location)


# --------------------------------------------------------------------------- replicas


def test_optimistic_locking_holds_across_replicas(replicas: tuple[SQLStore, SQLStore]) -> None:
    one, two = replicas
    assert one.commit(vasp_changes(1))
    stale = two.get_vasp("id-000001")
    fresh = one.get_vasp("id-000001")
    assert stale is not None and fresh is not None
    fresh.website = "https://first.example.net/"
    assert one.commit(Changes(vasp=fresh)) is True
    stale.website = "https://second.example.net/"
    assert two.commit(Changes(vasp=stale)) is False  # read at version 1, stored is 2
    assert stale.version.version == 1  # the caller's copy is left as it was
    stored = two.get_vasp("id-000001")
    assert stored is not None and stored.website == "https://first.example.net/"
    # twin: re-read on the second replica, the same change goes through
    stored.website = "https://second.example.net/"
    assert two.commit(Changes(vasp=stored)) is True
    assert one.get_vasp("id-000001").website == "https://second.example.net/"  # type: ignore[union-attr]


def test_concurrent_read_modify_write_on_two_replicas_loses_nothing(
    replicas: tuple[SQLStore, SQLStore],
) -> None:
    """Threads on two stores each add 1 to a counter kept in the record, retrying on a
    conflict: the final count is the number of increments (no lost update)."""
    one, two = replicas
    assert one.commit(vasp_changes(1))
    per_thread, errors = 15, []

    def bump(store: SQLStore) -> None:
        try:
            done = 0
            while done < per_thread:
                vasp = store.get_vasp("id-000001")
                assert vasp is not None
                port = int(vasp.trisa_endpoint.split(":")[1])
                vasp.trisa_endpoint = f"vasp.example.net:{port + 1}"
                if store.commit(Changes(vasp=vasp)):
                    done += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(s,)) for s in (one, two, one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = two.get_vasp("id-000001")
    assert final is not None
    assert final.trisa_endpoint == f"vasp.example.net:{443 + 4 * per_thread}"
    assert final.version.version == 1 + 4 * per_thread


def test_duplicate_common_name_on_another_replica_is_false_and_the_store_stays_usable(
    replicas: tuple[SQLStore, SQLStore],
) -> None:
    one, two = replicas
    assert one.commit(vasp_changes(1, "alice.example.com"))
    before = two.table_counts()
    dup = vasp_changes(2, "ALICE.example.com.")  # the same normalised common name
    dup.tokens.append(ContactToken("t" * 48, "id-000002", "a@example.com", ("technical",)))
    assert two.commit(dup) is False
    assert two.table_counts() == before  # nothing of the refused change was written
    # twin: another name on the same store goes through (PostgreSQL: the connection
    # that saw the constraint error is back in the pool, usable)
    assert two.commit(vasp_changes(3, "bob.example.com")) is True
    assert one.get_vasp_by_common_name("bob.example.com") is not None


def test_racing_creates_of_one_common_name_store_exactly_one(
    replicas: tuple[SQLStore, SQLStore],
) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def create(store: SQLStore, n: int) -> None:
        barrier.wait()
        results.append(store.commit(vasp_changes(n, "race.example.com")))

    threads = [threading.Thread(target=create, args=(s, n))
               for n, s in enumerate(replicas * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert replicas[0].table_counts()["vasps"] == 1


# --------------------------------------------------------------------------- settings


def _synchronous(store: SQLStore) -> str:
    db = store.database
    if db.backend == "sqlite":
        level = int(db.read("PRAGMA synchronous")[0][0])
        return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[level]
    return str(db.read("SHOW synchronous_commit")[0][0])


def test_commits_are_durable_by_default(db_location: str) -> None:
    with SQLStore(db_location) as store:
        assert _synchronous(store) in ("FULL", "on")
    # twin: the non-durable setting is visibly different
    with SQLStore(db_location, durable=False) as store:
        assert _synchronous(store) in ("NORMAL", "off")


def _tables(store: SQLStore) -> set[str]:
    db = store.database
    if db.backend == "sqlite":
        rows = db.read("SELECT name FROM sqlite_master WHERE type = 'table' "
                       "AND name NOT LIKE 'sqlite_%'")
    else:
        rows = db.read("SELECT table_name FROM information_schema.tables "
                       "WHERE table_schema = current_schema()")
    return {str(r[0]) for r in rows} - {"schema_version"}


def test_the_exported_table_list_is_every_table(db_location: str) -> None:
    with SQLStore(db_location) as store:
        assert set(TABLES) == _tables(store)
        assert TABLES[0] == "vasps" and len(set(TABLES)) == len(TABLES)
        # twin: a table the list does not name is noticed
        with store.database.transaction() as tx:
            tx.execute("CREATE TABLE stray (x INTEGER)")
        assert set(TABLES) != _tables(store)


# --------------------------------------------------------------------------- prefix search


def test_prefix_search_is_bytewise_on_both_backends(db_location: str) -> None:
    """"ab-cd" does not start with "abc": a collation that ignores punctuation would say
    it does (the PostgreSQL twin below shows one)."""
    with SQLStore(db_location) as store:
        assert store.commit(vasp_changes(1, "one.example.com", name="AB-CD Holdings"))
        assert store.commit(vasp_changes(2, "two.example.com", name="ABCE Trading"))
        found = store.search(names=["abc"])
        assert [r.common_name for r in found] == ["two.example.com"]
        assert store.resolve_name("abc", prefix=True) == ["id-000002"]
        if store.database.backend != "postgresql":
            return
        # twin: the same range under a punctuation-ignoring collation matches both
        with store.database.transaction() as tx:
            tx.execute("CREATE COLLATION shifted (provider = icu, "
                       "locale = 'und-u-ka-shifted')")
            rows = tx.all("SELECT DISTINCT vasp_id FROM names WHERE name COLLATE shifted "
                          ">= ? AND name COLLATE shifted < ?", ("abc", "abc\U0010ffff"))
        assert sorted(r[0] for r in rows) == ["id-000001", "id-000002"]


def _plan(store: SQLStore, sql: str, args: tuple[object, ...]) -> str:
    with store.database.transaction() as tx:
        tx.execute("SET LOCAL enable_seqscan = off")
        return "\n".join(str(r[0]) for r in tx.all("EXPLAIN " + sql, args))


@pytest.mark.parametrize("db_location", ["postgresql"], indirect=True)
def test_postgresql_prefix_range_uses_the_primary_key_index(db_location: str) -> None:
    with SQLStore(db_location) as store:
        for n in range(50):
            assert store.commit(vasp_changes(n))
        plan = _plan(store, "SELECT DISTINCT vasp_id FROM names WHERE name >= ? AND name < ?",
                     ("vasp 1", "vasp 1\U0010ffff"))
        assert "Index" in plan and "Seq Scan" not in plan, plan
        # twin: the same range on a column without an index is a sequential scan
        plan = _plan(store, "SELECT id FROM vasps WHERE common_name >= ? AND common_name < ?",
                     ("vasp1", "vasp1\U0010ffff"))
        assert "Seq Scan" in plan, plan


# --------------------------------------------------------------------------- freshness


class _CachingStore:
    """A deliberately stale cache in front of a store (the twin of the freshness test:
    what the rule forbids)."""

    def __init__(self, store: SQLStore) -> None:
        self._store = store
        self._lookups: dict[tuple[str | None, str | None], Any] = {}
        self._searches: dict[str, list[SearchRow]] = {}

    def get_lookup(self, *, vasp_id: str | None = None, common_name: str | None = None
                   ) -> tuple[int, bytes] | None:
        key = (vasp_id, common_name)
        if key not in self._lookups:
            self._lookups[key] = self._store.get_lookup(vasp_id=vasp_id, common_name=common_name)
        return self._lookups[key]  # type: ignore[no-any-return]

    def resolve_name(self, name: str, *, prefix: bool) -> list[str]:
        key = (name, str(prefix))
        if key not in self._lookups:
            self._lookups[key] = self._store.resolve_name(name, prefix=prefix)
        return self._lookups[key]  # type: ignore[no-any-return]

    def search(self, **kw: Any) -> list[SearchRow]:
        key = repr(sorted(kw.items()))
        if key not in self._searches:
            self._searches[key] = self._store.search(**kw)
        return self._searches[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _lookup_serial(stub: gds_grpc.TRISADirectoryStub, cn: str) -> bytes | None:
    try:
        reply = stub.Lookup(gds_pb2.LookupRequest(common_name=cn), timeout=5)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return bytes(reply.identity_certificate.serial_number)


def _search_names(stub: gds_grpc.TRISADirectoryStub, name: str) -> list[str]:
    reply = stub.Search(gds_pb2.SearchRequest(name=[name]), timeout=5)
    return sorted(r.common_name for r in reply.results)


def _freshness_run(store_b: Any, location: str, alice: Identity, ca: CertificateAuthority,
                   cli: Callable[..., CliResult], tmp_path: Path) -> list[str]:
    """Writes through the CLI and through replica A, each followed at once by reads
    through replica B; returns the reads that missed a committed write."""
    stale: list[str] = []
    store_a = SQLStore(location)
    dir_b = Directory(store_b, directory_id="testnet.local")
    try:
        with DirectoryServer(Directory(store_a), listen="127.0.0.1:0") as a, \
                DirectoryServer(dir_b, listen="127.0.0.1:0") as b, \
                grpc.insecure_channel(a.endpoint) as ch_a, \
                grpc.insecure_channel(b.endpoint) as ch_b:
            stub_a, stub_b = gds_grpc.TRISADirectoryStub(ch_a), gds_grpc.TRISADirectoryStub(ch_b)
            # B answers before the write (a cache would keep these answers)
            assert _lookup_serial(stub_b, "alice.example.com") is None
            assert _search_names(stub_b, "alice") == []
            # 1. the CLI imports a record: B sees it at once
            pem = tmp_path / "alice.pem"
            pem.write_bytes(certs_to_pem([alice.leaf, *alice.chain]))
            done = cli("gds", "add", "--db", location, "--common-name", "alice.example.com",
                       "--endpoint", "alice.example.com:443", "--cert", pem,
                       "--name", "Alice VASP", "--json")
            assert done.returncode == 0, done.stderr
            vasp_id = json.loads(done.stdout)["id"]
            if _lookup_serial(stub_b, "alice.example.com") != go_serial(alice.leaf.serial_number):
                stale.append("lookup after CLI add")
            if _search_names(stub_b, "alice") != ["alice.example.com"]:
                stale.append("search after CLI add")
            # 2. replica A rotates the certificate: B's next Lookup has the new one
            rotated = ca.issue("alice.example.com", key_size=2048)
            Directory(store_a).update_certificate(vasp_id, [rotated.leaf, *rotated.chain])
            if _lookup_serial(stub_b, "alice.example.com") != go_serial(rotated.leaf.serial_number):
                stale.append("lookup after replica A update")
            # 3. a registration through A's gRPC: B's Verification answers it
            reply = stub_a.Register(_register("carol.example.com"), timeout=5)
            try:
                stub_b.Verification(gds_pb2.VerificationRequest(id=reply.id), timeout=5)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                stale.append("verification after register on A")
    finally:
        store_a.close()
    return stale


def _register(cn: str) -> gds_pb2.RegisterRequest:
    req = gds_pb2.RegisterRequest(trisa_endpoint=f"{cn}:443", common_name=cn)
    req.entity.name.name_identifiers.append(ivms101_pb2.LegalPersonNameId(
        legal_person_name="Carol Holdings", legal_person_name_identifier_type=1))
    req.entity.country_of_registration = "DE"
    req.contacts.technical.name = "Carla Tech"
    req.contacts.technical.email = "tech@carol.example.com"
    return req


def test_a_read_after_a_committed_write_on_any_replica_sees_it(
    db_location: str, alice: Identity, ca: CertificateAuthority,
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path,
) -> None:
    with SQLStore(db_location) as store_b:
        assert _freshness_run(store_b, db_location, alice, ca, trisa_peer_cli, tmp_path) == []


def test_twin_a_caching_replica_fails_the_freshness_check(
    db_location: str, alice: Identity, ca: CertificateAuthority,
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path,
) -> None:
    with SQLStore(db_location) as store_b:
        stale = _freshness_run(_CachingStore(store_b), db_location, alice, ca,
                               trisa_peer_cli, tmp_path)
    assert stale == ["lookup after CLI add", "search after CLI add",
                     "lookup after replica A update"]


# --------------------------------------------------------------------------- import cost


def _steps_per_import(store: SQLStore, first: int, count: int) -> float:
    """SQLite VM instructions per import (lookup + commit, as Directory.add does),
    counted by the progress handler of this thread's connection: deterministic, no
    clock involved."""
    conn = store.database._conn()  # type: ignore[attr-defined]
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(tick, 1)
    try:
        for n in range(first, first + count):
            changes = vasp_changes(n)
            assert changes.vasp is not None
            assert store.get_lookup(common_name=changes.vasp.common_name) is None
            assert store.commit(changes)
    finally:
        conn.set_progress_handler(None, 0)
    return steps[0] / count


def test_import_work_does_not_grow_with_the_directory(tmp_path: Path) -> None:
    with SQLStore(tmp_path / "gds.db") as store:
        small = _steps_per_import(store, 0, 50)
        for n in range(50, 2000):
            assert store.commit(vasp_changes(n))
        large = _steps_per_import(store, 2000, 50)
        assert large < small * 1.2, (small, large)
        # twin: the statement this store used before (the next certificate number as a
        # table-wide MAX) costs work proportional to the table
        conn = store.database._conn()  # type: ignore[attr-defined]
        counted = [0]

        def tick() -> int:
            counted[0] += 1
            return 0

        conn.set_progress_handler(tick, 1)
        try:
            conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM certificates").fetchall()
        finally:
            conn.set_progress_handler(None, 0)
        assert counted[0] > 2000  # at least one step per stored certificate


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def alice_pem(tmp_path: Path, alice: Identity) -> Path:
    path = tmp_path / "alice.pem"
    path.write_bytes(certs_to_pem([alice.leaf, *alice.chain]))
    return path


@pytest.mark.slow
def test_operator_commands_and_serve_on_one_database_url(
    db_location: str, alice_pem: Path, trisa_peer_cli: Callable[..., CliResult],
) -> None:
    done = trisa_peer_cli("gds", "add", "--db", db_location, "--common-name",
                          "alice.example.com", "--endpoint", "alice.example.com:443",
                          "--cert", alice_pem, "--json")
    assert done.returncode == 0, done.stderr
    vasp_id = json.loads(done.stdout)["id"]
    listed = trisa_peer_cli("gds", "list", "--db", db_location, "--json")
    assert [d["id"] for d in json.loads(listed.stdout)] == [vasp_id]
    proc = subprocess.Popen(
        [sys.executable, "-m", "trisa_peer", "gds", "serve", "--db", db_location,
         "--listen", "127.0.0.1:0", "--insecure"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("directory listening on 127.0.0.1:"), line
        endpoint = line.split()[3]
        with grpc.insecure_channel(endpoint) as channel:
            stub = gds_grpc.TRISADirectoryStub(channel)
            assert stub.Lookup(gds_pb2.LookupRequest(common_name="alice.example.com"),
                               timeout=10).id == vasp_id
            # an operator command on the same URL while the server runs: seen at once
            outbox = trisa_peer_cli("gds", "outbox", "--db", db_location, "--json")
            assert outbox.returncode == 0, outbox.stderr
            reply = stub.Register(_register("carol.example.com"), timeout=10)
            with SQLStore(db_location) as store:
                token = store.tokens_for(reply.id)[0].token
            stub.VerifyContact(gds_pb2.VerifyContactRequest(id=reply.id, token=token),
                               timeout=10)
            rejected = trisa_peer_cli("gds", "review", reply.id, "--reject", "--reason",
                                      "test", "--db", db_location, "--json")
            assert rejected.returncode == 0, rejected.stderr
            status = stub.Verification(gds_pb2.VerificationRequest(id=reply.id), timeout=10)
            assert status.verification_status == VS.REJECTED
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_db_password_file_must_be_private(
    db_location: str, tmp_path: Path, trisa_peer_cli: Callable[..., CliResult],
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("not-needed-with-trust-auth\n")
    secret.chmod(0o600)
    done = trisa_peer_cli("gds", "list", "--db", db_location, "--db-password-file", secret)
    if db_location.startswith("postgresql"):
        assert done.returncode == 0, done.stderr  # trust auth ignores the password
    else:
        assert done.returncode == 1
        assert done.stderr == ("trisa-peer: error: --db-password-file applies to "
                               "PostgreSQL only\n")
    # twin: the same file readable by others is refused before anything is opened
    secret.chmod(0o644)
    done = trisa_peer_cli("gds", "list", "--db", db_location, "--db-password-file", secret)
    assert done.returncode == 1
    if db_location.startswith("postgresql"):
        assert done.stderr == (f"trisa-peer: error: {secret}: password file is readable "
                               "by others; chmod 600 it\n")
    assert "not-needed" not in done.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://root:s3cret@127.0.0.1:5432/postgres",
         "a password in the URL shows in the process list"),
        ("postgresql://root@127.0.0.1:1/nodb", "directory database postgresql://root@"
                                               "127.0.0.1:1/nodb: connect failed"),
    ],
)
def test_bad_database_urls_are_one_line(url: str, message: str,
                                        trisa_peer_cli: Callable[..., CliResult]) -> None:
    done = trisa_peer_cli("gds", "list", "--db", url)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr
