"""The directory: store, service, gRPC server and client over real loopback sockets."""

from __future__ import annotations

import gzip
import socket
import sqlite3
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import UPSTREAM_TRISA

from trisa_peer._pb.ivms101 import ivms101_pb2
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2_grpc as gds_grpc
from trisa_peer._pb.trisa.gds.models.v1beta1 import models_pb2
from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import Identity, fingerprint, parse_certificates
from trisa_peer.directory import (
    Directory,
    DirectoryClient,
    DirectoryServer,
    SQLiteStore,
    SQLStore,
    certificate_proto,
    peer_record,
)
from trisa_peer.directory.convert import serial_hex
from trisa_peer.directory.service import MAX_SEARCH_TERMS
from trisa_peer.directory.store import SCHEMA_VERSION, Changes, ContactToken
from trisa_peer.errors import (
    ConfigurationError,
    DirectoryError,
    DirectoryNotFoundError,
    StoreError,
)

VS = models_pb2.VerificationState


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def alice(ca: CertificateAuthority) -> Identity:
    return ca.issue("alice.example.com", key_size=2048)


@pytest.fixture(scope="module")
def bob(ca: CertificateAuthority) -> Identity:
    return ca.issue("bob.example.com", key_size=2048)


@pytest.fixture
def directory(db_location: str, tmp_path: Path) -> Directory:
    """A directory on a fresh database: every test using it runs on SQLite and on
    PostgreSQL (``db_location``)."""
    store = SQLStore(db_location)
    yield Directory(store, directory_id="testnet.local", outbox_dir=tmp_path / "outbox")
    store.close()


@pytest.fixture
def server(directory: Directory) -> DirectoryServer:
    srv = DirectoryServer(directory, listen="127.0.0.1:0")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def stub(server: DirectoryServer) -> gds_grpc.TRISADirectoryStub:
    channel = grpc.insecure_channel(server.endpoint)
    yield gds_grpc.TRISADirectoryStub(channel)
    channel.close()


@pytest.fixture
def client(server: DirectoryServer) -> DirectoryClient:
    with DirectoryClient(server.endpoint, insecure=True, timeout=5.0) as c:
        yield c


def register_request(
    cn: str = "charlie.example.com", *, endpoint: str | None = None, **kw: str
) -> gds_pb2.RegisterRequest:
    req = gds_pb2.RegisterRequest(
        trisa_endpoint=endpoint if endpoint is not None else f"{cn}:443",
        common_name=cn,
        website=kw.get("website", f"https://{cn}/"),
        vasp_categories=["Exchange"],
        business_category=models_pb2.PRIVATE_ORGANIZATION,
    )
    req.entity.name.name_identifiers.append(
        ivms101_pb2.LegalPersonNameId(
            legal_person_name=kw.get("name", "Charlie Holdings"),
            legal_person_name_identifier_type=1,
        )
    )
    req.entity.country_of_registration = kw.get("country", "DE")
    req.contacts.technical.name = kw.get("contact", "Carla Tech")
    req.contacts.technical.email = kw.get("email", "tech@charlie.example.com")
    return req


def rpc_error(fn, *args) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, timeout=5)
    return info.value


def counts(directory: Directory) -> dict[str, int]:
    """Rows per table of the directory's store (either backend)."""
    return directory.store.table_counts()  # type: ignore[attr-defined, no-any-return]


# --------------------------------------------------------------------------- convert


def test_convert_upstream_lookup_fixture() -> None:
    text = (UPSTREAM_TRISA / "pkg/trisa/keys/testdata/lookup.json").read_text()
    reply = json_format.Parse(text, gds_pb2.LookupReply(), ignore_unknown_fields=True)
    record = peer_record(reply)
    assert record.common_name == "api.alice.vaspbot.net"
    assert record.endpoint == "api.alice.vaspbot.net:443"
    assert record.name == "AliceCoin"
    assert record.identity_certificate is not None
    assert record.identity_certificate.serial_number == int.from_bytes(
        bytes(reply.identity_certificate.serial_number), "big"
    )
    assert record.identity_chain  # gzip PEM chain, leaf removed
    assert all(fingerprint(c) != fingerprint(record.identity_certificate)
               for c in record.identity_chain)
    assert record.identity_revoked is False


