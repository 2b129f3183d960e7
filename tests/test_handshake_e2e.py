"""The eight steps over real mTLS on loopback, bound to a real directory server.

Every accepted case has a rejected twin; each rejection is checked for the step it
names, its reason, and that the handler never ran. Records are imported into the
project's own GDS (SQLite + gRPC) from the fixture PKI in certs/fixtures.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import PKI, UPSTREAM_TRISA
from pki import identity, pool

from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, api_pb2_grpc
from trisa_peer.certs import Identity, load_identity
from trisa_peer.directory.client import DirectoryClient
from trisa_peer.directory.issuance import revoke
from trisa_peer.directory.server import DirectoryServer
from trisa_peer.directory.service import Directory
from trisa_peer.directory.store import SQLiteStore
from trisa_peer.envelope import seal
from trisa_peer.errors import (
    ChainVerificationError,
    DirectoryMismatchError,
    HandshakeError,
    PeerNotRegisteredError,
)
from trisa_peer.handshake import HandshakeTrace
from trisa_peer.network.handler import Accept
from trisa_peer.network.node import TrisaNode
from trisa_peer.network.store import TransferStore
from trisa_peer.steps import HandshakeStep, Reason
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.network import free_port
from trisa_peer.testing.policies import originator_payload
from trisa_peer.transport.identity import FileMaterial, Material
from trisa_peer.transport.material import StaticMaterial
from trisa_peer.trust import TrustPool
from trisa_peer.verify import CrlChecker

# end to end over loopback mTLS: slow lane
pytestmark = pytest.mark.slow

S = HandshakeStep


class Net:
    """A directory plus helpers to run nodes with fixture identities."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = SQLiteStore(tmp / "gds.db")
        self.port = free_port()
        self.gds = DirectoryServer(self.store, listen=f"127.0.0.1:{self.port}")
        self.gds.start()
        self.resolve: dict[str, str] = {}
        self.nodes: list[TrisaNode] = []
        self.calls: list[str] = []
        self.ids: dict[str, str] = {}

    @property
    def directory(self) -> Any:
        return self.gds.directory

    def client(self, cache_ttl: float = 60.0) -> DirectoryClient:
        return DirectoryClient(self.gds.endpoint, insecure=True, timeout=2, cache_ttl=cache_ttl)

    def register(self, ident: Identity, port: int) -> str:
        cn = ident.common_name
        directory = self.directory
        leaf = ident.leaf
        if not leaf.not_valid_before_utc <= datetime.now(UTC) <= leaf.not_valid_after_utc:
            # The directory refuses invalid certificates; such a record is one registered
            # while its certificate was valid, which has expired (or starts) since.
            at = leaf.not_valid_before_utc + timedelta(seconds=1)
            directory = Directory(self.store, clock=lambda: at)
        vasp = directory.add(common_name=cn, endpoint=f"{cn}:{port}",
                             certificates=[ident.leaf, *ident.chain], name=cn)
        self.resolve[f"{cn}:{port}"] = f"127.0.0.1:{port}"
        self.ids[cn] = vasp.id
        return str(vasp.id)

    def handler(self, incoming: Any) -> Any:
        self.calls.append(incoming.peer.common_name)
        return Accept()

    def node(self, ident: Identity | Any, port: int | None = None, *, start: bool = False,
             trust: TrustPool | None = None, crl: CrlChecker | None = None,
             cache_ttl: float = 60.0) -> TrisaNode:
        material = ident if isinstance(ident, FileMaterial) else StaticMaterial(
            Material(ident, trust or pool(), crl, 1))
        node = TrisaNode(material, self.client(cache_ttl),
                         store=TransferStore(":memory:"), handler=self.handler,
                         listen=f"127.0.0.1:{port or free_port()}", resolve=self.resolve,
                         timeout=5)
        if start:
            node.start()
        self.nodes.append(node)
        return node

    def serve(self, name: str, *, register: bool = True, **kw: Any) -> TrisaNode:
        port = free_port()
        if register:
            self.register(identity(name), port)
        else:
            cn = identity(name).common_name
            self.resolve[f"{cn}:{port}"] = f"127.0.0.1:{port}"
        return self.node(identity(name), port, start=True, **kw)

    def close(self) -> None:
        for node in self.nodes:
            node.stop(grace=None)
        self.gds.stop()


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    yield n
    n.close()


