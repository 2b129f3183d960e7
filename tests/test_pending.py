"""Section 4 of issue 11: pending transfers are store rows with a deadline; a resolver
registered by name or the operator decides; the node delivers; the deadline expires."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from helpers import CliResult
from test_exchange import _extra_node, _restore, payload_for

from trisa_peer._pb.trisa.api.v1beta1 import errors_pb2
from trisa_peer.envelope import format_timestamp
from trisa_peer.network.handler import Accept, Pending, PendingTransfer
from trisa_peer.network.store import TransferStore

Code = errors_pb2.Error


def _wait(predicate: Any, timeout: float = 15) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def test_named_resolver_decides_and_the_decision_is_delivered(net: Any, db_location: str) -> None:
    asked: list[str] = []
    ready = {"go": False}

    def resolver(transfer: PendingTransfer) -> Any:
        asked.append(transfer.envelope_id)
        assert transfer.payload.identity.value  # the opened payload, from the store
        return Accept() if ready["go"] else None

    node = _extra_node(net, db_location, "bob",
                       lambda _i: Pending(resolver="review", window=timedelta(seconds=30)))
    node.resolvers["review"] = resolver
    node.pending_interval = 0.1
    try:
        result = net.alice.send(net.bob.common_name, payload_for("alice.vasp.test",
                                                                  "bob.vasp.test"))
        assert result.state == "pending"
        row = node.store.latest_request(net.alice.common_name, result.envelope_id)
        assert row.state == "pending" and row.deadline and row.resolver == "review"
        assert _wait(lambda: asked)  # asked, undecided: still pending on both sides
        assert net.alice.node.store.initiated(result.envelope_id).state == "pending"
        ready["go"] = True
        assert _wait(lambda: net.alice.node.store.initiated(result.envelope_id).state
                     == "accepted")
        assert _wait(lambda: node.store.get(row.seq).state == "accepted")
    finally:
        _restore(net, node)


def test_undecided_pending_transfer_expires_on_both_sides(net: Any, db_location: str) -> None:
    node = _extra_node(net, db_location, "bob",
                       lambda _i: Pending(resolver="nobody", window=timedelta(seconds=1)))
    node.pending_interval = 0.1
    net.alice.node.pending_interval = 0.1
    try:
        result = net.alice.send(net.bob.common_name, payload_for("alice.vasp.test",
                                                                  "bob.vasp.test"))
        assert result.state == "pending"
        eid = result.envelope_id
        alice = net.alice.node.store
        assert _wait(lambda: alice.initiated(eid).state == "expired")
        row = node.store.latest_request(net.alice.common_name, eid)
        assert _wait(lambda: node.store.get(row.seq).state == "expired")
        assert alice.initiated(eid).error_code == Code.COMPLIANCE_PERIOD_EXCEEDED
        assert not [r for r in alice.pending() if r.envelope_id == eid]
    finally:
        net.alice.node.pending_interval = 1.0
        _restore(net, node)


def test_in_process_callback_still_works_and_leaves_pending(net: Any, db_location: str) -> None:
    node = _extra_node(net, db_location, "bob", lambda _i: Pending(
        delay=timedelta(seconds=0.2), callback=lambda _inc: Accept()))
    try:
        result = net.alice.send(net.bob.common_name, payload_for("alice.vasp.test",
                                                                  "bob.vasp.test"))
        assert result.state == "pending"
        assert _wait(lambda: net.alice.node.store.initiated(result.envelope_id).state
                     == "accepted")
        row = node.store.latest_request(net.alice.common_name, result.envelope_id)
        assert _wait(lambda: node.store.get(row.seq).state == "accepted")
    finally:
        _restore(net, node)


# ----------------------------------------------------------- the operator's CLI


def _pending_store(path: Any, *, window: timedelta = timedelta(minutes=5)) -> tuple[str, int]:
    store = TransferStore(path)
    eid = str(uuid.uuid4())
    claim = store.claim(envelope_id=eid, peer="alice.vasp.test", request=b"req",
                        request_digest="d", payload_digest="p")
    deadline = format_timestamp(datetime.now(UTC) + window)
    store.add_reply(claim.seq, state="pending", envelope=b"reply", direction="outgoing",
                    pending=(deadline, ""))
    store.close()
    return eid, claim.seq


def test_transfers_resolve_records_the_decision(trisa_peer_cli: Any, db_location: str) -> None:
    db = db_location
    eid, seq = _pending_store(db)
    listed: CliResult = trisa_peer_cli("transfers", "list", "--db", str(db))
    assert "pending: 1" in listed.stdout and eid in listed.stdout
    done = trisa_peer_cli("transfers", "resolve", eid, "--db", str(db),
                          "--reject", "COMPLIANCE_CHECK_FAIL")
    assert done.returncode == 0, done.stderr
    row = TransferStore(db).get(seq)
    assert row is not None and row.resolution.startswith(
        f"reject:{Code.COMPLIANCE_CHECK_FAIL}:")
    again = trisa_peer_cli("transfers", "resolve", eid, "--db", str(db), "--accept")
    assert again.returncode == 1 and "already decided" in again.stderr
    assert again.stderr.count("\n") == 1


def test_transfers_resolve_refuses_bad_codes_unknown_ids_and_closed_windows(
    trisa_peer_cli: Any, db_location: str
) -> None:
    db = db_location
    eid, _ = _pending_store(db)
    bad = trisa_peer_cli("transfers", "resolve", eid, "--db", str(db), "--reject", "NOPE")
    assert bad.returncode == 2 and "not a TRISA error code" in bad.stderr
    number = trisa_peer_cli("transfers", "resolve", eid, "--db", str(db), "--reject", "92")
    assert number.returncode == 0, number.stderr  # the twin: a code number is accepted
    unknown = trisa_peer_cli("transfers", "resolve", str(uuid.uuid4()), "--db", str(db),
                             "--accept")
    assert unknown.returncode == 1 and "no pending incoming transfer" in unknown.stderr
    late, _ = _pending_store(db, window=timedelta(seconds=-1))
    closed = trisa_peer_cli("transfers", "resolve", late, "--db", str(db), "--accept")
    assert closed.returncode == 1 and "window closed" in closed.stderr




def test_a_decision_held_by_another_replica_is_not_delivered_twice(
        net: Any, db_location: str) -> None:
    """Replicas on one store each run the pending loop: a delivery takes the transfer's
    hold in the store first. While another store handle (another replica) holds it,
    this node's pass delivers nothing; once released, the next pass delivers."""
    go = {"decide": False}
    node = _extra_node(net, db_location, "bob",
                       lambda _i: Pending(resolver="review", window=timedelta(seconds=60)))
    node.resolvers["review"] = lambda _t: Accept() if go["decide"] else None
    other = TransferStore(db_location)
    try:
        result = net.alice.send(net.bob.common_name, payload_for("alice.vasp.test",
                                                                  "bob.vasp.test"))
        assert result.state == "pending"
        row = node.store.latest_request(net.alice.common_name, result.envelope_id)
        with other.exclusive(net.alice.common_name, result.envelope_id, 5.0) as held:
            assert held
            go["decide"] = True
            node.pending_tick()
            assert node.store.get(row.seq).state == "pending"  # not delivered
            assert net.alice.node.store.initiated(result.envelope_id).state == "pending"
        node.pending_tick()  # the twin: nobody else holds it
        assert _wait(lambda: node.store.get(row.seq).state == "accepted")
        assert net.alice.node.store.initiated(result.envelope_id).state == "accepted"
    finally:
        other.close()
        _restore(net, node)