@pytest.mark.parametrize("name", ["leonardo.trisa.dev", "donatello.example.com"])
def test_convert_upstream_peer_replies_without_certificates(name: str) -> None:
    text = (UPSTREAM_TRISA / f"pkg/trisa/peers/testdata/{name}.pb.json").read_text()
    record = peer_record(json_format.Parse(text, gds_pb2.LookupReply()))
    assert record.common_name == name
    assert record.identity_certificate is None
    assert record.signing_certificate is None


def test_convert_accepts_der_data_and_pem_chain(alice: Identity) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    proto = certificate_proto(alice.leaf, alice.chain, revoked=True)
    assert gzip.decompress(proto.chain).count(b"BEGIN CERTIFICATE") == 2
    assert proto.signature_algorithm == "SHA384-RSA"
    assert proto.subject.common_name == "alice.example.com"
    proto.data = alice.leaf.public_bytes(Encoding.DER)
    proto.chain = gzip.decompress(proto.chain)
    reply = gds_pb2.LookupReply(id="x", common_name="alice.example.com", endpoint="a:1")
    reply.identity_certificate.CopyFrom(proto)
    record = peer_record(reply)
    assert record.identity_certificate == alice.leaf
    assert record.identity_chain == alice.chain
    assert record.identity_revoked is True