def payload() -> Any:
    p = originator_payload(BOOK.wallets_of("alice.vasp.test")[1],
                           BOOK.wallets_of("bob.vasp.test")[0], sent_at=datetime.now(UTC))
    return p


def dial(node: TrisaNode, peer: str) -> HandshakeError | None:
    try:
        node.connect(peer, trace=HandshakeTrace())
    except HandshakeError as exc:
        return exc
    finally:
        node.connector.forget(peer)
    return None


# ------------------------------------------------------------- the happy path


def test_alice_and_bob_both_directions_all_eight_steps(net: Net) -> None:
    bob = net.serve("bob")
    alice = net.serve("alice")
    trace = HandshakeTrace()
    alice.connect("bob.vasp.test", trace=trace)
    with trace.step(S.EXCHANGE):
        assert alice.send("bob.vasp.test", payload()).state == "accepted"
    assert trace.ok, trace.render()
    assert bob.send("alice.vasp.test", payload()).state == "accepted"
    assert net.calls == ["alice.vasp.test", "bob.vasp.test"]


# ---------------------------------------------- server side: Bob refuses callers


@pytest.mark.parametrize(
    ("client", "register", "step", "kind"),
    [
        ("evil", False, S.VERIFY_CLIENT_CHAIN, ChainVerificationError),
        ("expired", True, S.VERIFY_CLIENT_CHAIN, ChainVerificationError),
        ("notyetvalid", True, S.VERIFY_CLIENT_CHAIN, ChainVerificationError),
        ("serverauth-only", True, S.VERIFY_CLIENT_CHAIN, ChainVerificationError),
        ("weak-rsa1024", True, S.VERIFY_CLIENT_CHAIN, ChainVerificationError),
        ("mallory", False, S.BIND_CLIENT_RECORD, PeerNotRegisteredError),
    ],
)
def test_bob_refuses_caller(net: Net, client: str, register: bool, step: HandshakeStep,
                            kind: type) -> None:
    net.serve("bob")
    if register:
        net.register(identity(client), free_port())
    caller = net.node(identity(client))
    err = dial(caller, "bob.vasp.test")
    assert isinstance(err, kind), err
    assert err.step == step, err
    assert net.calls == []
    # the twin: a registered, valid caller gets through the same server
    net.register(identity("alice"), free_port())
    assert dial(net.node(identity("alice")), "bob.vasp.test") is None


def test_no_client_certificate_is_refused(net: Net) -> None:
    net.serve("bob")
    port = int(next(v for k, v in net.resolve.items() if k.startswith("bob")).split(":")[1])
    creds = grpc.ssl_channel_credentials(root_certificates=identity("bob").leaf.public_bytes(
        __import__("cryptography.hazmat.primitives.serialization",
                   fromlist=["Encoding"]).Encoding.PEM))
    channel = grpc.secure_channel(f"127.0.0.1:{port}", creds,
                                  options=[("grpc.ssl_target_name_override", "bob.vasp.test")])
    with pytest.raises(grpc.RpcError) as err:
        api_pb2_grpc.TRISAHealthStub(channel).Status(api_pb2.HealthCheck(), timeout=5)
    channel.close()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert net.calls == []


class BrokenDirectory(DirectoryClient):
    """A directory client with a bug: lookups raise something no one expects."""

    broken = True

    def lookup(self, **kw: Any) -> Any:  # type: ignore[override]
        if self.broken:
            raise RuntimeError("internal detail the caller must not see")
        return super().lookup(**kw)


