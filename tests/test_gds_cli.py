"""``trisa-peer gds``: operator and client commands (in-process ``main`` for speed, a
subprocess for ``serve``, which runs until SIGTERM). The CA is conftest's ``ca``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import json_format
from helpers import CliResult

from trisa_peer._pb.ivms101 import ivms101_pb2
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import Identity, certs_to_pem
from trisa_peer.cli.main import main
from trisa_peer.directory import Directory, DirectoryClient, DirectoryServer, SQLiteStore


@pytest.fixture(scope="module")
def alice(ca: CertificateAuthority) -> Identity:
    return ca.issue("alice.example.com", key_size=2048)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "gds.db")


@pytest.fixture
def alice_pem(tmp_path: Path, alice: Identity) -> Path:
    path = tmp_path / "alice.pem"
    path.write_bytes(certs_to_pem([alice.leaf, *alice.chain]))
    return path


@pytest.fixture
def server(db: str) -> DirectoryServer:
    store = SQLiteStore(db)
    with DirectoryServer(Directory(store), listen="127.0.0.1:0") as srv:
        yield srv
    store.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["gds", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def vasp_count(db: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM vasps").fetchone()[0])
    finally:
        conn.close()


def test_add_list_lookup_search(capsys: pytest.CaptureFixture[str], db: str, alice_pem: Path,
                                server: DirectoryServer, alice: Identity) -> None:
    code, out, err = run(capsys, "add", "--db", db, "--common-name", "alice.example.com",
                         "--endpoint", "alice.example.com:443", "--cert", str(alice_pem),
                         "--name", "Alice VASP", "--country", "US", "--json")
    assert code == 0, err
    added = json.loads(out)
    assert added["status"] == "VERIFIED" and added["origin"] == "import"
    code, out, _ = run(capsys, "list", "--db", db, "--json")
    assert [d["common_name"] for d in json.loads(out)] == ["alice.example.com"]
    client = ["--directory", server.endpoint, "--directory-insecure"]
    code, out, err = run(capsys, "lookup", "alice.example.com", *client, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["id"] == added["id"]
    assert doc["certificate"]["serial"] == format(alice.leaf.serial_number, "X")
    code, out, _ = run(capsys, "lookup", "alice.example.com", *client)
    assert "alice.example.com:443" in out
    code, out, _ = run(capsys, "search", "--name", "alice", "--country", "US", *client, "--json")
    assert [r["common_name"] for r in json.loads(out)] == ["alice.example.com"]
    code, out, _ = run(capsys, "status", *client, "--json")
    assert json.loads(out)["status"] == "HEALTHY"
    code, _, err = run(capsys, "lookup", "nobody.example.com", *client)
    assert code == 1 and "no verified VASP" in err and err.count("\n") == 1


def test_add_bad_input_writes_nothing(capsys: pytest.CaptureFixture[str], db: str,
                                      alice_pem: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    base = ["add", "--db", db, "--endpoint", "alice.example.com:443"]
    cases = [
        ([*base, "--common-name", "alice.example.com", "--cert", str(bad)],
         "malformed certificate"),
        ([*base, "--common-name", "alice.example.com", "--cert", str(tmp_path / "nope.pem")],
         "file not found"),
        ([*base, "--common-name", "*.example.com", "--cert", str(alice_pem)], "wildcard"),
        ([*base, "--common-name", "mallory.example.com", "--cert", str(alice_pem)],
         "does not match common name"),
        (["add", "--db", db, "--endpoint", "alice.example.com:0", "--common-name",
          "alice.example.com", "--cert", str(alice_pem)], "invalid TRISA endpoint"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 1, argv
        assert message in err and err.count("\n") == 1, err
    assert not Path(db).exists() or vasp_count(db) == 0
    ok = [*base, "--common-name", "alice.example.com", "--cert", str(alice_pem)]
    assert run(capsys, *ok)[0] == 0
    code, _, err = run(capsys, *ok[:-4], "--common-name", "ALICE.example.com",
                       "--cert", str(alice_pem))
    assert code == 1 and "already registered" in err
    assert vasp_count(db) == 1


def test_update_cert_and_unknown_ids(capsys: pytest.CaptureFixture[str], db: str,
                                     alice_pem: Path, ca: CertificateAuthority,
                                     tmp_path: Path, server: DirectoryServer) -> None:
    code, out, _ = run(capsys, "add", "--db", db, "--common-name", "alice.example.com",
                       "--endpoint", "alice.example.com:443", "--cert", str(alice_pem), "--json")
    vasp_id = json.loads(out)["id"]
    old_serial = json.loads(out)["certificate"]["serial"]
    rotated = ca.issue("alice.example.com", key_size=2048)
    new_pem = tmp_path / "rotated.pem"
    new_pem.write_bytes(certs_to_pem([rotated.leaf, *rotated.chain]))
    code, out, err = run(capsys, "update-cert", vasp_id, "--cert", str(new_pem), "--db", db,
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["superseded"] == [old_serial]
    # the running server sees the change at once
    with DirectoryClient(server.endpoint, insecure=True) as client:
        assert client.lookup(vasp_id=vasp_id).identity_certificate == rotated.leaf
    for argv in (["update-cert", "nope", "--cert", str(new_pem)], ["certs", "nope", "--out",
                 str(tmp_path)], ["review", "nope", "--reject"],
                 ["revoke", "nope", "--reason", "keyCompromise"]):
        code, _, err = run(capsys, *argv, "--db", db)
        assert code == 1 and "no VASP with id 'nope'" in err, (argv, err)
    code, _, err = run(capsys, "certs", vasp_id, "--out", str(tmp_path), "--db", db)
    assert code == 1 and "no downloaded certificate" in err


def test_revoke_imported_through_local_ca(capsys: pytest.CaptureFixture[str], db: str,
                                          alice_pem: Path, ca: CertificateAuthority,
                                          alice: Identity) -> None:
    code, out, _ = run(capsys, "add", "--db", db, "--common-name", "alice.example.com",
                       "--endpoint", "alice.example.com:443", "--cert", str(alice_pem), "--json")
    vasp_id = json.loads(out)["id"]
    code, out, err = run(capsys, "revoke", vasp_id, "--reason", "keyCompromise", "--db", db,
                         "--ca-dir", str(ca.directory), "--json")
    assert code == 0, err
    assert json.loads(out)["certificate"]["revoked"] is True
    assert ca.is_revoked(alice.leaf.serial_number)


def _register_dave(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                   req: gds_pb2.RegisterRequest, client: list[str]) -> tuple[int, str, str]:
    """``gds register --file`` with Dave Ltd's name and legal contact added to ``req``;
    asserts it succeeded and returns (code, stdout, stderr)."""
    req.entity.name.name_identifiers.append(
        ivms101_pb2.LegalPersonNameId(legal_person_name="Dave Ltd",
                                      legal_person_name_identifier_type=1))
    req.contacts.legal.name = "Dana Legal"
    req.contacts.legal.email = "legal@dave.example.com"
    vasp_json = tmp_path / "vasp.json"
    vasp_json.write_text(json_format.MessageToJson(req))
    code, out, err = run(capsys, "register", "--file", str(vasp_json), *client, "--json")
    assert code == 0, err
    return code, out, err


def test_register_file_verify_contact_and_reject(capsys: pytest.CaptureFixture[str], db: str,
                                                  tmp_path: Path,
                                                  server: DirectoryServer) -> None:
    req = gds_pb2.RegisterRequest(trisa_endpoint="dave.example.com:443")
    client = ["--directory", server.endpoint, "--directory-insecure"]
    code, out, err = _register_dave(capsys, tmp_path, req, client)
    reply = json.loads(out)
    assert reply["common_name"] == "dave.example.com" and reply["status"] == "SUBMITTED"
    assert len(reply["pkcs12password"]) == 16
    token = SQLiteStore(db).tokens_for(reply["id"])[0].token
    code, _, err = run(capsys, "verify-contact", "--id", reply["id"], "--token", "x" * 48,
                       *client)
    assert code == 1 and "unknown token" in err
    code, out, _ = run(capsys, "verify-contact", "--id", reply["id"], "--token", token, *client)
    assert out.startswith("PENDING_REVIEW")
    code, out, _ = run(capsys, "review", reply["id"], "--reject", "--reason", "no license",
                       "--db", db, "--json")
    assert json.loads(out)["status"] == "REJECTED"
    # convenience flags; duplicate common name
    code, _, err = run(capsys, "register", "--common-name", "dave.example.com", "--endpoint",
                       "dave.example.com:443", "--name", "Dave 2", "--email", "x@dave.example.com",
                       *client)
    assert code == 1 and "ALREADY_EXISTS" in err
    code, _, err = run(capsys, "register", "--endpoint", "eve.example.com", "--name", "Eve",
                       "--email", "e@eve.example.com", *client)
    assert code == 1 and "INVALID_ARGUMENT" in err and "invalid TRISA endpoint" in err


@pytest.mark.slow
def test_serve_subprocess(tmp_path: Path, alice_pem: Path, capsys: pytest.CaptureFixture[str]
                          ) -> None:
    db = str(tmp_path / "served.db")
    assert run(capsys, "add", "--db", db, "--common-name", "alice.example.com", "--endpoint",
               "alice.example.com:443", "--cert", str(alice_pem))[0] == 0
    code, _, err = run(capsys, "serve", "--db", db, "--listen", "0.0.0.0:0", "--insecure")
    assert code == 1 and "loopback" in err
    proc = subprocess.Popen(
        [sys.executable, "-m", "trisa_peer", "gds", "serve", "--db", db, "--listen",
         "127.0.0.1:0", "--insecure"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "directory listening on 127.0.0.1:" in line, proc.stderr.read() if not line else line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        with DirectoryClient(f"127.0.0.1:{port}", insecure=True) as client:
            assert client.lookup(common_name="alice.example.com").endpoint == (
                "alice.example.com:443")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert log.count("open files limit") == 1, log  # raised to the hard limit, said once


# --------------------------------------------------------------------------- user reports


def test_serve_on_a_port_in_use_fails_and_leaves_no_db(
        capsys: pytest.CaptureFixture[str], server: DirectoryServer, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    code, _, err = run(capsys, "serve", "--db", str(other), "--listen", server.endpoint,
                       "--insecure")
    assert code == 1
    assert err == (f"trisa-peer: error: cannot listen on {server.endpoint}: "
                   "address already in use\n")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("other")) == []


def test_serve_with_a_key_of_another_certificate(
        capsys: pytest.CaptureFixture[str], ca: CertificateAuthority, tmp_path: Path) -> None:
    alice = ca.issue("alice.vasp.test", key_size=2048)
    bob = ca.issue("bob.vasp.test", key_size=2048)
    (tmp_path / "bob.pem").write_bytes(bob.chain_pem())
    (tmp_path / "alice.key").write_bytes(alice.key_pem())
    code, _, err = run(capsys, "serve", "--db", str(tmp_path / "new.db"), "--listen",
                       "127.0.0.1:0", "--tls-cert", str(tmp_path / "bob.pem"), "--tls-key",
                       str(tmp_path / "alice.key"))
    assert code == 1 and err.count("\n") == 1
    assert "private key does not match" in err and "cannot listen" not in err
    assert not (tmp_path / "new.db").exists()


@pytest.mark.slow
def test_serve_ca_dir_says_which_name_to_connect_as(
        trisa_peer_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    help_text = trisa_peer_cli("gds", "serve", "--help")
    assert help_text.returncode == 0
    assert "localhost:PORT" in " ".join(help_text.stdout.split())
    proc = subprocess.Popen(
        [sys.executable, "-m", "trisa_peer", "gds", "serve", "--db", str(tmp_path / "s.db"),
         "--listen", "127.0.0.1:0", "--ca-dir", str(tmp_path / "ca"), "--key-size", "2048"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        port = int(first.split("127.0.0.1:")[1].split()[0])
        second = proc.stdout.readline()
        assert f"connect as localhost:{port}" in second, (first, second)
        status = trisa_peer_cli("gds", "status", "--directory", f"localhost:{port}",
                                "--directory-ca", str(tmp_path / "ca" / "root.pem"))
        assert status.returncode == 0 and status.stdout.startswith("HEALTHY"), status.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_operator_commands_refuse_a_missing_database(
        capsys: pytest.CaptureFixture[str], db: str, alice_pem: Path, tmp_path: Path) -> None:
    typo = str(tmp_path / "typo.db")
    for argv in (["list"], ["certs", "x", "--out", str(tmp_path)], ["review", "x", "--reject"],
                 ["revoke", "x", "--reason", "keyCompromise"], ["reissue", "x"],
                 ["update-cert", "x", "--cert", str(alice_pem)], ["outbox"]):
        code, out, err = run(capsys, *argv, "--db", typo)
        assert code == 1 and out == "", argv
        assert err == f"trisa-peer: error: {typo}: no such directory database\n", argv
        assert not Path(typo).exists(), argv
    # accepted twin: add creates the database, list then reads it
    assert run(capsys, "add", "--db", db, "--common-name", "alice.example.com", "--endpoint",
               "alice.example.com:443", "--cert", str(alice_pem))[0] == 0
    code, out, _ = run(capsys, "list", "--db", db)
    assert code == 0 and "alice.example.com" in out


def test_outbox_shows_the_token_to_finish_registration(
        capsys: pytest.CaptureFixture[str], db: str, server: DirectoryServer) -> None:
    client = ["--directory", server.endpoint, "--directory-insecure"]
    code, out, err = run(capsys, "register", "--common-name", "dave.example.com", "--endpoint",
                         "dave.example.com:443", "--name", "Dave", "--email",
                         "tech@dave.example.com", *client)
    assert code == 0, err
    vasp_id = out.split(" as ")[1].split()[0]
    assert ("the verification token was sent to tech@dave.example.com; a local directory's "
            "operator can read it with `trisa-peer gds outbox") in out
    code, out, err = run(capsys, "outbox", "--db", db, "--id", vasp_id, "--json")
    assert code == 0, err
    mails = json.loads(out)
    assert [m["recipient"] for m in mails] == ["tech@dave.example.com"]
    token = mails[0]["body"].split("Token: ")[1].split()[0]
    code, out, _ = run(capsys, "outbox", "--db", db)
    assert token in out and "tech@dave.example.com" in out
    code, out, _ = run(capsys, "verify-contact", "--id", vasp_id, "--token", token, *client)
    assert code == 0 and out.startswith("PENDING_REVIEW")
    code, out, _ = run(capsys, "review", vasp_id, "--reject", "--db", db, "--json")
    assert json.loads(out)["status"] == "REJECTED"
    code, _, err = run(capsys, "outbox", "--db", db, "--id", "nope")
    assert code == 1 and "no VASP with id 'nope'" in err


def test_reissue_refuses_an_imported_record(
        capsys: pytest.CaptureFixture[str], db: str, alice_pem: Path) -> None:
    code, out, _ = run(capsys, "add", "--db", db, "--common-name", "alice.example.com",
                       "--endpoint", "alice.example.com:443", "--cert", str(alice_pem), "--json")
    added = json.loads(out)
    code, out, err = run(capsys, "reissue", added["id"], "--db", db,
                         "--sectigo-endpoint", "http://127.0.0.1:9/")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "imported records are re-certified by their own CA" in err
    assert "gds update-cert" in err
    code, out, _ = run(capsys, "list", "--db", db, "--json")
    assert json.loads(out)[0]["certificate"] == added["certificate"]


def test_add_country_validity_and_messages(
        capsys: pytest.CaptureFixture[str], db: str, alice_pem: Path, tmp_path: Path,
        ca: CertificateAuthority, alice: Identity) -> None:
    from datetime import UTC, datetime, timedelta

    base = ["add", "--db", db, "--common-name", "alice.example.com", "--endpoint",
            "alice.example.com:443"]
    key = tmp_path / "alice.key"
    key.write_bytes(alice.key_pem())
    now = datetime.now(UTC)
    old = ca.issue("alice.example.com", key_size=2048, not_before=now - timedelta(days=9),
                   not_after=now - timedelta(days=2))
    old_pem = tmp_path / "old.pem"
    old_pem.write_bytes(old.chain_pem())
    cases = [
        ([*base, "--cert", str(alice_pem), "--country", "ZZZ"],
         "country 'ZZZ' is not an ISO 3166-1 alpha-2 code"),
        ([*base, "--cert", str(key)],
         f"{key}: holds a private key (PRIVATE KEY); certificates only here"),
        ([*base, "--cert", str(old_pem)], "has expired (valid from "),
        (["add", "--db", db, "--common-name", "mallory.example.com", "--endpoint",
          "mallory.example.com:443", "--cert", str(alice_pem)],
         "(it names alice.example.com)\n"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 1 and err.count("\n") == 1, (argv, err)
        assert message in err, err
    assert not Path(db).exists()  # a failed add leaves no new database behind
    code, out, err = run(capsys, *base, "--cert", str(alice_pem), "--country", "de", "--json")
    assert code == 0, err
    assert json.loads(out)["country"] == "DE"


@pytest.mark.parametrize("argv", [
    ["lookup", "--directory-insecure"],
    ["lookup", "--directory", "127.0.0.1:9", "--directory-insecure"],
    ["review", "some-id", "--db", "x.db"],
    ["status"],
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRISA_DIRECTORY", raising=False)
    assert main(["gds", *argv]) == 2  # the shared runner returns the status
    _, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0].startswith("usage: trisa-peer gds ")
    assert lines[-1].startswith(f"trisa-peer gds {argv[0]}: error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize(("category", "shown"), [(99, "UNKNOWN(99)"),
                                                 (1, "PRIVATE_ORGANIZATION")],
                         ids=["unknown-99", "known"])
def test_register_and_list_show_an_open_business_category(
        capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path,
        server: DirectoryServer, category: int, shown: str) -> None:
    """A category this build does not know (a newer release's) is registered, stored and
    shown as UNKNOWN(99), never a traceback; the twin shows its name."""
    req = gds_pb2.RegisterRequest(trisa_endpoint="dave.example.com:443",
                                  vasp_categories=["Exchange"])
    req.business_category = category  # type: ignore[assignment]
    client = ["--directory", server.endpoint, "--directory-insecure"]
    code, out, err = _register_dave(capsys, tmp_path, req, client)
    code, out, err = run(capsys, "list", "--db", db, "--json")
    assert code == 0, err
    [doc] = json.loads(out)
    assert doc["business_category"] == shown and doc["vasp_categories"] == ["Exchange"]
    code, out, err = run(capsys, "list", "--db", db)
    assert code == 0, err
    assert f"  categories: {shown}, Exchange" in out.splitlines()


def test_register_file_with_invalid_ivms101_is_refused_with_fields_named(
        capsys: pytest.CaptureFixture[str], db: str, server: DirectoryServer) -> None:
    """Upstream's alice-trixo.json as is: one line naming the fields, exit 1, nothing
    stored."""
    from test_ivms101 import TRIXO

    client = ["--directory", server.endpoint, "--directory-insecure"]
    code, out, err = run(capsys, "register", "--file", str(TRIXO), *client)
    assert code == 1 and out == ""
    assert "invalid IVMS101 legal person (5 problems)" in err
    assert "entity.country_of_registration 'USA'" in err and err.count("\n") == 1
    assert vasp_count(db) == 0
