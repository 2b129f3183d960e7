"""Section 3 of issue 11: what "the same message" is, and at-least-once with a key.

Real nodes on 127.0.0.1 (the ``trisa_network`` fixture); the only fault injected is a
store failure between the handler's return and the reply's commit.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

import grpc
import pytest
from test_exchange import _extra_node, _restore, bob_key, payload_for, stub

from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, errors_pb2
from trisa_peer.envelope import envelope_error, seal
from trisa_peer.errors import StoreError
from trisa_peer.network.handler import Accept, Incoming, Repair
from trisa_peer.network.service import idempotency_key, payload_digest
from trisa_peer.network.store import SCHEMA_VERSION, TransferStore

Code = errors_pb2.Error


class Runs:
    """A handler that records (key, attempt) of every run."""

    def __init__(self, outcome: Any = None) -> None:
        self.runs: list[tuple[str, int]] = []
        self.outcome = outcome

    def __call__(self, incoming: Incoming) -> Any:
        self.runs.append((incoming.idempotency_key, incoming.attempt))
        return self.outcome(incoming) if self.outcome else Accept()


@pytest.fixture
def counted(net: Any, db_location: str) -> Any:
    runs = Runs()
    node = _extra_node(net, db_location, "bob", runs)
    try:
        yield runs, node
    finally:
        _restore(net, node)


def test_reseal_reencoding_and_unknown_fields_are_the_same_message(net: Any, counted: Any) -> None:
    runs, node = counted
    payload = payload_for("alice.vasp.test", "bob.vasp.test")
    eid = str(uuid.uuid4())
    first = seal(payload, bob_key(net), envelope_id=eid)
    resealed = seal(payload, bob_key(net), envelope_id=eid)
    assert first.SerializeToString() != resealed.SerializeToString()
    # field 99 (unknown to SecureEnvelope), varint 1, appended to the wire bytes
    extended = api_pb2.SecureEnvelope.FromString(first.SerializeToString() + b"\x98\x06\x01")
    replies = [stub(net).Transfer(e, timeout=10) for e in (first, resealed, extended)]
    assert replies[0] == replies[1] == replies[2]
    assert len(runs.runs) == 1
    key, attempt = runs.runs[0]
    assert attempt == 1
    assert key == idempotency_key(_directory_id(net), eid, payload_digest(payload))
    kinds = [r.kind for r in node.store.exchange(eid)]
    assert kinds == ["request", "reply"]


def _directory_id(net: Any) -> str:
    return str(net.directory_client().lookup(common_name=net.alice.common_name).id)


def test_different_payload_under_a_used_id_is_refused(net: Any, counted: Any) -> None:
    runs, _node = counted
    eid = str(uuid.uuid4())
    ok = stub(net).Transfer(seal(payload_for("alice.vasp.test", "bob.vasp.test"),
                                 bob_key(net), envelope_id=eid), timeout=10)
    assert envelope_error(ok) is None
    other = payload_for("alice.vasp.test", "bob.vasp.test", sender=2)
    reply = stub(net).Transfer(seal(other, bob_key(net), envelope_id=eid), timeout=10)
    error = envelope_error(reply)
    assert error is not None and error.code == Code.BAD_REQUEST
    assert "id reused" in error.message
    assert len(runs.runs) == 1


def test_different_payload_after_a_repair_is_a_continuation(net: Any, db_location: str) -> None:
    calls: list[tuple[str, int]] = []

    def handler(incoming: Incoming) -> Any:
        calls.append((incoming.idempotency_key, incoming.attempt))
        return Repair("need more") if len(calls) == 1 else Accept()

    node = _extra_node(net, db_location, "bob", handler)
    try:
        eid = str(uuid.uuid4())
        first = stub(net).Transfer(seal(payload_for("alice.vasp.test", "bob.vasp.test"),
                                        bob_key(net), envelope_id=eid), timeout=10)
        assert envelope_error(first).retry
        other = payload_for("alice.vasp.test", "bob.vasp.test", sender=2)
        second = stub(net).Transfer(seal(other, bob_key(net), envelope_id=eid), timeout=10)
        assert envelope_error(second) is None
        assert len(calls) == 2 and calls[0][0] != calls[1][0]
    finally:
        _restore(net, node)


def test_store_failure_after_the_handler_runs_it_again_with_attempt_2(
    net: Any, counted: Any
) -> None:
    runs, node = counted
    original = node.store.add_reply
    failed: list[int] = []

    def add_reply(*args: Any, **kw: Any) -> Any:
        if not failed:
            failed.append(1)
            raise StoreError("injected: disk went away")
        return original(*args, **kw)

    node.store.add_reply = add_reply  # type: ignore[method-assign]
    payload = payload_for("alice.vasp.test", "bob.vasp.test")
    envelope = seal(payload, bob_key(net))
    with pytest.raises(grpc.RpcError) as info:
        stub(net).Transfer(envelope, timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [a for _, a in runs.runs] == [1]
    # the originator retries with a re-seal: the same message, whose unfinished claim
    # runs again with attempt 2 and the same key
    retry = seal(payload, bob_key(net), envelope_id=envelope.id)
    reply = stub(net).Transfer(retry, timeout=10)
    assert envelope_error(reply) is None
    assert [a for _, a in runs.runs] == [1, 2]
    assert runs.runs[0][0] == runs.runs[1][0]
    # a third copy (the first bytes) is answered from the store: no third run
    assert stub(net).Transfer(envelope, timeout=10) == reply
    assert len(runs.runs) == 2
    kinds = [r.kind for r in node.store.exchange(envelope.id)]
    assert kinds == ["request", "reply"]


def test_claim_attempts_and_answered_claims(db_location: str) -> None:
    store = TransferStore(db_location)
    args = dict(envelope_id="e", peer="p", request=b"r", request_digest="d", payload_digest="x")
    first = store.claim(**args)  # type: ignore[arg-type]
    assert (first.attempt, first.reply) == (1, None)
    # held (its handler is running): another thread's claim is busy, not run again
    busy = store.claim(**args)  # type: ignore[arg-type]
    assert (busy.seq, busy.busy) == (first.seq, True)
    store.release(first)  # as after a crash: unfinished, nobody holds it
    again = store.claim(**args)  # type: ignore[arg-type]
    assert (again.seq, again.attempt, again.reply, again.busy) == (first.seq, 2, None, False)
    store.add_reply(first.seq, state="accepted", envelope=b"reply", direction="outgoing")
    done = store.claim(**args)  # type: ignore[arg-type]
    assert done.reply is not None and done.reply.envelope == b"reply"
    # twin: another payload digest is another claim
    assert store.claim(**{**args, "payload_digest": "y", "request_digest": "d2"}).seq != first.seq  # type: ignore[arg-type]


_V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE envelopes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, envelope_id TEXT NOT NULL, peer TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
    kind TEXT NOT NULL CHECK (kind IN ('request', 'reply')), state TEXT NOT NULL,
    error_code INTEGER NOT NULL DEFAULT 0, digest TEXT NOT NULL,
    reply_to INTEGER REFERENCES envelopes(seq), envelope BLOB NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
INSERT INTO envelopes VALUES (1, 'e1', 'p', 'incoming', 'request', 'accepted', 0, 'd', NULL,
    x'01', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');
INSERT INTO envelopes VALUES (2, 'e1', 'p', 'outgoing', 'reply', 'accepted', 0, 'd2', 1,
    x'02', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');
"""


