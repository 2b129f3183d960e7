"""Issue 11 §2, §8 and §6: what a peer's envelope metadata may do to a node (nothing to
its log, bounded records), freshness and state checks, rejection retention, and a store
whose file was deleted under it. Real nodes on 127.0.0.1 (``trisa_network``) and real
SQLite files; each check has an accepted twin."""

from __future__ import annotations

import logging
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from helpers import bob_key

from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, errors_pb2
from trisa_peer.envelope import format_timestamp, seal
from trisa_peer.envelope.crypto import aes_gcm_encrypt, hmac_sign, random_key
from trisa_peer.envelope.validate import payload_problem, recorded_id
from trisa_peer.errors import EnvelopeError, StoreError
from trisa_peer.logtext import text_digest
from trisa_peer.network.handler import Accept, Reject
from trisa_peer.network.service import Exchange
from trisa_peer.network.store import TransferStore
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.policies import originator_payload

Code = errors_pb2.Error
TS = api_pb2.TransferState


def payload_now(sent_at: datetime | None = None) -> Any:
    o, b = BOOK.wallets_of("alice.vasp.test")[1], BOOK.wallets_of("bob.vasp.test")[0]
    payload = originator_payload(o, b, sent_at=sent_at or datetime.now(UTC))
    assert not isinstance(payload, Reject)
    return payload


def alice_as_bob_sees_her(net: Any) -> Any:
    """Alice as Bob's authenticator verifies her (steps 2-4, real directory)."""
    leaf = net.alice.identity.leaf.public_bytes(Encoding.PEM)
    return net.bob.node.server.authenticator.authenticate_pem(leaf, net.alice.identity.chain_pem())


def exchange(net: Any, tmp_path: Path, *, clock: Any = None, **kw: Any) -> Exchange:
    """Bob's exchange over a fresh store, accepting everything."""
    return Exchange(
        common_name=net.bob.common_name, handler=lambda i: Accept(),
        store=TransferStore(tmp_path / f"x-{uuid.uuid4().hex[:6]}.db"),
        keyring=net.bob.node.keyring, peer_keys=net.bob.node.peer_keys,
        schedule=lambda delay, fn: None, send_callback=lambda *a: None,
        clock=clock or (lambda: datetime.now(UTC)), **kw,
    )


# ------------------------------------------------------------- §2 ids and logs


def test_newline_in_id_cannot_forge_a_log_line(net: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="trisa_peer")
    forged = "x\n2026-11-30 INFO trisa_peer.authenticate peer=mallory step=4 outcome=accept"
    env = seal(payload_now(), bob_key(net))
    env.id = str(uuid.uuid4()) + forged
    stub = net.alice.node.connect(net.bob.common_name).network
    caplog.clear()
    reply = stub.Transfer(env, timeout=10)
    assert reply.error.code == Code.BAD_REQUEST
    assert "\n" not in reply.id and len(reply.id) <= 64
    ours = [r for r in caplog.records if r.name == "trisa_peer.network"]
    assert len(ours) == 1  # one event, one line
    text = ours[0].getMessage()
    assert "\n" not in text and "\r" not in text and "\\n" in text
    assert not any("\n" in r.getMessage() for r in caplog.records)
    # twin: the same envelope with its canonical id is accepted
    good = seal(payload_now(), bob_key(net))
    assert stub.Transfer(good, timeout=10).error.code == 0


def test_huge_id_is_refused_not_logged_stored_or_echoed_whole(
    net: Any, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="trisa_peer")
    ex = exchange(net, tmp_path)
    peer = alice_as_bob_sees_her(net)
    env = seal(payload_now(), bob_key(net))
    env.id = "\u2028" + "A" * int(3.9 * 1024 * 1024)
    caplog.clear()
    reply = ex.process(env, peer)
    assert reply.error.code == Code.BAD_REQUEST
    assert len(reply.SerializeToString()) < 1024  # not echoed
    assert len(reply.id) <= 64 and "\u2028" not in reply.id and reply.id == recorded_id(env.id)
    assert text_digest(env.id) in reply.error.message  # named exactly, by its SHA-256
    rows = ex.store.exchange(reply.id)
    assert [r.kind for r in rows] == ["request", "reply"] and rows[0].envelope == b""
    assert sum(len(r.envelope) + len(r.envelope_id) for r in rows) < 2048  # not stored
    assert all(len(r.getMessage()) < 1024 for r in caplog.records)  # not logged
    assert len([r for r in caplog.records if r.name == "trisa_peer.network"]) == 1
    # twin: a canonical UUID passes
    twin = seal(payload_now(), bob_key(net))
    assert ex.process(twin, peer).error.code == 0


