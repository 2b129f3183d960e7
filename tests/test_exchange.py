"""Step 8 over the simulated network: TRISANetwork semantics, storage, bad input.

Uses the ``trisa_network`` fixture of the project's own pytest plugin: a real CA, the
Sectigo-compatible service, a directory and the nodes, all on 127.0.0.1.
"""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from helpers import bob_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, errors_pb2
from trisa_peer.envelope import envelope_error, open_envelope, seal
from trisa_peer.network.handler import Accept, Pending, Reject
from trisa_peer.network.node import TrisaNode
from trisa_peer.network.service import MAX_ENVELOPE_PAYLOAD
from trisa_peer.network.store import TransferStore
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.policies import originator_payload

Code = errors_pb2.Error


def payload_for(sender_vasp: str, receiver_vasp: str, sender: int = 1, receiver: int = 0) -> Any:
    o = BOOK.wallets_of(sender_vasp)[sender]
    b = BOOK.wallets_of(receiver_vasp)[receiver]
    payload = originator_payload(o, b, sent_at=datetime.now(UTC))
    assert not isinstance(payload, Reject)
    return payload


def stub(net: Any) -> Any:
    return net.alice.node.connect(net.bob.common_name).network


def test_transfer_accepted_and_both_sides_stored(net: Any) -> None:
    result = net.alice.send(net.bob.common_name, payload_for("alice.vasp.test", "bob.vasp.test"))
    assert result.state == "accepted"
    assert result.payload.received_at
    ours = net.alice.node.store.exchange(result.envelope_id)
    theirs = net.bob.node.store.exchange(result.envelope_id)
    kinds = [(r.direction, r.kind) for r in ours]
    assert kinds == [("outgoing", "request"), ("incoming", "reply")]
    kinds = [(r.direction, r.kind) for r in theirs]
    assert kinds == [("incoming", "request"), ("outgoing", "reply")]
    # stored as sealed on the wire: the request Bob holds opens only with Bob's key
    env = api_pb2.SecureEnvelope.FromString(theirs[0].envelope)
    assert env.sealed and open_envelope(env, net.bob.identity.key)


def test_retried_envelope_answered_from_store_not_processed_twice(net: Any) -> None:
    envelope = seal(payload_for("alice.vasp.test", "bob.vasp.test"), bob_key(net))
    first = stub(net).Transfer(envelope, timeout=10)
    second = stub(net).Transfer(envelope, timeout=10)
    assert first == second
    rows = net.bob.node.store.exchange(envelope.id)
    assert [r.kind for r in rows] == ["request", "reply"]  # one request, one reply


def test_stream_many_envelopes_bad_one_does_not_break_it(net: Any) -> None:
    good = [seal(payload_for("alice.vasp.test", "bob.vasp.test"), bob_key(net)) for _ in range(5)]
    bad = api_pb2.SecureEnvelope()
    bad.CopyFrom(good[2])
    bad.id = str(uuid.uuid4())
    bad.hmac = b"\x00" * 32
    sent = [*good[:3], bad, *good[3:]]
    replies = list(stub(net).TransferStream(iter(sent), timeout=20))
    assert len(replies) == len(sent)
    codes = [r.error.code for r in replies]
    assert codes[3] == Code.INVALID_SIGNATURE
    assert all(c == 0 for i, c in enumerate(codes) if i != 3)
    assert all(r.id == e.id for r, e in zip(replies, sent, strict=True))