def test_a_version_1_store_is_migrated(tmp_path: Any) -> None:
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript(_V1_SCHEMA)
    db.close()
    store = TransferStore(path)
    assert store.db.read("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == 5
    rows = store.exchange("e1")
    assert [r.kind for r in rows] == ["request", "reply"] and rows[0].attempt == 0
    assert store.find_request("p", "e1", "d") is not None
    store.close()
    assert TransferStore(path).count() == 2  # reopening a migrated store changes nothing


# ------------------------------------------------------------------ resend


def test_resend_sends_the_same_bytes_and_is_answered_from_the_store(
    net: Any, counted: Any
) -> None:
    from trisa_peer.network.node import TransferError

    runs, node = counted
    sent = net.alice.send(net.bob.common_name, payload_for("alice.vasp.test", "bob.vasp.test"))
    assert sent.state == "accepted"
    again = net.alice.node.resend(sent.envelope_id)
    assert again.state == "accepted" and again.envelope_id == sent.envelope_id
    assert len(runs.runs) == 1
    received = [r for r in node.store.exchange(sent.envelope_id) if r.kind == "request"]
    ours = net.alice.node.store.latest_outgoing(sent.envelope_id)
    assert len(received) == 1 and received[0].envelope == ours.envelope  # the same bytes
    with pytest.raises(TransferError, match="no stored outgoing envelope"):
        net.alice.node.resend(str(uuid.uuid4()))


def test_resend_refused_when_the_peer_key_changed_since_sealing(net: Any, counted: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from trisa_peer.envelope import public_key_signature
    from trisa_peer.network.node import TransferError

    runs, _node = counted
    store = net.alice.node.store
    sent = net.alice.send(net.bob.common_name, payload_for("alice.vasp.test", "bob.vasp.test"))
    row = store.latest_outgoing(sent.envelope_id)
    # the envelope as if sealed to a key Bob had before a reissue
    env = api_pb2.SecureEnvelope.FromString(row.envelope)
    old_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    env.public_key_signature = public_key_signature(old_key)
    with store._tx() as db:
        db.execute("UPDATE envelopes SET envelope = ? WHERE seq = ?",
                   (env.SerializeToString(), row.seq))
    with pytest.raises(TransferError, match="registered key changed"):
        net.alice.node.resend(sent.envelope_id)
    assert len(runs.runs) == 1  # nothing reached Bob's handler


def test_simultaneous_reseals_of_one_message_run_the_handler_once(
    net: Any, counted: Any
) -> None:
    import threading

    runs, node = counted
    payload = payload_for("alice.vasp.test", "bob.vasp.test")
    eid = str(uuid.uuid4())
    copies = [seal(payload, bob_key(net), envelope_id=eid) for _ in range(4)]
    replies: list[Any] = []
    barrier = threading.Barrier(len(copies))

    def go(envelope: Any) -> None:
        barrier.wait()
        replies.append(stub(net).Transfer(envelope, timeout=20))

    threads = [threading.Thread(target=go, args=(c,)) for c in copies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(replies) == 4 and all(r == replies[0] for r in replies)
    assert len(runs.runs) == 1
    assert [r.kind for r in node.store.exchange(eid)] == ["request", "reply"]


# ------------------------------------------------------------------ replicas


def test_two_replicas_on_one_store_take_one_message_once(net: Any, db_location: str) -> None:
    """Two nodes with Bob's identity on one database (two replicas behind a balancer):
    the same message, and another payload under the same id, reach both at once; one
    handler run in all, and the other copy is answered from it or refused as reuse."""
    import threading
    import time

    from test_exchange import _start_when_port_free

    from trisa_peer.network.node import TrisaNode
    from trisa_peer.testing.network import free_port

    def slow(_incoming: Incoming) -> Any:
        time.sleep(0.3)  # widens the window in which both replicas hold the message
        return Accept()

    runs = Runs(slow)
    first = _extra_node(net, db_location, "bob", runs)
    sim = net.nodes["bob"]
    port = free_port()
    second = TrisaNode(sim.node.material, net.directory_client(), store=TransferStore(
        db_location), handler=runs, listen=f"127.0.0.1:{port}", resolve=net.resolve)
    _start_when_port_free(second)
    # an Alice whose route to Bob's registered endpoint leads to the second replica
    alice2 = TrisaNode(net.alice.node.material, net.directory_client(),
                       store=TransferStore(":memory:"), handler=lambda _i: Accept(),
                       listen="127.0.0.1:0",
                       resolve={**net.resolve, f"bob.vasp.test:{sim.port}": f"127.0.0.1:{port}"})
    try:
        payload = payload_for("alice.vasp.test", "bob.vasp.test")
        for other in (payload, payload_for("alice.vasp.test", "bob.vasp.test", sender=2)):
            eid = str(uuid.uuid4())
            copies = [seal(payload, bob_key(net), envelope_id=eid),
                      seal(other, bob_key(net), envelope_id=eid)]
            channels = [stub(net), alice2.connect("bob.vasp.test").network]
            replies: list[Any] = [None, None]
            start = threading.Barrier(2)

            def go(i: int, copies: Any = copies, channels: Any = channels,
                   replies: Any = replies, start: Any = start) -> None:
                start.wait()
                replies[i] = channels[i].Transfer(copies[i], timeout=30)

            threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            errors = [envelope_error(r) for r in replies]
            if other is payload:  # the same message: one run, the same answer twice
                assert replies[0] == replies[1] and errors == [None, None]
            else:  # another payload under the id: one accepted, the other refused as reuse
                assert sorted(e is None for e in errors) == [False, True]
                refused = next(e for e in errors if e is not None)
                assert "envelope id reused" in refused.message
            requests = [r for r in first.store.exchange(eid) if r.kind == "request"]
            assert len(requests) == (1 if other is payload else 2)
        assert len(runs.runs) == 2  # one per id
    finally:
        alice2.close()
        second.close()
        _restore(net, first)