def test_unexpected_failure_of_the_check_fails_closed(net: Net) -> None:
    port = free_port()
    net.register(identity("bob"), port)
    directory = BrokenDirectory(net.gds.endpoint, insecure=True, timeout=2)
    bob = TrisaNode(StaticMaterial(Material(identity("bob"), pool(), None, 1)), directory,
                    store=TransferStore(":memory:"), handler=net.handler,
                    listen=f"127.0.0.1:{port}", resolve=net.resolve, timeout=5)
    net.nodes.append(bob)
    bob.start()
    net.register(identity("alice"), free_port())
    alice = net.node(identity("alice"))
    err = dial(alice, "bob.vasp.test")
    assert isinstance(err, ChainVerificationError) and err.step == S.BIND_CLIENT_RECORD
    assert err.reason == Reason.REFUSED_BY_PEER and "peer verification failed" in str(err)
    assert "internal detail" not in str(err)
    assert net.calls == []
    directory.broken = False  # the twin: the same server, its check working
    assert dial(alice, "bob.vasp.test") is None


def test_registered_but_not_verified(net: Net) -> None:
    from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2

    net.serve("bob")
    request = gds_pb2.RegisterRequest(common_name="charlie.vasp.test",
                                      trisa_endpoint="charlie.vasp.test:443")
    request.entity.name.name_identifiers.add(legal_person_name="Charlie",
                                             legal_person_name_identifier_type=1)
    request.contacts.technical.name = "Charlie Ops"
    request.contacts.technical.email = "ops@charlie.vasp.test"
    net.directory.register(request)
    err = dial(net.node(identity("charlie")), "bob.vasp.test")
    assert isinstance(err, PeerNotRegisteredError) and err.step == S.BIND_CLIENT_RECORD
    assert "SUBMITTED" in str(err)
    assert net.calls == []


def test_revoked_in_directory(net: Net) -> None:
    net.serve("bob")
    vasp_id = net.register(identity("alice"), free_port())
    alice = net.node(identity("alice"))
    assert dial(alice, "bob.vasp.test") is None
    revoke(net.directory, vasp_id, "key compromise")
    fresh_bob_side = net.serve("charlie")  # a server that has not cached Alice yet
    err = dial(alice, "charlie.vasp.test")
    assert isinstance(err, HandshakeError) and err.step == S.BIND_CLIENT_RECORD
    assert "revoked" in str(err)
    assert fresh_bob_side is not None and net.calls == []


def test_on_the_crl(net: Net) -> None:
    crl = CrlChecker.load([PKI / "crl.pem"], pool())
    net.serve("bob", crl=crl)
    net.register(identity("revoked"), free_port())
    err = dial(net.node(identity("revoked")), "bob.vasp.test")
    assert isinstance(err, HandshakeError) and err.step == S.VERIFY_CLIENT_CHAIN
    assert "CRL" in str(err)
    net.register(identity("alice"), free_port())
    assert dial(net.node(identity("alice")), "bob.vasp.test") is None


def test_caller_certificate_differs_from_record(net: Net) -> None:
    # bob-reissued: a valid certificate for bob.vasp.test from the right CA, not on record.
    net.serve("alice")
    net.register(identity("bob"), free_port())
    err = dial(net.node(identity("bob-reissued")), "alice.vasp.test")
    assert isinstance(err, HandshakeError) and err.step == S.BIND_CLIENT_RECORD
    assert "not the one registered" in str(err)
    assert dial(net.node(identity("bob")), "alice.vasp.test") is None


def test_caller_rotated_accepted_after_requery(net: Net) -> None:
    alice = net.serve("alice")
    vasp_id = net.register(identity("bob"), free_port())
    assert dial(net.node(identity("bob")), "alice.vasp.test") is None  # Alice caches Bob
    net.directory.update_certificate(vasp_id, [identity("bob-reissued").leaf])
    assert dial(net.node(identity("bob-reissued")), "alice.vasp.test") is None
    assert alice.server.authenticator.cached_decisions() >= 2


