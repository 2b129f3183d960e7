"""``trisa-peer db migrate|copy`` and the ``--db`` options, on both backends: copies
sqlite -> postgresql and back (a transfer store through the CLI, a directory-shaped
store through :func:`copy_store`), each verified, with its refused twin."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pg
import pytest
from helpers import PKI, CliResult
from test_idempotency import _V1_SCHEMA
from test_transfer_store import _history

from trisa_peer.errors import ConfigurationError
from trisa_peer.network.store import TransferStore
from trisa_peer.storage import open_database
from trisa_peer.storage.copy import copy_store, table_digests


def _location(backend: str, tmp_path: Path, name: str) -> str:
    return str(tmp_path / f"{name}.db") if backend == "sqlite" else pg.fresh_schema_url()


def _filled(location: str) -> TransferStore:
    store = TransferStore(location)
    _history(store)
    for i in range(30):  # more than one page of the copy's reads is not needed: keys
        store.add(envelope_id=f"bulk{i}", peer="bob", direction="outgoing", kind="request",
                  state="sent", envelope=bytes([i]) * 40)
    return store


def _contents(store: TransferStore) -> Any:
    return ([s for s in store.summaries(limit=1000)],
            [store.exchange(s.envelope_id) for s in store.summaries(limit=1000)])


@pytest.mark.parametrize(("src", "dst"), [("sqlite", "postgresql"), ("postgresql", "sqlite")],
                         ids=["sqlite-to-postgresql", "postgresql-to-sqlite"])
def test_db_copy_moves_a_transfer_store_verified(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path, src: str, dst: str
) -> None:
    source_url, target_url = _location(src, tmp_path, "src"), _location(dst, tmp_path, "dst")
    source = _filled(source_url)
    out = trisa_peer_cli("db", "copy", "--from-db", source_url, "--to-db", target_url)
    assert out.returncode == 0, out.stderr
    assert f"envelopes: {source.count()} rows, sha256 " in out.stdout
    assert "counts and digests match" in out.stdout
    target = TransferStore(target_url)
    assert _contents(target) == _contents(source)
    # identity/serial values continue after the copied ones
    seq = target.add(envelope_id="after", peer="bob", direction="outgoing", kind="request",
                     state="sent", envelope=b"x")
    assert seq > max(s.key for s in source.summaries(limit=1000))
    target.close()
    # twin: a target that holds rows is refused, one line, and left as it was
    again = trisa_peer_cli("db", "copy", "--from", source_url, "--to", target_url)
    assert again.returncode == 1 and "not empty (table" in again.stderr
    assert again.stderr.count("\n") == 1
    source.close()


def test_db_copy_reports_a_mismatch_in_one_line(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    source_url = str(tmp_path / "src.db")
    _filled(source_url).close()
    target = tmp_path / "dst.db"
    TransferStore(target).close()
    # a real fault in the target: a trigger that changes what was written
    db = sqlite3.connect(target)
    db.execute("CREATE TRIGGER spoil AFTER INSERT ON envelopes WHEN NEW.envelope_id = 'i1' "
               "BEGIN UPDATE envelopes SET state = 'spoiled' WHERE seq = NEW.seq; END")
    db.close()
    out = trisa_peer_cli("db", "copy", "--from", source_url, "--to", str(target))
    assert out.returncode == 1
    assert "copy verification failed: table envelopes" in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    # twin: without the trigger the same copy verifies
    ok = tmp_path / "ok.db"
    assert trisa_peer_cli("db", "copy", "--from", source_url, "--to", str(ok)).returncode == 0


# A store shaped like the directory's (text keys, composite keys, a serial key, blobs),
# with its own portable migrations: the copy is generic, table by table.
_DIRECTORY_LIKE = {
    1: """
CREATE TABLE vasps (id TEXT PRIMARY KEY, common_name TEXT NOT NULL, record {BLOB} NOT NULL,
                    status TEXT NOT NULL);