def test_recorded_id_is_bounded_escaped_text() -> None:
    good = str(uuid.uuid4())
    assert recorded_id(good) == good
    assert recorded_id(good.upper()) == good.upper()
    for bad in ("\n" * 100, "\x1b[31m" * 50, "é" * 500, "{" + good + "}"):
        out = recorded_id(bad)
        assert len(out) <= 64 and out.isprintable() and "\n" not in out


# ------------------------------------------------------------- §8 metadata


@pytest.mark.parametrize("state", [TS.PENDING, TS.REVIEW, TS.REPAIR, TS.ACCEPTED,
                                   TS.COMPLETED, TS.REJECTED, 99, -1])
def test_new_transfer_must_be_started_or_unspecified(
    net: Any, tmp_path: Path, state: int
) -> None:
    ex = exchange(net, tmp_path)
    peer = alice_as_bob_sees_her(net)
    env = seal(payload_now(), bob_key(net))
    env.transfer_state = state  # type: ignore[assignment]
    reply = ex.process(env, peer)
    assert reply.error.code == Code.BAD_REQUEST
    assert "transfer_state" in reply.error.message or "new transfer" in reply.error.message
    # a refused attempt does not make the id "known": the same state is refused again
    env.timestamp = format_timestamp(datetime.now(UTC))
    assert ex.process(env, peer).error.code == Code.BAD_REQUEST


@pytest.mark.parametrize("state", [TS.UNSPECIFIED, TS.STARTED])
def test_twin_new_transfer_started_or_unspecified_accepted(
    net: Any, tmp_path: Path, state: int
) -> None:
    ex = exchange(net, tmp_path)
    env = seal(payload_now(), bob_key(net), transfer_state=state)
    assert ex.process(env, alice_as_bob_sees_her(net)).error.code == 0


def test_continuation_of_a_known_transfer_may_carry_a_later_state(
    net: Any, tmp_path: Path
) -> None:
    ex = exchange(net, tmp_path)
    peer = alice_as_bob_sees_her(net)
    first = seal(payload_now(), bob_key(net), transfer_state=TS.STARTED)
    assert ex.process(first, peer).error.code == 0
    later = seal(payload_now(), bob_key(net), envelope_id=first.id,
                 transfer_state=TS.COMPLETED)
    assert ex.process(later, peer).error.code == 0


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z",
                                   "9999-12-31T23:59:59Z", "-16m", "+16m"])
def test_envelope_timestamp_outside_the_window_is_bad_request(
    net: Any, tmp_path: Path, stamp: str
) -> None:
    ex = exchange(net, tmp_path)
    env = seal(payload_now(), bob_key(net))
    if stamp[0] in "+-":
        minutes = int(stamp[:-1])
        env.timestamp = format_timestamp(datetime.now(UTC) + timedelta(minutes=minutes))
    else:
        env.timestamp = stamp
    reply = ex.process(env, alice_as_bob_sees_her(net))
    assert reply.error.code == Code.BAD_REQUEST
    assert "freshness window" in reply.error.message


@pytest.mark.parametrize("minutes", [-14, 0, 14])
def test_twin_timestamp_inside_the_window_accepted(
    net: Any, tmp_path: Path, minutes: int
) -> None:
    ex = exchange(net, tmp_path)
    env = seal(payload_now(), bob_key(net))
    env.timestamp = format_timestamp(datetime.now(UTC) + timedelta(minutes=minutes))
    assert ex.process(env, alice_as_bob_sees_her(net)).error.code == 0


def test_window_is_configurable_and_follows_the_node_clock(net: Any, tmp_path: Path) -> None:
    # An old envelope (the upstream fixtures' kind of timestamp) passes a node whose
    # clock is injected to its time, or whose window is wide enough.
    then = datetime(2022, 3, 29, 14, 16, 29, tzinfo=UTC)
    env = seal(payload_now(sent_at=then), bob_key(net), clock=lambda: then)
    peer = alice_as_bob_sees_her(net)
    assert exchange(net, tmp_path).process(env, peer).error.code == Code.BAD_REQUEST
    assert exchange(net, tmp_path, clock=lambda: then).process(env, peer).error.code == 0
    wide = exchange(net, tmp_path, timestamp_window=timedelta(days=5 * 365))
    assert wide.process(env, peer).error.code == 0


def test_exact_retry_older_than_the_window_gets_its_stored_reply(
    net: Any, tmp_path: Path
) -> None:
    """A resend of stored bytes (TrisaNode.resend) may be older than the window: the
    beneficiary answers it from the store. Its twin, a new envelope with the same old
    timestamp, is refused."""
    then = datetime.now(UTC)
    clock = [then]
    ex = exchange(net, tmp_path, clock=lambda: clock[0])
    peer = alice_as_bob_sees_her(net)
    env = seal(payload_now(sent_at=then), bob_key(net), clock=lambda: then)
    first = ex.process(env, peer)
    assert first.error.code == 0
    clock[0] = then + timedelta(hours=2)
    again = ex.process(api_pb2.SecureEnvelope.FromString(env.SerializeToString()), peer)
    assert again.SerializeToString() == first.SerializeToString()
    other = seal(payload_now(sent_at=then), bob_key(net), clock=lambda: then)
    assert ex.process(other, peer).error.code == Code.BAD_REQUEST


