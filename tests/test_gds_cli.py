"""``trisa-peer gds``: operator and client commands (in-process ``main`` for speed, a
subprocess for ``serve``)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format

from trisa_peer._pb.ivms101 import ivms101_pb2
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import Identity, certs_to_pem
from trisa_peer.cli.main import main
from trisa_peer.directory import Directory, DirectoryClient, DirectoryServer, SQLiteStore


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("ca") / "ca", key_size=2048)


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


def test_register_file_verify_contact_and_reject(capsys: pytest.CaptureFixture[str], db: str,
                                                  tmp_path: Path,
                                                  server: DirectoryServer) -> None:
    req = gds_pb2.RegisterRequest(trisa_endpoint="dave.example.com:443")
    req.entity.name.name_identifiers.append(
        ivms101_pb2.LegalPersonNameId(legal_person_name="Dave Ltd",
                                      legal_person_name_identifier_type=1))
    req.contacts.legal.name = "Dana Legal"
    req.contacts.legal.email = "legal@dave.example.com"
    vasp_json = tmp_path / "vasp.json"
    vasp_json.write_text(json_format.MessageToJson(req))
    client = ["--directory", server.endpoint, "--directory-insecure"]
    code, out, err = run(capsys, "register", "--file", str(vasp_json), *client, "--json")
    assert code == 0, err
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


def test_serve_subprocess(tmp_path: Path, alice_pem: Path, capsys: pytest.CaptureFixture[str]
                          ) -> None:
    db = str(tmp_path / "served.db")
    assert run(capsys, "add", "--db", db, "--common-name", "alice.example.com", "--endpoint",
               "alice.example.com:443", "--cert", str(alice_pem))[0] == 0
    refused = subprocess.run(
        [sys.executable, "-m", "trisa_peer", "gds", "serve", "--db", db, "--listen",
         "0.0.0.0:0", "--insecure"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "loopback" in refused.stderr
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