# ---------------------------------------------- client side: Alice refuses servers


def test_server_clientauth_only_refused_at_step_6(net: Net) -> None:
    net.serve("clientauth-only")
    err = dial(net.node(identity("alice")), "clientauth.vasp.test")
    assert isinstance(err, ChainVerificationError) and err.step == S.VERIFY_SERVER_CHAIN
    assert err.reason == "eku"


def test_server_san_does_not_cover_endpoint_host(net: Net) -> None:
    net.serve("san-mismatch")
    err = dial(net.node(identity("alice")), "sanmismatch.vasp.test")
    assert isinstance(err, ChainVerificationError) and err.step == S.VERIFY_SERVER_CHAIN
    assert err.reason == "san-mismatch"


def test_server_expired_refused_at_step_6(net: Net) -> None:
    net.serve("expired")
    err = dial(net.node(identity("alice")), "expired.vasp.test")
    assert isinstance(err, ChainVerificationError) and err.step == S.VERIFY_SERVER_CHAIN


def test_server_revoked_in_directory_refused_at_step_7(net: Net) -> None:
    net.serve("bob")
    revoke(net.directory, net.directory.lookup(common_name="bob.vasp.test").id, "superseded")
    err = dial(net.node(identity("alice")), "bob.vasp.test")
    assert isinstance(err, HandshakeError) and err.step == S.BIND_SERVER_RECORD


def test_impostor_at_bobs_address_refused_at_step_7(net: Net) -> None:
    port = free_port()
    net.register(identity("bob"), port)
    net.node(identity("bob-reissued"), port, start=True)  # valid cert, same CN, same CA
    err = dial(net.node(identity("alice")), "bob.vasp.test")
    assert isinstance(err, DirectoryMismatchError) and err.step == S.BIND_SERVER_RECORD
    assert net.calls == []


def test_server_rotated_client_requeries_and_repins(net: Net) -> None:
    port = free_port()
    vasp_id = net.register(identity("bob"), port)
    alice = net.node(identity("alice"))
    net.register(identity("alice"), free_port())
    first = net.node(identity("bob"), port, start=True)
    assert dial(alice, "bob.vasp.test") is None  # Alice's directory cache now holds Bob
    first.stop(grace=None)
    net.directory.update_certificate(vasp_id, [identity("bob-reissued").leaf])
    net.node(identity("bob-reissued"), port, start=True)
    assert dial(alice, "bob.vasp.test") is None  # pinned dial failed, re-queried, re-pinned


# ------------------------------------------------------------ fail closed


def test_directory_down_cached_peer_accepted_unknown_refused_then_recovers(net: Net) -> None:
    net.serve("bob")
    net.register(identity("alice"), free_port())
    net.register(identity("charlie"), free_port())
    alice = net.node(identity("alice"))
    charlie = net.node(identity("charlie"))
    assert dial(alice, "bob.vasp.test") is None  # Bob caches Alice; Alice caches Bob
    charlie_client = charlie.directory
    charlie_client.lookup(common_name="bob.vasp.test")  # Charlie knows where Bob is
    net.gds.stop()
    assert dial(alice, "bob.vasp.test") is None  # known peer within the TTL
    err = dial(charlie, "bob.vasp.test")
    assert isinstance(err, HandshakeError) and err.step == S.BIND_CLIENT_RECORD
    assert "directory unavailable" in str(err) and err.reason == "peer-directory-unavailable"
    net.gds = DirectoryServer(net.store, listen=f"127.0.0.1:{net.port}")
    net.gds.start()
    deadline = time.monotonic() + 10  # recovers by itself, within the bounded backoff
    while (err := dial(charlie, "bob.vasp.test")) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert err is None


# ------------------------------------------------- other CAs: upstream, openssl