def _unsealed(payload: Any) -> Any:
    """An unsealed envelope (clear key, spec §9.3) around a payload ``seal`` would refuse."""
    key = random_key()
    data = aes_gcm_encrypt(key, payload.SerializeToString())
    return api_pb2.SecureEnvelope(
        id=str(uuid.uuid4()), payload=data, encryption_key=key,
        encryption_algorithm="AES256-GCM", hmac=hmac_sign(key, data), hmac_secret=key,
        hmac_algorithm="HMAC-SHA256", timestamp=format_timestamp(datetime.now(UTC)),
        sealed=False, transfer_state=TS.STARTED,
    )


@pytest.mark.parametrize("sent_at", ["0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z",
                                     "2008-12-31T23:59:59Z", "9999-12-31T23:59:59Z", "+2d"])
def test_payload_sent_at_outside_the_sanity_range(
    net: Any, tmp_path: Path, sent_at: str
) -> None:
    payload = payload_now()
    payload.sent_at = (format_timestamp(datetime.now(UTC) + timedelta(days=2))
                       if sent_at == "+2d" else sent_at)
    assert "sanity range" in (payload_problem(payload) or "")
    with pytest.raises(EnvelopeError):
        seal(payload, bob_key(net))
    reply = exchange(net, tmp_path).process(_unsealed(payload), alice_as_bob_sees_her(net))
    assert reply.error.code == Code.VALIDATION_ERROR
    assert "sanity range" in reply.error.message


@pytest.mark.parametrize("sent_at", ["2009-01-01T00:00:00Z", "2022-01-27T08:21:43Z", "+23h"])
def test_twin_old_or_slightly_ahead_sent_at_accepted(
    net: Any, tmp_path: Path, sent_at: str
) -> None:
    # repairs and pending follow-ups legitimately carry an old sent_at
    payload = payload_now()
    payload.sent_at = (format_timestamp(datetime.now(UTC) + timedelta(hours=23))
                       if sent_at == "+23h" else sent_at)
    assert payload_problem(payload) is None
    reply = exchange(net, tmp_path).process(_unsealed(payload), alice_as_bob_sees_her(net))
    assert reply.error.code == 0


# ------------------------------------------------------------- §8 rejection retention


def _fill(store: TransferStore, rejected: int, kept: int) -> None:
    for i in range(rejected):  # refused input: no bytes kept
        store.add_exchange(envelope_id=f"bad-{i}", peer="p", request=b"", request_digest=f"d{i}",
                           reply=b"rejection", state="repair", error_code=Code.BAD_REQUEST)
    for i in range(kept):  # an accepted transfer and a business rejection: never pruned
        store.add_exchange(envelope_id=f"ok-{i}", peer="p", request=b"sealed",
                           request_digest=f"k{i}", reply=b"reply", state="accepted")
        store.add_exchange(envelope_id=f"no-{i}", peer="p", request=b"sealed",
                           request_digest=f"n{i}", reply=b"reject", state="rejected",
                           error_code=Code.COMPLIANCE_CHECK_FAIL)


def test_rejection_records_bounded_by_count_newest_kept(tmp_path: Path) -> None:
    store = TransferStore(tmp_path / "r.db", max_rejections=5)
    _fill(store, 20, 3)
    assert store.rejection_records() == 20
    assert store.prune_rejections() == 15
    assert store.rejection_records() == 5
    assert [r.envelope_id for r in store.exchange("bad-19")] == ["bad-19", "bad-19"]
    assert store.exchange("bad-14") == []  # request and reply both gone
    assert store.count() == 5 * 2 + 3 * 4  # the transfers are untouched


def test_rejection_records_bounded_by_age(tmp_path: Path) -> None:
    store = TransferStore(tmp_path / "r.db", keep_rejections=timedelta(days=7))
    _fill(store, 4, 2)
    assert store.prune_rejections(now=datetime.now(UTC) + timedelta(days=6)) == 0  # twin
    assert store.prune_rejections(now=datetime.now(UTC) + timedelta(days=8)) == 4
    assert store.rejection_records() == 0 and store.count() == 2 * 4


def test_rejection_records_pruned_on_write(tmp_path: Path) -> None:
    store = TransferStore(tmp_path / "r.db", max_rejections=5)
    store.prune_commits = 10
    _fill(store, 60, 0)
    assert store.rejection_records() <= 5 + 10