def test_convert_error_field_and_garbage() -> None:
    reply = gds_pb2.LookupReply(id="x")
    reply.error.code = 99
    reply.error.message = "nope"
    with pytest.raises(DirectoryError, match=r"\[99\] nope"):
        peer_record(reply)
    bad = gds_pb2.LookupReply(id="x", common_name="a.b")
    bad.identity_certificate.data = (
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(DirectoryError, match="malformed certificate"):
        peer_record(bad)


# --------------------------------------------------------------------------- store


def test_store_schema_versioned_and_reopens(tmp_path: Path, alice: Identity) -> None:
    path = tmp_path / "gds.db"
    store = SQLiteStore(path)
    assert store.schema_version() == SCHEMA_VERSION
    Directory(store).add(common_name="alice.example.com", endpoint="alice.example.com:443",
                         certificates=[alice.leaf, *alice.chain])
    store.close()
    again = SQLiteStore(path)
    assert again.get_vasp_by_common_name("ALICE.example.com.") is not None
    again.close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(path)


def test_store_optimistic_locking(directory: Directory, alice: Identity) -> None:
    vasp = directory.add(common_name="alice.example.com", endpoint="alice.example.com:443",
                         certificates=[alice.leaf])
    stale = directory.get(vasp.id)
    fresh = directory.get(vasp.id)
    fresh.website = "https://alice.example.com"
    directory.commit(Changes(vasp=fresh), what="update")
    stale.website = "https://other.example.com"
    with pytest.raises(DirectoryError, match="changed concurrently"):
        directory.commit(Changes(vasp=stale), what="update")
    assert directory.get(vasp.id).website == "https://alice.example.com"


def test_store_concurrent_writers(directory: Directory) -> None:
    """Threads writing through one store: every record lands, nothing is lost."""
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            req = register_request(f"vasp{i}.example.com")
            directory.register(req)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(directory.list_vasps()) == 8


# --------------------------------------------------------------------------- Register


def test_register_over_grpc(stub: gds_grpc.TRISADirectoryStub, directory: Directory) -> None:
    reply = stub.Register(register_request(), timeout=5)
    assert reply.status == VS.SUBMITTED
    assert reply.common_name == "charlie.example.com"
    assert reply.registered_directory == "testnet.local"
    assert len(reply.pkcs12password) == 16 and reply.pkcs12password.isalnum()
    assert not reply.HasField("error")
    tokens = directory.store.tokens_for(reply.id)
    assert len(tokens) == 1 and len(tokens[0].token) == 48 and tokens[0].token.isalnum()
    mails = directory.store.emails(vasp_id=reply.id)
    assert [m.subject for m in mails] == ["TRISA: Please verify your email address"]
    assert tokens[0].token in mails[0].body
    eml = list((directory.outbox_dir or Path()).glob("*.eml"))
    assert len(eml) == 1 and tokens[0].token in eml[0].read_text()
    # the password is in the secret store, never on the record
    vasp = directory.get(reply.id)
    assert reply.pkcs12password.encode() not in vasp.SerializeToString()


def test_register_defaults_common_name_to_endpoint_host(
    stub: gds_grpc.TRISADirectoryStub,
) -> None:
    req = register_request("")
    req.trisa_endpoint = "Dave.Example.com:4000"
    reply = stub.Register(req, timeout=5)
    assert reply.common_name == "Dave.Example.com"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: setattr(r, "trisa_endpoint", ""), "TRISA endpoint is required"),
        (lambda r: setattr(r, "trisa_endpoint", "charlie.example.com"), "invalid TRISA endpoint"),
        (lambda r: setattr(r, "trisa_endpoint", "charlie.example.com:http"),
         "invalid TRISA endpoint"),
        (lambda r: setattr(r, "common_name", "*.example.com"), "must not be a wildcard"),
        (lambda r: setattr(r, "common_name", "a" * 64 + ".example.com"), "longer than 63"),
        (lambda r: setattr(r, "common_name", "bad_label.example.com"), "not a valid DNS name"),
        (lambda r: r.ClearField("entity"), "legal person entity"),
        (lambda r: r.ClearField("contacts"), "at least one contact"),
        (lambda r: setattr(r.contacts.technical, "name", "C"), "at least 2 characters"),
        (lambda r: setattr(r.contacts.technical, "email", "not-an-email"),
         "could not parse email"),
    ],
)
def test_register_invalid(stub: gds_grpc.TRISADirectoryStub, directory: Directory,
                          mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    before = counts(directory)
    req = register_request()
    mutate(req)
    err = rpc_error(stub.Register, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.details()
    assert "\n" not in err.details()
    assert counts(directory) == before


def test_register_duplicate_common_name(stub: gds_grpc.TRISADirectoryStub,
                                        directory: Directory) -> None:
    stub.Register(register_request(), timeout=5)
    before = counts(directory)
    err = rpc_error(stub.Register, register_request("Charlie.Example.COM."))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "already registered" in err.details()
    assert counts(directory) == before


# --------------------------------------------------------------------------- VerifyContact


def test_verify_contact_flow(stub: gds_grpc.TRISADirectoryStub, directory: Directory) -> None:
    reply = stub.Register(register_request(), timeout=5)
    token = directory.store.tokens_for(reply.id)[0].token
    err = rpc_error(stub.VerifyContact, gds_pb2.VerifyContactRequest(id=reply.id, token="x" * 48))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = rpc_error(stub.VerifyContact, gds_pb2.VerifyContactRequest(id=reply.id, token=""))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    ok = stub.VerifyContact(gds_pb2.VerifyContactRequest(id=reply.id, token=token), timeout=5)
    assert ok.status == VS.PENDING_REVIEW
    again = stub.VerifyContact(gds_pb2.VerifyContactRequest(id=reply.id, token=token), timeout=5)
    assert again.status == VS.PENDING_REVIEW and "already" in again.message
    subjects = [m.subject for m in directory.store.emails(vasp_id=reply.id)]
    assert "New TRISA Global Directory Registration Request" in subjects
    states = [e.current_state for e in directory.extra_data(directory.get(reply.id)).audit_log]
    assert states == [VS.SUBMITTED, VS.EMAIL_VERIFIED, VS.PENDING_REVIEW]


# --------------------------------------------------------------------------- Lookup / Verification


def test_lookup_unverified_is_not_found_but_verification_explains(
    stub: gds_grpc.TRISADirectoryStub, client: DirectoryClient
) -> None:
    reply = stub.Register(register_request(), timeout=5)
    err = rpc_error(stub.Lookup, gds_pb2.LookupRequest(common_name="charlie.example.com"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "no verified VASP" in err.details()
    ver = stub.Verification(gds_pb2.VerificationRequest(id=reply.id), timeout=5)
    assert ver.verification_status == VS.SUBMITTED
    assert ver.first_listed
    with pytest.raises(DirectoryNotFoundError):
        client.lookup(common_name="charlie.example.com")
    assert client.verification_status("charlie.example.com") == "SUBMITTED"
    assert client.verification_status("nobody.example.com") is None
    err = rpc_error(stub.Verification, gds_pb2.VerificationRequest(id="nope"))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_add_then_lookup_over_grpc(directory: Directory, client: DirectoryClient,
                                   stub: gds_grpc.TRISADirectoryStub, alice: Identity,
                                   bob: Identity) -> None:
    vasp = directory.add(
        common_name="alice.example.com",
        endpoint="alice.example.com:443",
        certificates=[alice.chain[0], alice.leaf],  # leaf found by name, not position
        name="Alice VASP",
        country="us",
        signing_certificates=[bob.leaf],
    )
    record = client.lookup(common_name="alice.example.com")
    assert record.id == vasp.id
    assert record.identity_certificate == alice.leaf
    assert record.identity_chain == alice.chain
    assert record.signing_certificate == bob.leaf
    assert record.name == "Alice VASP" and record.country == "US"
    assert record.registered_directory == "testnet.local"
    assert record.verified_on
    assert record.host == "alice.example.com" and record.port == 443
    # raw reply: PEM data, gzip PEM chain
    raw = stub.Lookup(gds_pb2.LookupRequest(id=vasp.id, common_name="ignored"), timeout=5)
    assert raw.identity_certificate.data.startswith(b"-----BEGIN CERTIFICATE-----")
    chain = parse_certificates(gzip.decompress(raw.identity_certificate.chain), source="c")
    assert chain[0] == alice.leaf
    # by id, by legal name, by unique prefix
    assert client.lookup(vasp_id=vasp.id).common_name == "alice.example.com"
    assert client.lookup(common_name="alice vasp", fresh=True).id == vasp.id
    assert client.lookup(common_name="ali", fresh=True).id == vasp.id
    with pytest.raises(DirectoryNotFoundError):
        client.lookup(common_name="al")  # prefix shorter than 3


def test_lookup_ambiguous_prefix(directory: Directory, client: DirectoryClient,
                                 alice: Identity, ca: CertificateAuthority) -> None:
    directory.add(common_name="alice.example.com", endpoint="alice.example.com:443",
                  certificates=[alice.leaf])
    other = ca.issue("alice2.example.com", key_size=2048)
    directory.add(common_name="alice2.example.com", endpoint="alice2.example.com:443",
                  certificates=[other.leaf])
    with pytest.raises(DirectoryNotFoundError):
        client.lookup(common_name="alic")


def test_search(directory: Directory, client: DirectoryClient, stub: gds_grpc.TRISADirectoryStub,
                alice: Identity, bob: Identity) -> None:
    directory.add(common_name="alice.example.com", endpoint="alice.example.com:443",
                  certificates=[alice.leaf], name="Alice VASP", country="US",
                  website="https://www.alice.example.com/about")
    directory.add(common_name="bob.example.com", endpoint="bob.example.com:443",
                  certificates=[bob.leaf], name="Bob VASP", country="GB")
    stub.Register(register_request("alibaba.example.com", name="Alibaba Unverified"), timeout=5)
    assert [r.common_name for r in client.search(name="ali")] == ["alice.example.com"]
    assert {r.common_name for r in client.search(name=["alice", "bob vasp"])} == {
        "alice.example.com", "bob.example.com"}
    assert [r.common_name for r in client.search(website="www.alice.example.com")] == [
        "alice.example.com"]
    assert [r.common_name for r in client.search(name=["alice", "bob"], country="gb")] == [
        "bob.example.com"]
    assert client.search(name="zzz") == []
    # three countries (padded to an IN list of four): the same answer as one
    assert [r.common_name for r in client.search(name="bob", country=["gb", "fr", "de"])] == [
        "bob.example.com"]
    assert client.search(name="bob", country=["us", "fr", "de"]) == []
    err = rpc_error(stub.Search, gds_pb2.SearchRequest())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_search_terms_are_bounded(directory: Directory, stub: gds_grpc.TRISADirectoryStub,
                                  bob: Identity) -> None:
    directory.add(common_name="bob.example.com", endpoint="bob.example.com:443",
                  certificates=[bob.leaf], name="Bob VASP", country="GB")
    names = [f"n{i}" for i in range(MAX_SEARCH_TERMS - 1)] + ["bob"]
    reply = stub.Search(gds_pb2.SearchRequest(name=names), timeout=5)
    assert [r.common_name for r in reply.results] == ["bob.example.com"]
    # twin: one value more is refused, with the limit named
    err = rpc_error(stub.Search, gds_pb2.SearchRequest(name=[*names, "n99"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (f"search takes at most {MAX_SEARCH_TERMS} values per field "
                             f"({MAX_SEARCH_TERMS + 1} name values given)")


def test_status_health_and_reflection(server: DirectoryServer, client: DirectoryClient) -> None:
    state = client.status()
    assert state.status == gds_pb2.ServiceState.HEALTHY
    assert state.not_before < state.not_after
    channel = grpc.insecure_channel(server.endpoint)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "trisa.gds.api.v1beta1.TRISADirectory"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
        assert "trisa.gds.api.v1beta1.TRISADirectory" in names
    finally:
        channel.close()


# --------------------------------------------------------------------------- import (add)


def test_add_bad_input(directory: Directory, alice: Identity) -> None:
    before = counts(directory)
    ok = {"common_name": "alice.example.com", "endpoint": "alice.example.com:443",
          "certificates": [alice.leaf]}
    with pytest.raises(ConfigurationError, match="not a valid DNS name"):
        directory.add(**{**ok, "common_name": "alice_example"})
    with pytest.raises(ConfigurationError, match="wildcard"):
        directory.add(**{**ok, "common_name": "*.example.com"})
    with pytest.raises(ConfigurationError, match="invalid TRISA endpoint"):
        directory.add(**{**ok, "endpoint": "alice.example.com"})
    with pytest.raises(ConfigurationError, match="does not match common name"):
        directory.add(**{**ok, "common_name": "mallory.example.com"})
    assert counts(directory) == before
    directory.add(**ok)
    with pytest.raises(DirectoryError, match="already registered"):
        directory.add(**{**ok, "common_name": "ALICE.example.com"})


def test_update_certificate_keeps_superseded(directory: Directory, client: DirectoryClient,
                                             ca: CertificateAuthority, alice: Identity) -> None:
    vasp = directory.add(common_name="alice.example.com", endpoint="alice.example.com:443",
                         certificates=[alice.leaf, *alice.chain])
    rotated = ca.issue("alice.example.com", key_size=2048)
    directory.update_certificate(vasp.id, [rotated.leaf, *rotated.chain])
    assert client.lookup(vasp_id=vasp.id).identity_certificate == rotated.leaf
    assert directory.superseded(vasp.id) == [serial_hex(alice.leaf.serial_number)]


# --------------------------------------------------------------------------- client


def test_client_cache_ttl_and_fresh(directory: Directory, server: DirectoryServer,
                                    ca: CertificateAuthority, alice: Identity,
                                    db_location: str) -> None:
    now = [1000.0]
    vasp = directory.add(common_name="alice.example.com", endpoint="alice.example.com:443",
                         certificates=[alice.leaf])
    with DirectoryClient(server.endpoint, insecure=True, cache_ttl=60, clock=lambda: now[0]) as c:
        first = c.lookup(common_name="alice.example.com")
        # an operator rotates the certificate directly in the database (another store)
        other = SQLStore(db_location)
        rotated = ca.issue("alice.example.com", key_size=2048)
        Directory(other).update_certificate(vasp.id, [rotated.leaf])
        other.close()
        assert c.lookup(common_name="alice.example.com") is first  # cached
        assert c.lookup(vasp_id=vasp.id) is first  # cached under the id too
        fresh = c.lookup(common_name="alice.example.com", fresh=True)
        assert fresh.identity_certificate == rotated.leaf
        assert c.lookup(vasp_id=vasp.id) is fresh  # fresh refreshed the cache
        now[0] += 61
        assert c.lookup(common_name="alice.example.com") is not fresh  # expired


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_client_unreachable_is_directory_error_within_timeout() -> None:
    with DirectoryClient(f"127.0.0.1:{_closed_port()}", insecure=True, timeout=1.0) as c:
        start = time.monotonic()
        with pytest.raises(DirectoryError) as info:
            c.lookup(common_name="alice.example.com")
        assert time.monotonic() - start < 3.0
        assert not isinstance(info.value, DirectoryNotFoundError)
        assert "nothing is listening at 127.0.0.1:" in str(info.value)
        assert "(connection refused)" in str(info.value)
        assert c.verification_status("alice.example.com") is None


def test_client_deadline_on_a_silent_server() -> None:
    """A server that accepts TCP but never answers: DEADLINE_EXCEEDED → DirectoryError."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        with DirectoryClient(f"127.0.0.1:{port}", insecure=True, timeout=0.5) as c:
            start = time.monotonic()
            with pytest.raises(DirectoryError):
                c.status()
            assert time.monotonic() - start < 3.0


def test_client_tls_with_private_ca(directory: Directory, ca: CertificateAuthority,
                                    alice: Identity) -> None:
    directory.add(common_name="alice.example.com", endpoint="alice.example.com:443",
                  certificates=[alice.leaf])
    server_id = ca.issue("localhost", key_size=2048)
    srv = DirectoryServer(directory, listen="127.0.0.1:0",
                          tls=(server_id.chain_pem(), server_id.key_pem()))
    port = srv.start()
    try:
        with DirectoryClient(f"localhost:{port}", ca_pem=ca.trust_pem()) as c:
            assert c.lookup(common_name="alice.example.com").identity_certificate == alice.leaf
        with DirectoryClient(f"localhost:{port}", timeout=2.0) as c:  # system roots
            with pytest.raises(DirectoryError, match=r"is not trusted .* --directory-ca"):
                c.lookup(common_name="alice.example.com")
    finally:
        srv.stop()


def test_server_refuses_plaintext_off_loopback(directory: Directory) -> None:
    with pytest.raises(ConfigurationError, match="without TLS"):
        DirectoryServer(directory, listen="0.0.0.0:0")


def test_store_duplicate_insert_is_refused_atomically(directory: Directory,
                                                      alice: Identity) -> None:
    vasp = directory.add(common_name="alice.example.com", endpoint="alice.example.com:443",
                         certificates=[alice.leaf])
    dup = directory.get(vasp.id)
    dup.id = "another-id"
    before = counts(directory)
    token = ContactToken(
        token="t" * 48, vasp_id="another-id", email="a@b.cd", kinds=("technical",))
    assert directory.store.commit(Changes(vasp=dup, create=True, tokens=[token])) is False
    assert counts(directory) == before


def test_client_treats_reply_error_field_as_failure() -> None:
    """A directory that fills the reply ``error`` field (as Go clients expect to handle)."""
    from concurrent import futures

    class ErrorDirectory(gds_grpc.TRISADirectoryServicer):  # type: ignore[misc]
        def Lookup(self, request, context):  # type: ignore[no-untyped-def]
            reply = gds_pb2.LookupReply()
            reply.error.code = 404
            reply.error.message = "not here"
            return reply

    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    gds_grpc.add_TRISADirectoryServicer_to_server(ErrorDirectory(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        with DirectoryClient(f"127.0.0.1:{port}", insecure=True) as c:
            with pytest.raises(DirectoryError, match=r"\[404\] not here"):
                c.lookup(common_name="alice.example.com")
            with pytest.raises(DirectoryError, match="UNIMPLEMENTED"):
                c.status()
    finally:
        grpc_server.stop(None)


# --------------------------------------------------------------------------- user reports


def test_second_server_on_a_port_in_use_is_refused(tmp_path: Path) -> None:
    # accepted: one server on the port
    first_store = SQLiteStore(tmp_path / "first.db")
    second_store = SQLiteStore(tmp_path / "second.db")
    try:
        with DirectoryServer(first_store, listen="127.0.0.1:0") as first:
            # failing twin: a second directory on the same port (gRPC's default
            # SO_REUSEPORT would let it start and split the lookups)
            second = DirectoryServer(second_store, listen=f"127.0.0.1:{first.port}")
            with pytest.raises(ConfigurationError) as info:
                second.start()
            assert str(info.value) == (
                f"cannot listen on 127.0.0.1:{first.port}: address already in use")
            assert second._server is None
    finally:
        first_store.close()
        second_store.close()


def test_store_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "gds.db").close()
    SQLiteStore(tmp_path / "gds.db", create=False).close()  # existing: accepted
    with pytest.raises(StoreError, match=r"typo\.db: no such directory database"):
        SQLiteStore(tmp_path / "typo.db", create=False)
    assert not (tmp_path / "typo.db").exists()


def test_add_validates_country(directory: Directory, alice: Identity) -> None:
    ok = {"common_name": "alice.example.com", "endpoint": "alice.example.com:443",
          "certificates": [alice.leaf]}
    for bad in ("ZZZ", "U", "U1", "ÜS"):
        with pytest.raises(ConfigurationError, match="not an ISO 3166-1 alpha-2 code"):
            directory.add(**ok, country=bad)
    vasp = directory.add(**ok, country=" us ")
    assert vasp.entity.country_of_registration == "US"


def test_add_refuses_expired_and_not_yet_valid_certificates(
        directory: Directory, ca: CertificateAuthority) -> None:
    from datetime import UTC, datetime, timedelta

    from trisa_peer.errors import CertificateError

    now = datetime.now(UTC)
    expired = ca.issue("alice.example.com", key_size=2048,
                       not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
    future = ca.issue("alice.example.com", key_size=2048,
                      not_before=now + timedelta(days=1), not_after=now + timedelta(days=30))
    base = {"common_name": "alice.example.com", "endpoint": "alice.example.com:443"}
    with pytest.raises(CertificateError, match=r"has expired \(valid from .* until "
                       + expired.leaf.not_valid_after_utc.strftime("%Y-%m-%d")):
        directory.add(**base, certificates=[expired.leaf])
    with pytest.raises(CertificateError, match=r"is not yet valid \(valid from "
                       + future.leaf.not_valid_before_utc.strftime("%Y-%m-%d")):
        directory.add(**base, certificates=[future.leaf])
    assert directory.list_vasps() == []
    valid = ca.issue("alice.example.com", key_size=2048)
    vasp = directory.add(**base, certificates=[valid.leaf])
    with pytest.raises(CertificateError, match="has expired"):
        directory.update_certificate(vasp.id, [expired.leaf])


def test_add_name_mismatch_names_each_name_once(directory: Directory, alice: Identity) -> None:
    with pytest.raises(ConfigurationError) as info:
        directory.add(common_name="mallory.example.com", endpoint="mallory.example.com:443",
                      certificates=[alice.leaf])
    assert str(info.value).endswith("(it names alice.example.com)")


# --------------------------------------------------------------------------- input from others
# Enums are open (a newer release may send a value this build does not know) and a
# registered legal person must pass IVMS101 validation as upstream applies it.


def _verify(directory: Directory, vasp_id: str) -> None:
    """Move a registered record to VERIFIED (what review --accept does, minus issuance)."""
    vasp = directory.get(vasp_id)
    directory.audit(vasp, VS.VERIFIED, "verified by the test", "test")
    directory.commit(Changes(vasp=vasp), what="verify")


@pytest.mark.parametrize("category", [99, models_pb2.PRIVATE_ORGANIZATION],
                         ids=["unknown-99", "known"])
def test_register_and_search_with_a_business_category(
        stub: gds_grpc.TRISADirectoryStub, directory: Directory, category: int,
        caplog: pytest.LogCaptureFixture) -> None:
    """Before: Register and Search with 99 failed with UNKNOWN ("Enum BusinessCategory has
    no name defined") and a traceback in the log."""
    req = register_request()
    req.business_category = category  # type: ignore[assignment]
    reply = stub.Register(req, timeout=5)
    assert directory.get(reply.id).business_category == category  # stored unchanged
    _verify(directory, reply.id)
    found = stub.Search(gds_pb2.SearchRequest(business_category=[category]), timeout=5)  # type: ignore[list-item]
    assert [r.id for r in found.results] == [reply.id]
    other = 98 if category == 99 else models_pb2.BUSINESS_ENTITY
    none = stub.Search(gds_pb2.SearchRequest(business_category=[other]), timeout=5)  # type: ignore[list-item]
    assert list(none.results) == []
    assert not [r for r in caplog.records if r.exc_info]  # no traceback logged


def test_register_upstream_trixo_fixture_refused_with_fields_named(
        stub: gds_grpc.TRISADirectoryStub, directory: Directory) -> None:
    """Upstream's alice-trixo.json has IVMS101 errors (country 'USA' among them): refused
    with every field named, nothing stored; its corrected copy registers and is found by
    a search for country US."""
    from test_ivms101 import _trixo_request, corrected_trixo_entity

    before = counts(directory)
    err = rpc_error(stub.Register, _trixo_request())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.details() or ""
    assert details.startswith("invalid IVMS101 legal person (5 problems): ")
    for field in ("entity.geographic_addresses[0].address_line[1]",
                  "entity.geographic_addresses[0].country 'USA'",
                  "entity.national_identification.national_identifier_type IDCD",
                  "entity.national_identification.country_of_issue",
                  "entity.country_of_registration 'USA'"):
        assert field in details
    assert "\n" not in details
    assert counts(directory) == before

    request = _trixo_request()
    request.entity.CopyFrom(corrected_trixo_entity())
    reply = stub.Register(request, timeout=5)
    stored = directory.get(reply.id)
    assert stored.entity == corrected_trixo_entity()  # stored as sent, not normalised
    _verify(directory, reply.id)
    found = stub.Search(gds_pb2.SearchRequest(country=["US"]), timeout=5)
    assert [r.common_name for r in found.results] == ["api.alice.vaspbot.net"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: setattr(e, "country_of_registration", "us"),
         "entity.country_of_registration 'us' is not an ISO 3166-1 alpha-2 country code "
         "(write 'US')"),
        (lambda e: setattr(e.name.name_identifiers[0], "legal_person_name_identifier_type", 2),
         "entity.name needs a name identifier of type LEGL"),
        (lambda e: e.geographic_addresses.add(address_type=2, address_line=["1 Main St"],
                                              country="ZZ"),
         "entity.geographic_addresses[0].country 'ZZ'"),
    ],
    ids=["lower-case-country", "no-legl-name", "unassigned-country"],
)
def test_register_refuses_invalid_ivms101_and_never_normalises(
        stub: gds_grpc.TRISADirectoryStub, directory: Directory, mutate, field: str,
) -> None:  # type: ignore[no-untyped-def]
    """Each rule refused over gRPC with the field named; the twin (unmutated) registers."""
    req = register_request()
    mutate(req.entity)
    err = rpc_error(stub.Register, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (err.details() or "")
    assert directory.list_vasps() == []
    stub.Register(register_request(), timeout=5)  # the twin
    assert len(directory.list_vasps()) == 1


def test_add_validates_the_legal_person(directory: Directory, alice: Identity) -> None:
    """An operator import builds its legal person from flags: validated the same way."""
    ok = {"common_name": "alice.example.com", "endpoint": "alice.example.com:443",
          "certificates": [alice.leaf]}
    with pytest.raises(ConfigurationError, match="not an assigned country code"):
        directory.add(**ok, country="ZZ")
    with pytest.raises(ConfigurationError,
                       match=r"legal_person_name is longer than 100 characters"):
        directory.add(**ok, name="A" * 101)
    assert directory.list_vasps() == []
    directory.add(**ok, name="A" * 100, country="CH")


def test_enum_names_are_open() -> None:
    from trisa_peer.directory.convert import enum_name
    from trisa_peer.directory.service import state_name

    assert enum_name(models_pb2.BusinessCategory, 99) == "UNKNOWN(99)"
    assert enum_name(models_pb2.BusinessCategory, 3) == "BUSINESS_ENTITY"  # the twin
    assert (state_name(99), state_name(6)) == ("UNKNOWN(99)", "VERIFIED")