def test_upstream_go_fixtures_happy_path(net: Net) -> None:
    base = UPSTREAM_TRISA / "pkg/trisa/peers/testdata"
    server = load_identity(base / "server.pem")
    client = load_identity(base / "client.pem")
    trust = TrustPool.from_certificates(server.chain)
    port = free_port()
    net.register(server, port)
    net.register(client, free_port())
    net.node(server, port, start=True, trust=trust)
    caller = net.node(client, trust=trust)
    assert dial(caller, "server.trisa.dev") is None
    assert caller.send("server.trisa.dev", payload()).state == "accepted"
    # twin: our test PKI's Alice is not trusted by that network
    err = dial(net.node(identity("alice"), trust=trust), "server.trisa.dev")
    assert isinstance(err, HandshakeError)


def _openssl_pki(tmp: Path, name: str) -> tuple[Path, dict[str, Identity]]:
    """A root, an intermediate and two leaves made with the openssl command line."""
    d = tmp / name
    d.mkdir()

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    (d / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
        "-subj", f"/CN={name} Root", "-keyout", "root.key", "-out", "root.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name} Issuing",
        "-keyout", "int.key", "-out", "int.csr")
    run("x509", "-req", "-in", "int.csr", "-CA", "root.pem", "-CAkey", "root.key",
        "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", "ca.ext", "-out", "int.pem")
    leaves = {}
    for cn in ("alice.vasp.test", "bob.vasp.test"):
        (d / f"{cn}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\nsubjectKeyIdentifier=hash\n"
            f"authorityKeyIdentifier=keyid\nsubjectAltName=DNS:{cn}\n")
        run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
            "-keyout", f"{cn}.key", "-out", f"{cn}.csr")
        run("x509", "-req", "-in", f"{cn}.csr", "-CA", "int.pem", "-CAkey", "int.key",
            "-CAcreateserial", "-days", "365", "-sha256", "-extfile", f"{cn}.ext",
            "-out", f"{cn}.crt")
        (d / f"{cn}.pem").write_bytes((d / f"{cn}.crt").read_bytes() + (d / "int.pem").read_bytes())
        leaves[cn] = load_identity(d / f"{cn}.pem", key_path=d / f"{cn}.key")
    (d / "trust.pem").write_bytes((d / "root.pem").read_bytes() + (d / "int.pem").read_bytes())
    return d / "trust.pem", leaves


def test_pki_made_with_openssl_command_line(net: Net, tmp_path: Path) -> None:
    # openssl is part of every machine this suite runs on (other tests use it too): a
    # missing one fails here rather than silently dropping an interop check
    assert shutil.which("openssl"), "the openssl command is required by this suite"
    trust_file, leaves = _openssl_pki(tmp_path, "Other Network")
    trust = TrustPool.load(trust_file)
    port = free_port()
    net.register(leaves["bob.vasp.test"], port)
    net.register(leaves["alice.vasp.test"], free_port())
    net.node(leaves["bob.vasp.test"], port, start=True, trust=trust)
    alice = net.node(leaves["alice.vasp.test"], trust=trust)
    assert alice.send("bob.vasp.test", payload()).state == "accepted"
    # twin: a leaf from a second openssl-made root is refused by Bob
    _, other = _openssl_pki(tmp_path, "Foreign Network")
    err = dial(net.node(other["alice.vasp.test"], trust=trust), "bob.vasp.test")
    assert isinstance(err, HandshakeError) and err.step == S.VERIFY_CLIENT_CHAIN


# ------------------------------------------------------ rotation on disk