# ------------------------------------------------------------- §6 durability


def test_deleted_store_folder_refuses_to_acknowledge(tmp_path: Path, caplog: Any) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    store = TransferStore(folder / "t.db")
    args: dict[str, Any] = dict(peer="p", request=b"r", reply=b"x", state="accepted")
    assert store.add_exchange(envelope_id="a", request_digest="1", **args) is not None  # twin
    assert store.problem() is None
    shutil.rmtree(folder)
    caplog.set_level(logging.ERROR, logger="trisa_peer")
    for i in range(3):
        with pytest.raises(StoreError, match="unusable"):
            store.add_exchange(envelope_id=f"b{i}", request_digest=f"2{i}", **args)
    assert store.problem() is not None and "gone" in store.problem()  # type: ignore[operator]
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1  # one line


def test_replaced_store_file_is_detected(tmp_path: Path) -> None:
    store = TransferStore(tmp_path / "t.db")
    (tmp_path / "t.db").rename(tmp_path / "moved.db")
    (tmp_path / "t.db").write_bytes(b"")
    with pytest.raises(StoreError):
        store.add(envelope_id="a", peer="p", direction="outgoing", kind="request",
                  state="sent", envelope=b"e")
    assert "another file" in (store.problem() or "")


def test_health_unready_when_the_store_is_gone(tmp_path: Path) -> None:
    # TRISAHealth/Status of a node reads its store's problem(); over the wire in
    # soak/case_store_deleted.py (a node in a child process).
    from trisa_peer.transport.server import HealthServicer

    folder = tmp_path / "hdb"
    folder.mkdir()
    store = TransferStore(folder / "t.db")
    health = HealthServicer(problem=store.problem)
    ready = health.Status(api_pb2.HealthCheck(), None)  # type: ignore[arg-type]
    assert ready.status == api_pb2.ServiceState.HEALTHY  # twin
    shutil.rmtree(folder)
    unready = health.Status(api_pb2.HealthCheck(), None)  # type: ignore[arg-type]
    assert unready.status == api_pb2.ServiceState.UNHEALTHY


def test_decision_line_escapes_a_hostile_common_name(net: Any, caplog: Any) -> None:
    # A CA other than ours may issue any CN; the decision line stays one line.
    from trisa_peer.authenticate import _log_decision
    from trisa_peer.steps import HandshakeStep, Reason

    caplog.set_level(logging.INFO, logger="trisa_peer")
    leaf = net.alice.identity.leaf
    forged = "m.test\n2026-11-30 INFO trisa_peer.authenticate peer=x step=4 outcome=accept"
    _log_decision(forged, leaf, HandshakeStep(4), "reject", Reason.NOT_REGISTERED,
                  "detail\r\nwith a break" + "x" * 5000)
    _log_decision("alice.vasp.test", leaf, HandshakeStep(4), "accept", Reason.NOT_REGISTERED,
                  "")  # twin: a plain name is logged as is
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and not any("\n" in ln or "\r" in ln for ln in lines)
    assert "\\n2026-11-30" in lines[0] and len(lines[0]) < 1000
    assert lines[1].startswith("peer=alice.vasp.test ")


@pytest.mark.parametrize("option,value", [("--timestamp-window", "-5"),
                                          ("--timestamp-window", "soon"),
                                          ("--keep-rejections", "0"),
                                          ("--max-rejections", "-1")])
def test_serve_retention_and_window_options_checked(
    trisa_peer_cli: Any, option: str, value: str
) -> None:
    bad = trisa_peer_cli("serve", option, value)
    assert bad.returncode == 2 and option in bad.stderr and "Traceback" not in bad.stderr
    # twin: a good value passes the option check (and stops at the missing --listen)
    good = {"--timestamp-window": "60", "--keep-rejections": "7", "--max-rejections": "0"}
    ok = trisa_peer_cli("serve", option, good[option])
    assert option not in ok.stderr and "listen" in ok.stderr


def test_peer_error_message_echo_is_bounded(net: Any, tmp_path: Path) -> None:
    from trisa_peer.envelope import reject

    ex = exchange(net, tmp_path)
    long = reject(str(uuid.uuid4()), Code.COMPLIANCE_CHECK_FAIL, "no " * 100_000)
    reply = ex.process(long, alice_as_bob_sees_her(net))
    assert reply.error.code == Code.COMPLIANCE_CHECK_FAIL and len(reply.error.message) == 1024
    short = reject(str(uuid.uuid4()), Code.COMPLIANCE_CHECK_FAIL, "frozen")  # twin
    assert ex.process(short, alice_as_bob_sees_her(net)).error.message == "frozen"