CREATE TABLE names (name TEXT NOT NULL, vasp_id TEXT NOT NULL, PRIMARY KEY (name, vasp_id));
CREATE TABLE emails (seq {SERIAL_PK}, vasp_id TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE certificates (id TEXT PRIMARY KEY, vasp_id TEXT NOT NULL REFERENCES vasps(id),
                           seq INTEGER NOT NULL, der {BLOB} NOT NULL)
""",
}


def _directory_like(location: str) -> Any:
    from trisa_peer.storage import migrate

    db = open_database(location, purpose="directory")
    migrate(db, _DIRECTORY_LIKE, component="directory")
    with db.transaction() as tx:
        for i, name in enumerate(["Zeta", "alpha", "Émile", "beta", "_x", "Alpha"]):
            vid = f"id-{name}"
            tx.execute("INSERT INTO vasps VALUES (?, ?, ?, ?)", (vid, name, bytes([i, 0, 255]),
                                                                  "VERIFIED"))
            tx.execute("INSERT INTO names VALUES (?, ?)", (name.lower(), vid))
            tx.execute("INSERT INTO certificates VALUES (?, ?, ?, ?)", (f"c{i}", vid, i,
                                                                        b"\x30" * (i + 1)))
            tx.insert("INSERT INTO emails (vasp_id, body) VALUES (?, ?)", (vid, f"hello {i}"))
    return db


@pytest.mark.parametrize(("src", "dst"), [("sqlite", "postgresql"), ("postgresql", "sqlite")],
                         ids=["sqlite-to-postgresql", "postgresql-to-sqlite"])
def test_copy_store_moves_a_directory_shaped_store(tmp_path: Path, src: str, dst: str) -> None:
    source = _directory_like(_location(src, tmp_path, "gds"))
    target = open_database(_location(dst, tmp_path, "gds2"), purpose="target")
    report = copy_store(source, target, migrations=_DIRECTORY_LIKE)
    assert report.kind == "directory"
    assert [t.table for t in report.target] == ["emails", "names", "vasps", "certificates"]
    assert report.source == report.target  # the same digests across backends
    with target.transaction() as tx:  # the serial continues after the copied keys
        assert tx.insert("INSERT INTO emails (vasp_id, body) VALUES (?, ?)", ("x", "y")) == 7
    # twin: one changed byte in the source gives another digest
    with source.transaction() as tx:
        tx.execute("UPDATE vasps SET record = ? WHERE id = ?", (b"\x00\x00\xfe", "id-Zeta"))
    assert table_digests(source, ["vasps"]) != [t for t in report.source if t.table == "vasps"]
    source.close()
    target.close()


# ------------------------------------------------------------------ migrate


def test_db_migrate_upgrades_an_old_file_and_refuses_a_newer_one(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript(_V1_SCHEMA)
    db.close()
    out = trisa_peer_cli("db", "migrate", "--db", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"transfers store {path}: schema 1 -> 5"
    assert trisa_peer_cli("db", "migrate", "--db", str(path)).stdout.endswith("5 -> 5\n")
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = 9")
    db.commit()
    db.close()
    newer = trisa_peer_cli("db", "migrate", "--db", f"sqlite:///{path}")
    assert newer.returncode == 1 and "schema version 9 is newer" in newer.stderr
    assert newer.stderr.count("\n") == 1


def test_db_migrate_creates_only_a_named_store(
    trisa_peer_cli: Callable[..., CliResult], db_location: str
) -> None:
    unnamed = trisa_peer_cli("db", "migrate", "--db", db_location)
    assert unnamed.returncode == 1 and unnamed.stderr.count("\n") == 1
    if "://" in db_location:  # an empty database: nothing to recognise
        assert "neither a transfer store nor a directory" in unnamed.stderr
    else:  # no file: none is created
        assert "no such store" in unnamed.stderr and not Path(db_location).exists()
    named = trisa_peer_cli("db", "migrate", "--db", db_location, "--store", "transfers")
    assert named.returncode == 0, named.stderr
    assert named.stdout.endswith("schema 0 -> 5\n")


# ------------------------------------------------------------------ --db options


def test_transfers_list_pages_by_key(trisa_peer_cli: Callable[..., CliResult],
                                     db_location: str) -> None:
    _filled(db_location).close()
    first = trisa_peer_cli("transfers", "list", "--db", db_location, "--limit", "2")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert "bulk29" in lines[1] and "bulk28" in lines[2]
    more = [line for line in lines if line.startswith("more: --before ")]
    assert len(more) == 1
    key = more[0].split()[-1]
    second = trisa_peer_cli("transfers", "list", "--db", db_location, "--limit", "2",
                            "--before", key)
    assert "bulk27" in second.stdout and "bulk26" in second.stdout
    assert "bulk28" not in second.stdout


def test_db_password_file_must_be_private(trisa_peer_cli: Callable[..., CliResult],
                                          tmp_path: Path) -> None:
    url = pg.fresh_schema_url()
    TransferStore(url).close()
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    loose = trisa_peer_cli("transfers", "list", "--db", url, "--db-password-file", str(secret))
    assert loose.returncode == 1 and "readable by others; chmod 600" in loose.stderr
    assert loose.stderr.count("\n") == 1 and "hunter2" not in loose.stderr
    secret.chmod(0o600)  # twin: private, it is used (trust auth accepts any password)
    ok = trisa_peer_cli("transfers", "list", "--db", url, "--db-password-file", str(secret))
    assert ok.returncode == 0, ok.stderr
    assert "no transfers" in ok.stdout


def test_a_password_in_the_url_is_refused_and_never_shown(
    trisa_peer_cli: Callable[..., CliResult],
) -> None:
    out = trisa_peer_cli("transfers", "list", "--db",
                         "postgresql://root:hunter2@127.0.0.1:5432/postgres")
    assert out.returncode == 1 and "password in the URL" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout and out.stderr.count("\n") == 1
    # twin: a refused server is one line too, with the URL shown
    down = trisa_peer_cli("transfers", "list", "--db", "postgresql://root@127.0.0.1:1/x")
    assert down.returncode == 1 and "127.0.0.1:1/x" in down.stderr
    assert down.stderr.count("\n") == 1


def test_a_missing_store_is_not_created(trisa_peer_cli: Callable[..., CliResult],
                                        tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    out = trisa_peer_cli("transfers", "list", "--db", str(path))
    assert out.returncode == 1 and "no such transfer store" in out.stderr
    assert not path.exists()
    with pytest.raises(ConfigurationError, match="no such transfer store"):
        from trisa_peer.network.store import open_store

        open_store(pg.fresh_schema_url(), existing=True)


def test_stream_reads_every_row_in_pages(db_location: str) -> None:
    from trisa_peer.errors import StoreError

    store = TransferStore(db_location)
    for i in range(25):
        store.add(envelope_id=f"s{i}", peer="p", direction="outgoing", kind="request",
                  state="sent", envelope=b"x")
    rows = list(store.db.stream("SELECT seq FROM envelopes ORDER BY seq", size=4))
    assert [r[0] for r in rows] == [r[0] for r in store.db.read(
        "SELECT seq FROM envelopes ORDER BY seq")] and len(rows) == 25
    # twin: a bad query is the store's error, not the driver's
    with pytest.raises(StoreError, match="read failed"):
        list(store.db.stream("SELECT nothing FROM nowhere"))
    store.close()


@pytest.mark.parametrize(("src", "dst"), [("sqlite", "postgresql"), ("postgresql", "sqlite")],
                         ids=["sqlite-to-postgresql", "postgresql-to-sqlite"])
def test_db_copy_moves_a_real_directory(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path, src: str, dst: str
) -> None:
    """A directory written by `gds add` is copied by `db copy` and answers the same
    lookups on the other backend; records added afterwards get fresh keys."""
    source_url, target_url = _location(src, tmp_path, "gds"), _location(dst, tmp_path, "gds2")
    for cn in ("bob.vasp.test", "alice.vasp.test"):
        added = trisa_peer_cli("gds", "add", "--db", source_url, "--common-name", cn,
                               "--endpoint", f"{cn}:443", "--cert",
                               str(PKI / f"{cn.split('.')[0]}.pem"), "--name", cn)
        assert added.returncode == 0, added.stderr
    out = trisa_peer_cli("db", "copy", "--from-db", source_url, "--to-db", target_url)
    assert out.returncode == 0, out.stderr
    assert "vasps: 2 rows, sha256 " in out.stdout and "counts and digests match" in out.stdout
    for url in (source_url, target_url):
        found = trisa_peer_cli("gds", "list", "--db", url)
        assert found.returncode == 0 and "bob.vasp.test" in found.stdout, found.stderr
        assert "alice.vasp.test" in found.stdout
    more = trisa_peer_cli("gds", "add", "--db", target_url, "--common-name", "charlie.vasp.test",
                          "--endpoint", "charlie.vasp.test:443", "--cert",
                          str(PKI / "charlie.pem"), "--name", "Charlie")
    assert more.returncode == 0, more.stderr
    # twin: copying again into the now non-empty target is refused in one line
    again = trisa_peer_cli("db", "copy", "--from-db", source_url, "--to-db", target_url)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