def test_rotation_on_disk_without_restart(net: Net, tmp_path: Path) -> None:
    cert, key = tmp_path / "bob.pem", tmp_path / "bob.key"
    shutil.copy(PKI / "bob.pem", cert)
    shutil.copy(PKI / "bob.key", key)
    material = FileMaterial(cert, key, [PKI / "trust.pem"])
    port = free_port()
    vasp_id = net.register(identity("bob"), port)
    net.register(identity("alice"), free_port())
    net.register(identity("charlie"), free_port())
    net.node(material, port, start=True)
    alice = net.node(identity("alice"))
    channel = alice.connect("bob.vasp.test")
    # a stream in flight across the rotation
    outbox: queue.Queue[Any] = queue.Queue()
    replies = channel.network.TransferStream(iter(outbox.get, None), timeout=30)
    bob_key = identity("bob").leaf.public_key()
    outbox.put(seal(payload(), bob_key))
    assert next(replies).error.code == 0

    # rotate: new cert and key written to disk (atomically), directory updated
    for src, dst in (("bob-reissued.pem", cert), ("bob-reissued.key", key)):
        tmp = dst.with_suffix(".tmp")
        shutil.copy(PKI / src, tmp)
        os.replace(tmp, dst)
    net.directory.update_certificate(vasp_id, [identity("bob-reissued").leaf])

    charlie = net.node(identity("charlie"), cache_ttl=0)
    trace = HandshakeTrace()
    peer = charlie.connect("bob.vasp.test", trace=trace)
    assert peer.plan.verified.fingerprint == identity("bob-reissued").fingerprint
    # the call in flight still works, with the key it was set up with
    outbox.put(seal(payload(), bob_key))
    assert next(replies).error.code == 0
    outbox.put(None)
    assert material.current().generation == 2


# ------------------------------------------------------ concurrency, modes


def test_concurrent_first_connections_share_one_channel(net: Net) -> None:
    import threading

    net.serve("bob")
    net.register(identity("alice"), free_port())
    alice = net.node(identity("alice"))
    results: list[Any] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            channel = alice.connect("bob.vasp.test")
            results.append((channel, alice.send("bob.vasp.test", payload()).state))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {state for _, state in results} == {"accepted"}
    assert len({id(channel) for channel, _ in results}) == 1


def test_reference_mode_shows_what_verification_adds(net: Net) -> None:
    # The same impostor (a valid cert for bob.vasp.test, not the one on record) is
    # refused at step 4 by a verifying server and served by one in reference mode.
    net.register(identity("bob"), free_port())
    verified = net.serve("alice")
    err = dial(net.node(identity("bob-reissued")), "alice.vasp.test")
    assert isinstance(err, HandshakeError) and err.step == S.BIND_CLIENT_RECORD
    verified.stop(grace=None)
    port = int(next(v for k, v in net.resolve.items() if k.startswith("alice")).split(":")[1])
    reference = TrisaNode(StaticMaterial(Material(identity("alice"), pool(), None, 1)),
                          net.client(), store=TransferStore(":memory:"), handler=net.handler,
                          listen=f"127.0.0.1:{port}", resolve=net.resolve, verify_peers=False)
    reference.start()
    net.nodes.append(reference)
    impostor = net.node(identity("bob-reissued"))
    assert impostor.send("alice.vasp.test", payload()).state == "accepted"
    assert net.calls == ["bob.vasp.test"]


def test_check_reports_steps_3_and_4_only_as_the_peer_claims_them(net: Net) -> None:
    """Steps 3-4 are the server's decisions: a trisa-peer server states what it bound
    the caller to (shown as its claim); a server that binds nothing (reference mode, or
    any upstream Go node) gets only "not refused", never "passed"."""
    net.register(identity("bob"), free_port())
    verified = net.serve("alice")
    bob_id = net.client().lookup(common_name="bob.vasp.test").id
    trace = HandshakeTrace()
    net.node(identity("bob")).connect("alice.vasp.test", trace=trace)
    step4 = next(r for r in trace.records if r.step == S.BIND_CLIENT_RECORD)
    assert step4.detail == (
        f"claimed by the peer: our certificate bound to directory record {bob_id}")
    verified.stop(grace=None)
    port = int(next(v for k, v in net.resolve.items() if k.startswith("alice")).split(":")[1])
    reference = TrisaNode(StaticMaterial(Material(identity("alice"), pool(), None, 1)),
                          net.client(), store=TransferStore(":memory:"), handler=net.handler,
                          listen=f"127.0.0.1:{port}", resolve=net.resolve, verify_peers=False)
    reference.start()
    net.nodes.append(reference)
    trace = HandshakeTrace()
    net.node(identity("bob")).connect("alice.vasp.test", trace=trace)
    by_step = {r.step: r.detail for r in trace.records}
    assert by_step[S.BIND_CLIENT_RECORD] == (
        "not refused (the server's binding cannot be observed)")
    assert by_step[S.VERIFY_CLIENT_CHAIN].startswith("not refused")


