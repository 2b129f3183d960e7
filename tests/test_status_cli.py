"""``trisa-peer status``: identity, expiry, directory and store, from serve's options.

Each usable case has a twin that differs in one thing and reports it (exit 1, one
``error:`` line on stderr, the report still on stdout). The directory is the project's
own GDS on loopback; the stores are real SQLite files (and a real PostgreSQL database).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import PKI, CliResult
from pki import identity

from trisa_peer.directory.server import DirectoryServer
from trisa_peer.directory.store import SQLiteStore
from trisa_peer.network.store import TransferStore
from trisa_peer.testing.network import free_port

Cli = Callable[..., CliResult]


@pytest.fixture
def gds(tmp_path: Path) -> Iterator[DirectoryServer]:
    server = DirectoryServer(SQLiteStore(tmp_path / "gds.db"), listen="127.0.0.1:0")
    server.start()
    yield server
    server.stop()


def base(name: str, directory: str) -> list[str]:
    return ["status", "--cert", str(PKI / f"{name}.pem"), "--key", str(PKI / f"{name}.key"),
            "--trust", str(PKI / "trust.pem"), "--directory", directory,
            "--directory-insecure", "--directory-timeout", "2"]


def store_with_rows(path: Path, rows: int) -> Path:
    store = TransferStore(path)
    for i in range(rows):
        store.add(envelope_id=f"e{i}", peer="alice.vasp.test", direction="incoming",
                  kind="request", state="accepted", envelope=b"x")
    store.close()
    return path


def field(out: CliResult, name: str) -> str:
    lines = [line for line in out.stdout.splitlines() if line.startswith(f"{name}:")]
    assert len(lines) == 1, out.stdout
    return lines[0]


@pytest.mark.slow
def test_status_of_a_usable_node(trisa_peer_cli: Cli, gds: DirectoryServer,
                                 tmp_path: Path) -> None:
    db = store_with_rows(tmp_path / "bob.db", 3)
    out = trisa_peer_cli(*base("bob", gds.endpoint), "--db", str(db))
    assert out.returncode == 0, out.stderr
    bob = identity("bob")
    assert field(out, "identity") == (
        f"identity:  bob.vasp.test serial {bob.leaf.serial_number:#x} "
        f"fingerprint {bob.fingerprint}")
    assert "2076-01-01T00:00:00Z (" in field(out, "expiry") and "days left" in out.stdout
    assert "WARNING" not in out.stdout
    assert field(out, "directory") == f"directory: {gds.endpoint} reachable"
    assert field(out, "store") == f"store:     {db} (sqlite): 3 envelope rows"
    assert out.stderr == ""


@pytest.mark.slow
def test_an_expired_certificate_is_reported(trisa_peer_cli: Cli, gds: DirectoryServer) -> None:
    out = trisa_peer_cli(*base("expired", gds.endpoint))
    assert out.returncode == 1
    assert "NOT USABLE: own certificate expired.vasp.test" in field(out, "expiry")
    assert "expired at 2021-01-01T00:00:00Z" in field(out, "expiry")
    assert field(out, "directory").endswith("reachable")  # the rest is still reported
    assert out.stderr == "trisa-peer: error: status: not usable: expiry\n"


@pytest.mark.slow
def test_a_certificate_from_an_untrusted_ca_is_reported(trisa_peer_cli: Cli,
                                                        gds: DirectoryServer) -> None:
    out = trisa_peer_cli(*base("evil-bob", gds.endpoint))
    assert out.returncode == 1
    assert "which the trust pool does not hold" in field(out, "trust")
    assert out.stderr == "trisa-peer: error: status: not usable: trust\n"


@pytest.mark.slow
def test_a_key_that_does_not_match_is_reported(trisa_peer_cli: Cli, gds: DirectoryServer) -> None:
    args = base("bob", gds.endpoint)
    args[args.index("--key") + 1] = str(PKI / "alice.key")
    out = trisa_peer_cli(*args)
    assert out.returncode == 1
    assert "identity:  NOT USABLE:" in out.stdout and "does not match" in out.stdout
    assert out.stderr == "trisa-peer: error: status: not usable: identity\n"


@pytest.mark.slow
def test_an_unreachable_directory_is_reported(trisa_peer_cli: Cli) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    out = trisa_peer_cli(*base("bob", endpoint))
    assert out.returncode == 1
    assert field(out, "directory").startswith(f"directory: {endpoint} UNREACHABLE: ")
    assert field(out, "identity").startswith("identity:  bob.vasp.test")
    assert out.stderr == "trisa-peer: error: status: not usable: directory\n"


@pytest.mark.slow
def test_store_problems_are_reported_and_nothing_is_created(
        trisa_peer_cli: Cli, gds: DirectoryServer, tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    out = trisa_peer_cli(*base("bob", gds.endpoint), "--db", str(missing))
    assert out.returncode == 1 and "no such transfer store" in field(out, "store")
    assert not missing.exists()
    other = tmp_path / "other.db"
    other.write_bytes(b"not a database at all, just text" * 10)
    out = trisa_peer_cli(*base("bob", gds.endpoint), "--db", str(other))
    assert out.returncode == 1 and "NOT USABLE" in field(out, "store")
    assert out.stderr == "trisa-peer: error: status: not usable: store\n"
    # a URL with a password: refused, and the password is not shown
    url = "postgresql://trisa:hunter2@127.0.0.1:5432/transfers"
    out = trisa_peer_cli(*base("bob", gds.endpoint), "--db", url)
    assert out.returncode == 1 and "NOT USABLE" in field(out, "store")
    assert "hunter2" not in out.stdout + out.stderr
    # without --db: in memory, not a problem
    out = trisa_peer_cli(*base("bob", gds.endpoint))
    assert out.returncode == 0 and "in memory" in field(out, "store")


@pytest.mark.slow
def test_status_reads_serve_s_config_file(trisa_peer_cli: Cli, gds: DirectoryServer,
                                          tmp_path: Path) -> None:
    db = store_with_rows(tmp_path / "bob.db", 1)
    config = tmp_path / "node.toml"
    config.write_text(
        f'listen = "127.0.0.1:0"\ncert = "{PKI / "bob.pem"}"\nkey = "{PKI / "bob.key"}"\n'
        f'trust = ["{PKI / "trust.pem"}"]\ndirectory = "{gds.endpoint}"\n'
        f'directory_insecure = true\ndb = "{db}"\npolicy = "accept"\n'
        'reload_interval = 60\ntimestamp_window = 600\n')
    out = trisa_peer_cli("status", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert field(out, "store").endswith(": 1 envelope rows")
    bad = tmp_path / "bad.toml"  # the twin: a value serve would refuse
    bad.write_text(config.read_text().replace("reload_interval = 60", "reload_interval = 0"))
    out = trisa_peer_cli("status", "--config", str(bad))
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "reload_interval" in out.stderr


def test_status_without_a_certificate_is_a_usage_error(trisa_peer_cli: Cli) -> None:
    out = trisa_peer_cli("status", "--trust", str(PKI / "trust.pem"),
                         "--directory", "127.0.0.1:1")
    assert out.returncode == 2 and "--cert" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_postgresql_store_is_counted_and_a_missing_table_reported(
        trisa_peer_cli: Cli, gds: DirectoryServer) -> None:
    import psycopg

    from trisa_peer.testing.postgres import TemporaryDatabase

    with TemporaryDatabase("h8_reload") as db:
        out = trisa_peer_cli(*base("bob", gds.endpoint), "--db", db.url)
        assert out.returncode == 1 and "NOT USABLE" in field(out, "store")  # no table yet
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE envelopes (seq SERIAL PRIMARY KEY)")
            conn.execute("INSERT INTO envelopes DEFAULT VALUES")
            conn.execute("INSERT INTO envelopes DEFAULT VALUES")
        out = trisa_peer_cli(*base("bob", gds.endpoint), "--db", db.url)
        assert out.returncode == 0, out.stdout + out.stderr
        assert field(out, "store").endswith("(postgresql): 2 envelope rows")