def test_key_exchange_and_confirm_address(net: Any) -> None:
    key = net.alice.node.exchange_keys(net.bob.common_name)
    assert key.public_numbers() == bob_key(net).public_numbers()
    with pytest.raises(grpc.RpcError) as err:
        stub(net).ConfirmAddress(api_pb2.Address(crypto_address="x"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_health_over_mtls(net: Any) -> None:
    channel = net.alice.node.connect(net.bob.common_name)
    state = channel.health.Status(api_pb2.HealthCheck(), timeout=5)
    assert state.status == api_pb2.ServiceState.HEALTHY


def test_unknown_key_asks_for_key_exchange(net: Any) -> None:
    # Sealed to Alice's key instead of Bob's: Bob cannot open it and says which step.
    envelope = seal(payload_for("alice.vasp.test", "bob.vasp.test"),
                    net.alice.identity.leaf.public_key())
    reply = stub(net).Transfer(envelope, timeout=10)
    assert reply.error.code == Code.NO_SIGNING_KEY and reply.error.retry
    assert reply.transfer_state == api_pb2.REPAIR


def test_error_envelope_gets_an_error_back(net: Any) -> None:
    result = net.alice.node.send_error(net.bob.common_name, Code.COMPLIANCE_CHECK_FAIL, "frozen")
    assert result.state == "rejected"
    assert result.error.code == Code.COMPLIANCE_CHECK_FAIL


def test_callback_from_another_vasp_is_refused(net: Any) -> None:
    # Alice starts a transfer with Bob; Charlie then sends an envelope with its id.
    result = net.alice.send(net.bob.common_name, payload_for("alice.vasp.test", "bob.vasp.test"))
    charlie = net.charlie.node.connect(net.alice.common_name).network
    forged = seal(payload_for("charlie.vasp.test", "alice.vasp.test"),
                  net.alice.identity.leaf.public_key(), envelope_id=result.envelope_id)
    reply = charlie.Transfer(forged, timeout=10)
    assert reply.error.code == Code.FORBIDDEN
    assert net.alice.node.store.initiated(result.envelope_id).state == "accepted"


def test_async_callback_after_window_is_expired(net: Any, tmp_path: Any) -> None:
    # A beneficiary whose window closes before it answers: the originator refuses it.
    def late(incoming: Any) -> Any:
        return Pending(delay=timedelta(seconds=0.3), window=timedelta(seconds=-2),
                       callback=lambda i: Accept())

    node = _extra_node(net, tmp_path, "bob", late)
    try:
        result = net.alice.send(net.bob.common_name,
                                payload_for("alice.vasp.test", "bob.vasp.test"))
        assert result.state == "pending"
        final = net.wait_for_state(net.alice, result.envelope_id, {"accepted", "expired"})
        assert final == "expired"
    finally:
        _restore(net, node)


def test_restart_loses_nothing_acknowledged(net: Any, tmp_path: Any) -> None:
    envelope = seal(payload_for("alice.vasp.test", "bob.vasp.test"), bob_key(net))
    node = _extra_node(net, tmp_path, "bob", lambda i: Accept(), db="bob-restart.db")
    try:
        first = stub(net).Transfer(envelope, timeout=10)
        node.stop()
        # A new process over the same file: the retried envelope gets the same reply.
        again = _extra_node(net, tmp_path, "bob", lambda i: Reject(50, "never called"),
                            db="bob-restart.db", stop_current=False)
        try:
            net.alice.node.connector.forget(net.bob.common_name)
            assert stub(net).Transfer(envelope, timeout=10) == first
        finally:
            again.close()
    finally:
        _restore(net, None)


def _extra_node(net: Any, where: Any, name: str, handler: Any, *, db: str = "extra.db",
                stop_current: bool = True) -> TrisaNode:
    """Run another node on ``name``'s port with the same identity and a custom handler.

    ``where``: a folder (the store is ``where / db``) or a store location (a path or a
    database URL, e.g. the ``db_location`` fixture's)."""
    sim = net.nodes[name]
    if stop_current:
        sim.node.stop()
    location = where if isinstance(where, str) else where / db
    node = TrisaNode(sim.node.material, net.directory_client(),
                     store=TransferStore(location), handler=handler,
                     listen=f"127.0.0.1:{sim.port}", resolve=net.resolve)
    _start_when_port_free(node)
    net.alice.node.connector.forget(sim.common_name)
    return node


def _start_when_port_free(node: TrisaNode) -> None:
    """The port was just released by a stopped node; retry briefly until it binds."""
    for _ in range(50):
        try:
            node.start()
            return
        except Exception:
            time.sleep(0.1)
    node.start()


def _restore(net: Any, extra: TrisaNode | None) -> None:
    if extra is not None:
        extra.close()
    sim = net.nodes["bob"]
    fresh = TrisaNode(sim.node.material, net.directory_client(), store=sim.node.store,
                      handler=net.handler_factory(sim.common_name),
                      listen=f"127.0.0.1:{sim.port}", resolve=net.resolve)
    _start_when_port_free(fresh)
    sim.node = fresh
    net.alice.node.connector.forget(sim.common_name)


# ------------------------------------------------------------------- fuzzing


mutations = st.sampled_from(["payload", "hmac", "encryption_key", "id", "timestamp",
                             "encryption_algorithm", "hmac_algorithm", "truncate", "oversize"])


@pytest.mark.slow
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=mutations, data=st.binary(min_size=0, max_size=64))
def test_fuzzed_envelopes_get_error_envelopes_and_server_keeps_serving(
    net: Any, kind: str, data: bytes
) -> None:
    env = seal(payload_for("alice.vasp.test", "bob.vasp.test"), bob_key(net))
    if kind == "payload":
        env.payload = data or b"\x01"
    elif kind == "hmac":
        env.hmac = data or b"\x02"
    elif kind == "encryption_key":
        env.encryption_key = data or b"\x03"
    elif kind == "id":
        env.id = data.hex()[:20] or "not-a-uuid"
    elif kind == "timestamp":
        env.timestamp = data.decode("latin-1")[:30] or "yesterday"
    elif kind == "encryption_algorithm":
        env.encryption_algorithm = "AES" + data.hex()[:8]
    elif kind == "hmac_algorithm":
        env.hmac_algorithm = "HMAC-" + data.hex()[:8]
    elif kind == "truncate":
        env.payload = env.payload[: len(data) % 12]
    elif kind == "oversize":
        env.payload = b"\x00" * (MAX_ENVELOPE_PAYLOAD + 1)
    before = net.bob.node.store.count()
    reply = stub(net).Transfer(env, timeout=20)
    error = envelope_error(reply)
    assert error is not None and error.code in errors_pb2.Error.Code.values()
    assert error.code != 0
    rows = net.bob.node.store.exchange(env.id)
    assert net.bob.node.store.count() - before == 2  # the rejection and its record
    request = next(r for r in rows if r.kind == "request" and r.error_code == error.code)
    assert request.envelope == b""  # nothing kept of rejected input
    # and the server keeps serving
    ok = net.alice.send(net.bob.common_name, payload_for("alice.vasp.test", "bob.vasp.test"))
    assert ok.state == "accepted"


def test_message_over_grpc_limit_refused_by_transport_server_keeps_serving(net: Any) -> None:
    env = seal(payload_for("alice.vasp.test", "bob.vasp.test"), bob_key(net))
    env.payload = b"\x00" * (5 * 1024 * 1024)
    with pytest.raises(grpc.RpcError) as err:
        stub(net).Transfer(env, timeout=20)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ok = net.alice.send(net.bob.common_name, payload_for("alice.vasp.test", "bob.vasp.test"))
    assert ok.state == "accepted"


def test_repair_outcome_is_a_retryable_rejection(net: Any, tmp_path: Any) -> None:
    from trisa_peer.network.handler import Repair

    node = _extra_node(net, tmp_path, "bob", lambda i: Repair("beneficiary name missing"))
    try:
        result = net.alice.send(net.bob.common_name,
                                payload_for("alice.vasp.test", "bob.vasp.test"))
        assert result.state == "repair"
        assert result.error.retry and result.error.code == Code.INCOMPLETE_IDENTITY
        assert result.transfer_state == api_pb2.REPAIR
    finally:
        _restore(net, node)


def test_simultaneous_copies_of_one_envelope_processed_once(net: Any) -> None:
    import threading

    envelope = seal(payload_for("alice.vasp.test", "bob.vasp.test"), bob_key(net))
    replies: list[Any] = []
    barrier = threading.Barrier(6)

    def go() -> None:
        barrier.wait()
        replies.append(stub(net).Transfer(envelope, timeout=20))

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(replies) == 6 and all(r == replies[0] for r in replies)
    rows = net.bob.node.store.exchange(envelope.id)
    assert [r.kind for r in rows] == ["request", "reply"]


def test_store_add_exchange_refuses_a_duplicate_request(db_location: str) -> None:
    store = TransferStore(db_location)
    args = dict(envelope_id="e", peer="p", request=b"r", request_digest="d", reply=b"x",
                state="accepted")
    assert store.add_exchange(**args) is not None  # type: ignore[arg-type]
    assert store.add_exchange(**args) is None  # type: ignore[arg-type]
    assert store.count() == 2


def test_callback_only_while_pending_and_only_once(net: Any) -> None:
    # An accepted transfer: a later "callback" from the same counterparty is refused and
    # a later rejection changes nothing.
    result = net.alice.send(net.bob.common_name, payload_for("alice.vasp.test", "bob.vasp.test"))
    assert result.state == "accepted"
    bob_to_alice = net.bob.node.connect(net.alice.common_name).network
    late = seal(payload_for("bob.vasp.test", "alice.vasp.test"),
                net.alice.identity.leaf.public_key(), envelope_id=result.envelope_id)
    reply = bob_to_alice.Transfer(late, timeout=10)
    assert reply.error.code == Code.FORBIDDEN and "not awaiting" in reply.error.message
    from trisa_peer.envelope import reject as reject_envelope

    rejection = reject_envelope(result.envelope_id, Code.REJECTED, "changed our mind")
    assert bob_to_alice.Transfer(rejection, timeout=10).error.code == Code.REJECTED
    assert net.alice.node.store.initiated(result.envelope_id).state == "accepted"


def test_malformed_error_envelope_and_bad_signing_key(net: Any) -> None:
    from trisa_peer._pb.trisa.api.v1beta1 import api_pb2 as api

    env = api.SecureEnvelope(id=str(uuid.uuid4()), timestamp="2024-01-01T00:00:00Z")
    env.error.code = 12345  # not a TRISA code
    env.error.message = "nonsense"
    reply = stub(net).Transfer(env, timeout=10)
    assert reply.error.code == Code.BAD_REQUEST
    with pytest.raises(grpc.RpcError) as err:
        stub(net).KeyExchange(api.SigningKey(data=b"not a key"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def test_node_close_is_idempotent_and_ends_its_context(net: Any, tmp_path: Any) -> None:
    sim = net.nodes["bob"]
    node = TrisaNode(sim.node.material, net.directory_client(),
                     store=TransferStore(tmp_path / "closing.db"), handler=lambda i: Accept(),
                     listen="127.0.0.1:0", resolve=net.resolve)
    with node:
        port = node.port
        assert _listening(port)
    assert not _listening(port)  # __exit__ closed the node
    node.close()  # a second close (and a stop after it) does nothing
    node.stop()
    assert not _listening(port)


def test_a_transfer_on_a_channel_closed_under_it_is_a_channel_error(net: Any) -> None:
    """grpc raises ValueError for a call on a closed channel (the node stopping under a
    callback timer): the node reports ChannelBrokenError (retry) and marks the row
    failed, never an unhandled exception in a thread. Twin: the open channel works."""
    from trisa_peer.errors import ChannelBrokenError

    alice = net.alice.node
    channel = alice.connect(net.bob.common_name)
    ok = alice.send(net.bob.common_name, payload_for("alice.vasp.test", "bob.vasp.test"))
    assert ok.state != "failed"
    channel.close()
    envelope = seal(payload_for("alice.vasp.test", "bob.vasp.test"), bob_key(net))
    with pytest.raises(ChannelBrokenError, match="the channel was closed") as info:
        alice._transfer(net.bob.common_name, channel, envelope)
    assert info.value.retry
    alice.connector.forget(net.bob.common_name)
