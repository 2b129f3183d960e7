"""Nothing a peer sends is parsed before the peer is verified (issue 11, section 1).

Real servers on loopback, real mTLS with the fixture PKI: Bob's node knows Alice
(registered) and not Mallory (right CA, never registered: step 4). Requests are sent as
raw bytes, so a body that is not the method's message reaches the server as it would
from a hostile peer. Each refusal has its accepted twin.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from pki import MemoryDirectory, identity, pool, record_for

from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, api_pb2_grpc, errors_pb2
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from trisa_peer.authenticate import PeerAuthenticator
from trisa_peer.directory.server import MAX_REQUEST_BYTES as GDS_MAX
from trisa_peer.directory.server import DirectoryServer
from trisa_peer.directory.store import SQLiteStore
from trisa_peer.envelope import open_envelope, seal
from trisa_peer.errors import PeerNotRegisteredError
from trisa_peer.logtext import RefusalLimiter
from trisa_peer.network.handler import Accept
from trisa_peer.network.node import TrisaNode
from trisa_peer.network.service import MAX_ENVELOPE_PAYLOAD
from trisa_peer.network.store import TransferStore
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.policies import originator_payload
from trisa_peer.transport.identity import Material
from trisa_peer.transport.material import StaticMaterial
from trisa_peer.transport.server import ENVELOPE_HEADROOM, MAX_REQUEST_BYTES
from trisa_peer.transport.server import MAX_ENVELOPE_PAYLOAD as TRANSPORT_MAX_PAYLOAD
from trisa_peer.verify import ChainVerifier

Code = errors_pb2.Error
# Field 1 (the envelope id) claims 16 bytes and 3 follow: no protobuf message parses it.
GARBAGE = b"\x0a\x10abc"
NETWORK = "/trisa.api.v1beta1.TRISANetwork/"
HEALTH = "/trisa.api.v1beta1.TRISAHealth/Status"


def _node(**kw: Any) -> TrisaNode:
    directory = MemoryDirectory(record_for("bob"), record_for("alice"))
    node = TrisaNode(StaticMaterial(Material(identity("bob"), pool(), None, 1)), directory,
                     store=TransferStore(":memory:"), handler=lambda incoming: Accept(),
                     max_workers=4, **kw)
    node.start()
    return node


@pytest.fixture(scope="module")
def bob() -> Iterator[TrisaNode]:
    node = _node()
    yield node
    node.close()


def channel(name: str, port: int) -> grpc.Channel:
    ident = identity(name)
    creds = grpc.ssl_channel_credentials(root_certificates=pool().pem(),
                                         private_key=ident.key_pem(),
                                         certificate_chain=ident.chain_pem())
    return grpc.secure_channel(f"127.0.0.1:{port}", creds,
                               options=[("grpc.ssl_target_name_override", "bob.vasp.test")])


def unary(ch: grpc.Channel, method: str, body: bytes) -> bytes:
    call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
    return bytes(call(body, timeout=10))


def stream(ch: grpc.Channel, method: str, bodies: list[bytes]) -> list[bytes]:
    call = ch.stream_stream(method, request_serializer=None, response_deserializer=None)
    return [bytes(b) for b in call(iter(bodies), timeout=10)]


def rpc_error(fn: Any, *args: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args)
    return err.value


def envelope() -> api_pb2.SecureEnvelope:
    payload = originator_payload(BOOK.wallets_of("alice.vasp.test")[1],
                                 BOOK.wallets_of("bob.vasp.test")[0], sent_at=datetime.now(UTC))
    return seal(payload, identity("bob").leaf.public_key())


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert not any("deserializ" in r.getMessage().lower() for r in caplog.records)


# ----------------------------------------------------------- unverified peer: step 4

CALLS = [("Transfer", "unary"), ("TransferStream", "stream"), ("KeyExchange", "unary"),
         ("ConfirmAddress", "unary"), ("Status", "health")]


@pytest.mark.parametrize(("method", "kind"), CALLS)
def test_undecodable_body_from_unregistered_peer_gets_its_step_4_refusal(
    bob: TrisaNode, method: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ch = channel("mallory", bob.port)
    try:
        if kind == "stream":
            err = rpc_error(stream, ch, NETWORK + method, [GARBAGE, GARBAGE])
        else:
            err = rpc_error(unary, ch, HEALTH if kind == "health" else NETWORK + method, GARBAGE)
    finally:
        ch.close()
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
    assert (err.details() or "").startswith("step 4 ("), err.details()
    no_traceback(caplog)


def test_twin_undecodable_body_from_registered_peer_gets_a_trisa_error(
    bob: TrisaNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ch = channel("alice", bob.port)
    try:
        reply = api_pb2.SecureEnvelope.FromString(unary(ch, NETWORK + "Transfer", GARBAGE))
        assert reply.error.code == Code.BAD_REQUEST and not reply.error.retry
        assert "not a SecureEnvelope" in reply.error.message
        for method in ("KeyExchange", "ConfirmAddress"):
            err = rpc_error(unary, ch, NETWORK + method, GARBAGE)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert "request is not a valid" in (err.details() or "")
        err = rpc_error(unary, ch, HEALTH, GARBAGE)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        # the well-formed twins of the same calls
        state = api_pb2.ServiceState.FromString(
            unary(ch, HEALTH, api_pb2.HealthCheck().SerializeToString()))
        assert state.status == api_pb2.ServiceState.HEALTHY
    finally:
        ch.close()
    assert bob.store.count() == 0  # nothing stored for an undecodable request
    no_traceback(caplog)


def test_stream_answers_each_message_and_keeps_going(bob: TrisaNode) -> None:
    good = envelope()
    ch = channel("alice", bob.port)
    try:
        replies = stream(ch, NETWORK + "TransferStream",
                         [GARBAGE, good.SerializeToString(), GARBAGE])
    finally:
        ch.close()
    envelopes = [api_pb2.SecureEnvelope.FromString(r) for r in replies]
    assert [e.error.code for e in envelopes] == [Code.BAD_REQUEST, 0, Code.BAD_REQUEST]
    assert envelopes[1].id == good.id
    assert open_envelope(envelopes[1], identity("alice").key).received_at


def test_valid_envelope_still_works_on_transfer_and_transfer_stream(bob: TrisaNode) -> None:
    ch = channel("alice", bob.port)
    try:
        stub = api_pb2_grpc.TRISANetworkStub(ch)
        one = envelope()
        reply = stub.Transfer(one, timeout=10)
        assert reply.id == one.id and not reply.error.code and reply.sealed
        many = [envelope() for _ in range(3)]
        replies = list(stub.TransferStream(iter(many), timeout=10))
        assert [r.id for r in replies] == [e.id for e in many]
        assert not any(r.error.code for r in replies)
    finally:
        ch.close()


# ------------------------------------------------------------------------ size caps


def _sized(target: int) -> bytes:
    """A SecureEnvelope of exactly ``target`` bytes on the wire (payload of zeros)."""
    env = api_pb2.SecureEnvelope(id=str(uuid.uuid4()), payload=b"")
    n = target
    while True:
        env.payload = b"\x00" * n
        size = env.ByteSize()
        if size == target:
            return env.SerializeToString()
        n += target - size


def test_receive_limit_is_the_envelope_limit_plus_headroom() -> None:
    assert TRANSPORT_MAX_PAYLOAD == MAX_ENVELOPE_PAYLOAD
    assert MAX_REQUEST_BYTES == MAX_ENVELOPE_PAYLOAD + ENVELOPE_HEADROOM < 4 * 1024 * 1024


def test_oversized_message_refused_with_resource_exhausted(bob: TrisaNode) -> None:
    ch = channel("alice", bob.port)
    try:
        err = rpc_error(unary, ch, NETWORK + "Transfer", _sized(MAX_REQUEST_BYTES + 1))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # the twin: exactly at the cap, gRPC delivers it and the node answers in TRISA
        # (the payload is over the 1 MiB envelope limit: BAD_REQUEST)
        reply = api_pb2.SecureEnvelope.FromString(
            unary(ch, NETWORK + "Transfer", _sized(MAX_REQUEST_BYTES)))
        assert reply.error.code == Code.BAD_REQUEST
    finally:
        ch.close()


# ------------------------------------------------------------------------ directory


@pytest.fixture(scope="module")
def gds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectoryServer]:
    path: Path = tmp_path_factory.mktemp("gds") / "gds.db"
    with DirectoryServer(SQLiteStore(path), listen="127.0.0.1:0") as server:
        yield server


def test_directory_undecodable_request_is_invalid_argument(
    gds: DirectoryServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ch = grpc.insecure_channel(gds.endpoint)
    try:
        lookup = "/trisa.gds.api.v1beta1.TRISADirectory/Lookup"
        err = rpc_error(unary, ch, lookup, GARBAGE)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "LookupRequest" in (err.details() or "")
        # twin: a well-formed Lookup of an unknown name gets the directory's answer
        err = rpc_error(unary, ch, lookup,
                        gds_pb2.LookupRequest(common_name="nobody.test").SerializeToString())
        assert err.code() == grpc.StatusCode.NOT_FOUND
        err = rpc_error(unary, ch, "/grpc.health.v1.Health/Check", GARBAGE)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        err = rpc_error(stream, ch, "/grpc.reflection.v1alpha.ServerReflection/"
                        "ServerReflectionInfo", [GARBAGE])
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        ch.close()
    no_traceback(caplog)
    lines = [r.getMessage() for r in caplog.records if "reason=undecodable" in r.getMessage()]
    assert lines and all(m.startswith("address=127.0.0.1 ") for m in lines), lines


def test_directory_oversized_request_refused(gds: DirectoryServer) -> None:
    def lookup(size: int) -> bytes:
        """A Lookup of an unknown name padded with an unknown field (not echoed back in
        the NOT_FOUND details) to exactly ``size`` bytes."""
        base = gds_pb2.LookupRequest(common_name="nobody.test").SerializeToString()
        n = size - len(base) - 1
        while n + len(_varint(n)) + len(base) + 1 != size:
            n -= 1
        body = base + b"\x7a" + _varint(n) + b"\x00" * n  # field 15, length-delimited
        assert len(body) == size and gds_pb2.LookupRequest.FromString(body).common_name
        return body

    ch = grpc.insecure_channel(gds.endpoint)
    try:
        method = "/trisa.gds.api.v1beta1.TRISADirectory/Lookup"
        err = rpc_error(unary, ch, method, lookup(GDS_MAX + 1))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        err = rpc_error(unary, ch, method, lookup(GDS_MAX))  # the twin: delivered, parsed
        assert err.code() == grpc.StatusCode.NOT_FOUND
    finally:
        ch.close()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# -------------------------------------------------------------- log aggregation


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_repeated_refusals_logged_once_then_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trisa_peer.handshake")
    clock = FakeTime()
    auth = PeerAuthenticator(ChainVerifier(pool()), MemoryDirectory(record_for("alice")),
                             monotonic=clock)
    auth.refusals = RefusalLimiter(interval=10, clock=clock)
    mallory = identity("mallory").leaf.public_bytes(__import__(
        "cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.PEM)
    for _ in range(5):  # one fresh decision, four answered from the decision cache
        with pytest.raises(PeerNotRegisteredError):
            auth.authenticate_pem(mallory)
    clock.now += 11
    with pytest.raises(PeerNotRegisteredError):
        auth.authenticate_pem(mallory)
    lines = [r.getMessage() for r in caplog.records if "outcome=reject" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "peer=mallory.vasp.test" in lines[0] and "detail=" in lines[0]
    assert "count=" not in lines[0]
    assert re.search(r"step=4 outcome=reject reason=not-registered count=5 in 11s$", lines[1])


def test_undecodable_requests_aggregated_per_peer_twin_without_aggregation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trisa_peer.transport")
    for interval, expected in ((60.0, 1), (0.0, 4)):
        caplog.clear()
        node = _node(refusal_log_interval=interval)
        ch = channel("alice", node.port)
        try:
            for _ in range(4):
                reply = api_pb2.SecureEnvelope.FromString(
                    unary(ch, NETWORK + "Transfer", GARBAGE))
                assert reply.error.code == Code.BAD_REQUEST
        finally:
            ch.close()
            node.close()
        lines = [r.getMessage() for r in caplog.records if "reason=undecodable" in r.getMessage()]
        assert len(lines) == expected, (interval, lines)
        assert lines[0].startswith("peer=alice.vasp.test fingerprint=")