def test_store_durability_modes(tmp_path: Path) -> None:
    for durable, mode in ((True, 2), (False, 1)):
        store = TransferStore(tmp_path / f"d{durable}.db", durable=durable)
        assert store.db._conn().execute("PRAGMA synchronous").fetchone()[0] == mode  # type: ignore[attr-defined]
        seq = store.add(envelope_id="e", peer="p", direction="incoming", kind="request",
                        state="received", envelope=b"x")
        assert store.get(seq) is not None


def test_refusal_applies_to_every_method_including_streams(net: Net) -> None:
    net.serve("bob")
    mallory = net.node(identity("mallory"))
    plan = mallory.resolver.plan("bob.vasp.test")
    channel = mallory.connector._channel(plan)
    network = api_pb2_grpc.TRISANetworkStub(channel)
    envelope = seal(payload(), identity("bob").leaf.public_key())
    calls = {
        "Transfer": lambda: network.Transfer(envelope, timeout=5),
        "TransferStream": lambda: list(network.TransferStream(iter([envelope]), timeout=5)),
        "KeyExchange": lambda: network.KeyExchange(api_pb2.SigningKey(), timeout=5),
        "ConfirmAddress": lambda: network.ConfirmAddress(api_pb2.Address(), timeout=5),
        "Status": lambda: api_pb2_grpc.TRISAHealthStub(channel).Status(
            api_pb2.HealthCheck(), timeout=5),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
        assert (err.value.details() or "").startswith("step 4 "), name
    channel.close()
    assert net.calls == []


# ------------------------------------------------ review fixes: revalidation, rotation


def test_cached_client_channel_revalidated_and_revocation_applies(net: Net) -> None:
    net.serve("bob")
    net.register(identity("alice"), free_port())
    alice = net.node(identity("alice"), cache_ttl=0)
    alice.connector.channel_ttl = 0  # revalidate on every connect
    assert alice.send("bob.vasp.test", payload()).state == "accepted"  # twin: still fine
    revoke(net.directory, net.directory.lookup(common_name="bob.vasp.test").id,
           "key compromise")
    with pytest.raises(HandshakeError) as err:
        alice.send("bob.vasp.test", payload())
    assert err.value.step == S.BIND_SERVER_RECORD and "revoked" in str(err.value)


def test_cached_channel_repins_after_server_rotation(net: Net) -> None:
    port = free_port()
    vasp_id = net.register(identity("bob"), port)
    net.register(identity("alice"), free_port())
    old = net.node(identity("bob"), port, start=True)
    alice = net.node(identity("alice"))  # channel_ttl default: the channel stays cached
    assert alice.send("bob.vasp.test", payload()).state == "accepted"
    old.stop(grace=None)
    net.directory.update_certificate(vasp_id, [identity("bob-reissued").leaf])
    net.node(identity("bob-reissued"), port, start=True)
    # the cached channel's TLS now fails; send re-plans, re-queries, re-pins once
    assert alice.send("bob.vasp.test", payload()).state == "accepted"


def test_file_modes_of_stores_are_private(tmp_path: Path) -> None:
    TransferStore(tmp_path / "t.db")
    SQLiteStore(tmp_path / "g.db")
    assert (tmp_path / "t.db").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "g.db").stat().st_mode & 0o777 == 0o600
