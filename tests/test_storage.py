"""The storage layer on both backends: URLs, transactions, errors, migrations."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from trisa_peer.errors import ConfigurationError, StoreConflictError, StoreError
from trisa_peer.storage import migrate, open_database, parse_url, redact
from trisa_peer.storage.database import read_password_file

# ------------------------------------------------------------------ URLs


@pytest.mark.parametrize(
    ("value", "backend", "where"),
    [
        ("transfers.db", "sqlite", "transfers.db"),
        ("/var/lib/x.db", "sqlite", "/var/lib/x.db"),
        ("sqlite:///rel/x.db", "sqlite", "rel/x.db"),
        ("sqlite:////abs/x.db", "sqlite", "/abs/x.db"),
        ("sqlite:///:memory:", "sqlite", ":memory:"),
        ("postgresql://app@db.example:5432/trisa?sslmode=verify-full", "postgresql",
         "postgresql://app@db.example:5432/trisa?sslmode=verify-full"),
        ("postgres://db/trisa", "postgresql", "postgres://db/trisa"),
    ],
)
def test_parse_url_accepts(value: str, backend: str, where: str) -> None:
    url = parse_url(value)
    assert url.backend == backend
    assert url.display == where


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("postgresql://app:s3cret@db/trisa", "password in the URL"),
        ("postgresql://app@db/trisa?password=s3cret", "password in the URL"),
        ("postgresql://app@db:5432", "name the database"),
        ("mysql://db/trisa", "unknown database scheme"),
        ("sqlite://x.db", "sqlite:///relative/path"),
        ("  ", "empty database location"),
    ],
)
def test_parse_url_refuses(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        parse_url(value)
    assert "s3cret" not in str(info.value)
    assert "\n" not in str(info.value)


def test_redact_hides_passwords_only() -> None:
    text = "connect postgresql://app:s3cret@db:5432/trisa failed; password=hunter2 host=db"
    out = redact(text)
    assert "s3cret" not in out and "hunter2" not in out
    assert "postgresql://app:***@db:5432/trisa" in out and "host=db" in out
    # twin: nothing to hide, nothing changed
    assert redact("postgresql://app@db/trisa") == "postgresql://app@db/trisa"


def test_password_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    assert read_password_file(secret) == "s3cret"
    secret.chmod(0o640)
    with pytest.raises(ConfigurationError, match="readable by others; chmod 600"):
        read_password_file(secret)


# ------------------------------------------------------------------ both backends

_SCHEMA = {
    1: "CREATE TABLE items (seq {SERIAL_PK}, name TEXT NOT NULL UNIQUE, data {BLOB})",
    2: "ALTER TABLE items ADD COLUMN note TEXT NOT NULL DEFAULT ''",
}


def test_transaction_commits_and_rolls_back(db_location: str) -> None:
    with open_database(db_location, purpose="test store") as db:
        migrate(db, _SCHEMA, component="test")
        with db.transaction() as tx:
            seq = tx.insert("INSERT INTO items (name, data) VALUES (?, ?)", ("a", b"\x00\x01%?"))
        assert db.read("SELECT seq, name, data, note FROM items") == [(seq, "a", b"\x00\x01%?", "")]
        # twin: an exception inside the transaction leaves nothing behind
        with pytest.raises(RuntimeError), db.transaction() as tx:
            tx.insert("INSERT INTO items (name) VALUES (?)", ("b",))
            raise RuntimeError("handler failed")
        assert [r[0] for r in db.read("SELECT name FROM items ORDER BY seq")] == ["a"]


def test_duplicate_key_is_a_conflict_error(db_location: str) -> None:
    with open_database(db_location, purpose="test store") as db:
        migrate(db, _SCHEMA, component="test")
        with db.transaction() as tx:
            tx.insert("INSERT INTO items (name) VALUES (?)", ("a",))
        with pytest.raises(StoreConflictError, match=r"test store .*write failed"), \
                db.transaction() as tx:
            tx.insert("INSERT INTO items (name) VALUES (?)", ("a",))
        # twin: a different name is fine
        with db.transaction() as tx:
            tx.insert("INSERT INTO items (name) VALUES (?)", ("b",))
        assert db.read_one("SELECT COUNT(*) FROM items") == (2,)


def test_bad_sql_is_a_store_error_not_a_driver_error(db_location: str) -> None:
    with open_database(db_location, purpose="test store") as db:
        with pytest.raises(StoreError, match="read failed") as info:
            db.read("SELECT nothing FROM nowhere")
        assert not isinstance(info.value, StoreConflictError)


def test_lock_serialises_writers_on_one_key(db_location: str) -> None:
    """Two threads increment one counter with read-modify-write under ``lock``: no lost
    update on either backend (PostgreSQL: advisory lock; SQLite: BEGIN IMMEDIATE)."""
    with open_database(db_location, purpose="test store") as db:
        migrate(db, _SCHEMA, component="test")
        with db.transaction() as tx:
            tx.insert("INSERT INTO items (name, note) VALUES (?, ?)", ("counter", "0"))

        def bump() -> None:
            for _ in range(20):
                with db.transaction() as tx:
                    tx.lock("counter")
                    row = tx.one("SELECT note FROM items WHERE name = ?", ("counter",))
                    assert row is not None
                    tx.execute("UPDATE items SET note = ? WHERE name = ?",
                               (str(int(row[0]) + 1), "counter"))

        threads = [threading.Thread(target=bump) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert db.read_one("SELECT note FROM items WHERE name = ?", ("counter",)) == ("60",)


def test_migrate_applies_once_and_refuses_a_newer_schema(db_location: str) -> None:
    with open_database(db_location, purpose="test store") as db:
        assert migrate(db, {1: _SCHEMA[1]}, component="test") == (0, 1)
        # check-only: older than the code -> the command that upgrades it
        with pytest.raises(StoreError, match="schema version 1, this trisa-peer needs 2; "
                                             "run: trisa-peer db migrate"):
            migrate(db, _SCHEMA, component="test", apply=False)
        assert migrate(db, _SCHEMA, component="test") == (1, 2)
        assert migrate(db, _SCHEMA, component="test") == (2, 2)  # idempotent
        # twin: code that knows only version 1 refuses the version-2 database
        with pytest.raises(StoreError, match="schema version 2 is newer than this "
                                             "trisa-peer knows \\(1\\); upgrade"):
            migrate(db, {1: _SCHEMA[1]}, component="test")


def test_durable_settings(db_location: str) -> None:
    with open_database(db_location, purpose="test store") as db:
        if db.backend == "sqlite":
            assert db.read_one("PRAGMA synchronous") == (2,)  # FULL
        else:
            assert db.read_one("SHOW synchronous_commit") == ("on",)
    with open_database(db_location, purpose="test store", durable=False) as db:
        if db.backend == "sqlite":
            assert db.read_one("PRAGMA synchronous") == (1,)  # NORMAL
        else:
            assert db.read_one("SHOW synchronous_commit") == ("off",)


# ------------------------------------------------------------------ backend specifics


def test_sqlite_file_is_private_and_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    open_database(path, purpose="test store").close()
    assert os.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(StoreError, match=r"directory .*nope does not exist"):
        open_database(tmp_path / "nope" / "s.db", purpose="test store")
    with pytest.raises(StoreError, match="no such test store"):
        open_database(tmp_path / "absent.db", purpose="test store", create=False)


def test_sqlite_refuses_writes_once_its_file_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_database(path, purpose="test store") as db:
        migrate(db, _SCHEMA, component="test")
        with db.transaction() as tx:
            tx.insert("INSERT INTO items (name) VALUES (?)", ("a",))
        assert db.problem() is None
        path.unlink()
        assert db.problem() is not None and "is gone" in (db.problem() or "")
        with pytest.raises(StoreError, match="unusable"), db.transaction() as tx:
            tx.insert("INSERT INTO items (name) VALUES (?)", ("b",))


def test_postgres_unreachable_is_one_line_without_password() -> None:
    with pytest.raises(StoreError) as info:
        open_database("postgresql://nobody@127.0.0.1:1/trisa", purpose="transfer store")
    text = str(info.value)
    assert "\n" not in text and "transfer store postgresql://nobody@127.0.0.1:1/trisa" in text


def test_password_file_only_for_postgres(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x")
    secret.chmod(0o600)
    with pytest.raises(ConfigurationError, match="PostgreSQL only"):
        open_database(tmp_path / "s.db", purpose="test store", password_file=secret)
