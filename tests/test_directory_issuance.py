"""Review, issuance through the Sectigo emulator, reissue and revocation.

Real sockets throughout: the directory gRPC server, the Sectigo emulator (HTTP) and the
``trisa-peer gds`` CLI (in process, ``main(argv)``) for the full flow.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import CliResult

from trisa_peer._pb.gds.models.v1 import models_pb2 as gds_models_pb2
from trisa_peer._pb.ivms101 import ivms101_pb2
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from trisa_peer._pb.trisa.gds.models.v1beta1 import models_pb2
from trisa_peer.certs import load_identity, parse_certificates
from trisa_peer.directory import (
    Directory,
    DirectoryClient,
    DirectoryServer,
    SQLStore,
    accept,
    reissue,
    revoke,
)
from trisa_peer.directory.convert import serial_hex
from trisa_peer.errors import DirectoryError, DirectoryNotFoundError
from trisa_peer.sectigo import SectigoClient
from trisa_peer.sectigo.emulator import SectigoEmulator

VS = models_pb2.VerificationState
CRS = gds_models_pb2.CertificateRequestState
USER, PASSWORD = "admin", "emulator-secret"


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def sectigo_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("sectigo")
    return base / "ca", base / "state.json"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emulator(sectigo_dirs: tuple[Path, Path], clock: Clock) -> SectigoEmulator:
    ca_dir, state = sectigo_dirs
    emu = SectigoEmulator(ca_dir=ca_dir, state_path=state, username=USER, password=PASSWORD,
                          key_size=2048, clock=clock)
    emu.set_balance(1, 10)
    emu.start()
    yield emu
    emu.stop()


def sectigo_client(emu: SectigoEmulator) -> SectigoClient:
    return SectigoClient(emu.base_url, USER, PASSWORD, cache_path=False, timeout=5, retries=1)


@pytest.fixture
def directory(db_location: str, tmp_path: Path) -> Directory:
    """A directory on a fresh database (SQLite and PostgreSQL: ``db_location``)."""
    store = SQLStore(db_location)
    yield Directory(store, directory_id="testnet.local", outbox_dir=tmp_path / "outbox")
    store.close()


@pytest.fixture
def server(directory: Directory) -> DirectoryServer:
    with DirectoryServer(directory, listen="127.0.0.1:0") as srv:
        yield srv


@pytest.fixture
def client(server: DirectoryServer) -> DirectoryClient:
    with DirectoryClient(server.endpoint, insecure=True, timeout=5.0, cache_ttl=0) as c:
        yield c


def register_request(cn: str = "charlie.example.com") -> gds_pb2.RegisterRequest:
    req = gds_pb2.RegisterRequest(trisa_endpoint=f"{cn}:443", common_name=cn)
    req.entity.name.name_identifiers.append(
        ivms101_pb2.LegalPersonNameId(legal_person_name="Charlie Holdings",
                                      legal_person_name_identifier_type=1)
    )
    req.entity.country_of_registration = "DE"
    req.contacts.administrative.name = "Carla Admin"
    req.contacts.administrative.email = "admin@charlie.example.com"
    return req


def token_from_outbox(outbox: Path) -> str:
    for eml in sorted(outbox.glob("*.eml")):
        for line in eml.read_text().splitlines():
            if line.startswith("Token: "):
                return line.removeprefix("Token: ").strip()
    raise AssertionError("no token in the outbox")


def pending(client: DirectoryClient, directory: Directory, cn: str = "charlie.example.com"
            ) -> gds_pb2.RegisterReply:
    reply = client.register(register_request(cn))
    token = next(t.token for t in directory.store.tokens_for(reply.id))
    assert client.verify_contact(reply.id, token).status == VS.PENDING_REVIEW
    return reply


@pytest.fixture
def gds_cli(trisa_peer_cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
            ) -> Callable[..., CliResult]:
    """``gds_cli(*args, env={...})``: ``trisa-peer gds ARGS`` in process, ``env`` set for
    that one command."""

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        with monkeypatch.context() as m:
            for key, value in (env or {}).items():
                m.setenv(key, value)
            return trisa_peer_cli("gds", *args)

    return run


# --------------------------------------------------------------------------- full flow


@pytest.mark.slow
def test_full_flow_register_verify_review_lookup_certs_revoke(
    gds_cli: Callable[..., CliResult], tmp_path: Path, emulator: SectigoEmulator,
    directory: Directory, client: DirectoryClient,
) -> None:
    db = str(directory.store.location)  # type: ignore[attr-defined]
    reply = client.register(register_request())
    token = token_from_outbox(tmp_path / "outbox")
    assert len(token) == 48
    assert client.verify_contact(reply.id, token).status == VS.PENDING_REVIEW

    env = {"SECTIGO_ENDPOINT": emulator.base_url, "SECTIGO_USERNAME": USER,
           "SECTIGO_PASSWORD": PASSWORD}
    done = gds_cli("review", reply.id, "--accept", "--db", db, "--directory-id",
                   "testnet.local", "--poll-interval", "0.1", "--json", env=env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "VERIFIED"
    assert doc["certificate_request"]["status"] == "COMPLETED"
    serial = doc["certificate"]["serial"]

    raw = client.lookup_reply(common_name="charlie.example.com")
    leaf = parse_certificates(raw.identity_certificate.data, source="data")[0]
    assert raw.identity_certificate.data.startswith(b"-----BEGIN CERTIFICATE-----")
    chain = parse_certificates(gzip.decompress(raw.identity_certificate.chain), source="chain")
    assert chain[0] == leaf and len(chain) == 3  # leaf, issuing CA, root
    assert serial_hex(leaf.serial_number) == serial
    assert raw.verified_on and raw.name == "Charlie Holdings" and raw.country == "DE"
    record = client.lookup(common_name="charlie.example.com")
    assert record.identity_certificate == leaf and not record.identity_revoked
    batch_name = directory.store.certreqs_for(reply.id)[-1].batch_name
    assert batch_name == f"testnet.local-certreq-{directory.store.certreqs_for(reply.id)[-1].id}"

    out = tmp_path / "out"
    out.mkdir()
    done = gds_cli("certs", reply.id, "--out", str(out), "--db", db)
    assert done.returncode == 0, done.stderr
    zip_path = out / "charlie.example.com.zip"
    identity = load_identity(zip_path, password=reply.pkcs12password)
    assert identity.leaf == leaf
    assert (zip_path.stat().st_mode & 0o777) == 0o600

    done = gds_cli("revoke", reply.id, "--reason", "keyCompromise", "--db", db, env=env)
    assert done.returncode == 0, done.stderr
    again = client.lookup(common_name="charlie.example.com", fresh=True)
    assert again.identity_revoked is True
    assert emulator.ca.is_revoked(leaf.serial_number)
    done = gds_cli("revoke", reply.id, "--reason", "keyCompromise", "--db", db, env=env)
    assert done.returncode == 1 and "already revoked" in done.stderr


# --------------------------------------------------------------------------- failures


def test_issuance_with_sectigo_down_then_retry(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient
) -> None:
    reply = pending(client, directory)
    sectigo = sectigo_client(emulator)
    emulator.stop()
    with pytest.raises(DirectoryError, match="CR_ERRORED") as info:
        accept(directory, reply.id, sectigo, poll_interval=0.05)
    assert "\n" not in str(info.value)
    vasp = directory.get(reply.id)
    assert vasp.verification_status == VS.REVIEWED  # not stuck in ISSUING_CERTIFICATE
    req = directory.store.certreqs_for(reply.id)[-1]
    assert req.status == CRS.CR_ERRORED and req.reject_reason
    with pytest.raises(DirectoryNotFoundError):
        client.lookup(common_name="charlie.example.com")
    assert client.verification_status("charlie.example.com") == "REVIEWED"

    emulator.start()
    result = accept(directory, reply.id, sectigo_client(emulator), poll_interval=0.05)
    assert result.vasp.verification_status == VS.VERIFIED
    assert client.lookup(common_name="charlie.example.com").identity_certificate == (
        result.identity.leaf)
    # the registrant's password (shown once at Register) still opens the new download
    from trisa_peer.directory.issuance import certificate_zip, open_zip

    _, data = certificate_zip(directory, reply.id)
    assert open_zip(data, reply.pkcs12password.encode()).leaf == result.identity.leaf
    states = [r.status for r in directory.store.certreqs_for(reply.id)]
    assert states == [CRS.CR_ERRORED, CRS.COMPLETED]


def test_issuance_with_zero_balance_then_retry(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient
) -> None:
    reply = pending(client, directory)
    emulator.set_balance(1, 0)
    with pytest.raises(DirectoryError, match=r"CR_REJECTED.*available balance"):
        accept(directory, reply.id, sectigo_client(emulator), poll_interval=0.05)
    req = directory.store.certreqs_for(reply.id)[-1]
    assert req.status == CRS.CR_REJECTED
    assert "available balance" in req.reject_reason
    assert directory.get(reply.id).verification_status == VS.REVIEWED
    emulator.set_balance(1, 3)
    result = accept(directory, reply.id, sectigo_client(emulator), poll_interval=0.05)
    assert result.vasp.verification_status == VS.VERIFIED


def test_poll_timeout_resumes_the_same_batch(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient, clock: Clock
) -> None:
    reply = pending(client, directory)
    emulator.issue_delay = 600
    with pytest.raises(DirectoryError, match="stays PROCESSING"):
        accept(directory, reply.id, sectigo_client(emulator), poll_interval=0.05, timeout=0.2)
    req = directory.store.certreqs_for(reply.id)[-1]
    assert req.status == CRS.PROCESSING and req.batch_id
    assert directory.get(reply.id).verification_status == VS.ISSUING_CERTIFICATE
    clock.offset += 601
    result = accept(directory, reply.id, sectigo_client(emulator), poll_interval=0.05)
    assert result.vasp.verification_status == VS.VERIFIED
    reqs = directory.store.certreqs_for(reply.id)
    assert len(reqs) == 1 and reqs[0].batch_id == req.batch_id  # no second batch


def test_accept_reject_state_rules(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient
) -> None:
    sectigo = sectigo_client(emulator)
    submitted = client.register(register_request("early.example.com"))
    with pytest.raises(DirectoryError, match="SUBMITTED, not PENDING_REVIEW"):
        accept(directory, submitted.id, sectigo)
    with pytest.raises(DirectoryNotFoundError, match="no VASP with id"):
        accept(directory, "no-such-id", sectigo)
    reply = pending(client, directory)
    directory.reject(reply.id, "incomplete documents")
    assert client.verification_status("charlie.example.com") == "REJECTED"
    with pytest.raises(DirectoryError, match="REJECTED"):
        accept(directory, reply.id, sectigo)
    with pytest.raises(DirectoryError, match="not PENDING_REVIEW"):
        directory.reject(reply.id, "again")
    assert directory.store.certreqs_for(reply.id)[-1].status == CRS.CR_REJECTED


def test_reissue_rotates_and_keeps_history(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient
) -> None:
    reply = pending(client, directory)
    sectigo = sectigo_client(emulator)
    first = accept(directory, reply.id, sectigo, poll_interval=0.05)
    with pytest.raises(DirectoryError, match="use reissue"):
        accept(directory, reply.id, sectigo)
    second = reissue(directory, reply.id, sectigo, poll_interval=0.05)
    assert second.serial != first.serial
    assert len(second.pkcs12password) == 16 and second.pkcs12password != reply.pkcs12password
    assert client.lookup(common_name="charlie.example.com").identity_certificate == (
        second.identity.leaf)
    assert directory.superseded(reply.id) == [first.serial]
    assert directory.get(reply.id).verification_status == VS.VERIFIED
    revoked = revoke(directory, reply.id, "superseded", sectigo=sectigo)
    assert revoked.identity_certificate.revoked
    assert emulator.ca.is_revoked(second.identity.leaf.serial_number)


# --------------------------------------------------------------------------- user reports


def test_reissue_refuses_an_imported_record(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient, tmp_path: Path
) -> None:
    from trisa_peer.ca import CertificateAuthority

    own_ca = CertificateAuthority.init(tmp_path / "own-ca", key_size=2048)
    ident = own_ca.issue("imported.example.com", key_size=2048)
    vasp = directory.add(common_name="imported.example.com",
                         endpoint="imported.example.com:443",
                         certificates=[ident.leaf, *ident.chain])
    with pytest.raises(DirectoryError, match="imported records are re-certified by their own "
                       "CA and updated with the new certificate"):
        reissue(directory, vasp.id, sectigo_client(emulator), poll_interval=0.05)
    assert client.lookup(vasp_id=vasp.id).identity_certificate == ident.leaf
    assert directory.store.certreqs_for(vasp.id) == []
    assert directory.superseded(vasp.id) == []


def test_failed_issuance_is_reported_once_not_logged_at_error(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reply = pending(client, directory)
    wrong = SectigoClient(emulator.base_url, USER, "wrong-password", cache_path=False,
                          timeout=5, retries=1)
    with caplog.at_level("INFO"):
        with pytest.raises(DirectoryError, match="certificate issuance for VASP"):
            accept(directory, reply.id, wrong, poll_interval=0.05)
    assert [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")] == []
    assert any("CR_ERRORED" in r.getMessage() or "CR_REJECTED" in r.getMessage()
               for r in caplog.records if r.name == "trisa_peer.directory.issuance")


def test_cli_review_with_wrong_sectigo_credentials_prints_one_line(
    gds_cli: Callable[..., CliResult], emulator: SectigoEmulator, directory: Directory,
    client: DirectoryClient,
) -> None:
    reply = pending(client, directory)
    db = str(directory.store.location)  # type: ignore[attr-defined]
    result = gds_cli("review", reply.id, "--accept", "--db", db, "--sectigo-endpoint",
                     emulator.base_url, "--poll-interval", "0.05",
                     env={"SECTIGO_USERNAME": USER, "SECTIGO_PASSWORD": "wrong-password"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("trisa-peer: error: certificate issuance for VASP")
