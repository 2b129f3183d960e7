"""The incoming path's one read per envelope (``TransferStore.view``) answers exactly
what the per-question queries answer; ``add_reply`` with a known envelope id checks it;
``claim`` finds a version-1 row (no payload digest) in the same statement. Both
backends (``db_location``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trisa_peer.errors import StoreError
from trisa_peer.network.store import TransferStore


def _history(store: TransferStore) -> None:
    """One id ("e") with every kind of row the incoming path looks at, plus others."""
    # our own outgoing transfer under another id, with its reply
    out = store.add(envelope_id="mine", peer="bob", direction="outgoing", kind="request",
                    state="sent", envelope=b"o")
    store.add_reply(out, state="pending", envelope=b"p", direction="incoming",
                    envelope_id="mine")
    # "e": a refused input (no bytes), an answered request, a repair, a claim in progress
    store.add_exchange(envelope_id="e", peer="alice", request=b"", request_digest="bad",
                       reply=b"no", state="rejected", error_code=4)
    first = store.claim(envelope_id="e", peer="alice", request=b"r1", request_digest="d1",
                        payload_digest="x1")
    store.add_reply(first.seq, state="repair", envelope=b"fix it", direction="outgoing",
                    error_code=9, envelope_id="e")
    store.release(first)
    second = store.claim(envelope_id="e", peer="alice", request=b"r2", request_digest="d2",
                         payload_digest="x2")
    store.release(second)  # unfinished
    # another peer under the same id
    store.add_exchange(envelope_id="e", peer="carol", request=b"c", request_digest="d1",
                       reply=b"ok", state="accepted", payload_digest="x1")


def _same(a: object, b: object) -> bool:
    return (a is None and b is None) or (
        a is not None and b is not None and a.seq == b.seq)  # type: ignore[attr-defined]


def test_the_view_answers_like_the_queries(db_location: str) -> None:
    store = TransferStore(db_location)
    _history(store)
    for eid in ("e", "mine", "unknown"):
        view = store.view(eid)
        for peer in ("alice", "carol", "bob", "Alice"):
            for dig in ("bad", "d1", "d2", "d3"):
                assert _same(view.request(peer, dig), store.find_request(peer, eid, dig))
            for pdig in ("x1", "x2", "x3", ""):
                assert _same(view.message(peer, pdig), store.find_message(peer, eid, pdig))
            assert _same(view.latest_request(peer), store.latest_request(peer, eid))
        assert view.initiated() == store.initiated(eid)
        for row in store.exchange(eid):
            assert view.reply_to(row.seq) == store.reply_to(row.seq)
    view = store.view("e")
    assert view.latest_request("alice").state == "claimed"  # type: ignore[union-attr]
    assert store.view("mine").initiated().envelope == b"o"  # type: ignore[union-attr]
    assert store.view("e").initiated() is None
    # a new transfer for a peer that only sent refused input, not for one we answered
    assert view.new_transfer("mallory") and not view.new_transfer("ALICE")
    assert not store.view("mine").new_transfer("bob") and view.new_transfer("bob")
    # twin: the view is one snapshot: a row written after it was read is not in it
    store.add_exchange(envelope_id="e", peer="dave", request=b"d", request_digest="d9",
                       reply=b"ok", state="accepted", payload_digest="x9")
    assert view.request("dave", "d9") is None
    assert store.view("e").request("dave", "d9") is not None
    store.close()


def test_add_reply_checks_a_given_envelope_id(db_location: str) -> None:
    store = TransferStore(db_location)
    claim = store.claim(envelope_id="e", peer="p", request=b"r", request_digest="d",
                        payload_digest="x")
    before = store.count()
    with pytest.raises(StoreError, match="no stored request"):
        store.add_reply(claim.seq, state="accepted", envelope=b"a", direction="outgoing",
                        envelope_id="other")
    assert store.count() == before and store.get(claim.seq).state == "claimed"  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="no stored request"):
        store.add_reply(claim.seq + 100, state="accepted", envelope=b"a",
                        direction="outgoing", envelope_id="e")
    # twin: the right id stores the reply under the request's own peer, in one transaction
    seq = store.add_reply(claim.seq, state="accepted", envelope=b"a", direction="outgoing",
                          envelope_id="e")
    reply = store.get(seq)
    assert reply is not None and (reply.peer, reply.reply_to, reply.state) == (
        "p", claim.seq, "accepted")
    assert store.get(claim.seq).state == "accepted"  # type: ignore[union-attr]
    assert store.summaries()[0].state == "accepted"
    store.release(claim)
    store.close()


def test_claim_answers_a_version_1_row_and_prefers_the_payload_match(
        db_location: str) -> None:
    store = TransferStore(db_location)
    # a request stored before payload digests existed (empty payload_digest), answered
    old = store.add_exchange(envelope_id="e", peer="p", request=b"r", request_digest="d",
                             reply=b"old reply", state="accepted")
    again = store.claim(envelope_id="e", peer="p", request=b"r", request_digest="d",
                        payload_digest="x")
    assert again.seq == old and again.reply is not None
    assert again.reply.envelope == b"old reply"
    assert store.get(old).payload_digest == "x"  # type: ignore[union-attr]  # filled in
    # twin: other bytes with another payload are another message (a new claim)
    other = store.claim(envelope_id="e", peer="p", request=b"s", request_digest="d2",
                        payload_digest="y")
    assert other.seq != old and other.attempt == 1 and other.reply is None
    store.release(other)
    # the payload's own row wins over a version-1 row with the same bytes
    store.add_exchange(envelope_id="f", peer="p", request=b"r", request_digest="d",
                       reply=b"v1", state="accepted")
    newer = store.claim(envelope_id="f", peer="p", request=b"q", request_digest="dq",
                        payload_digest="z")
    store.add_reply(newer.seq, state="accepted", envelope=b"v2", direction="outgoing",
                    envelope_id="f")
    store.release(newer)
    found = store.claim(envelope_id="f", peer="p", request=b"r", request_digest="d",
                        payload_digest="z")
    assert found.seq == newer.seq and found.reply is not None
    assert found.reply.envelope == b"v2"
    store.close()


def test_writes_from_many_threads_share_one_connection_and_are_read_at_once(
        tmp_path: Path) -> None:
    store = TransferStore(tmp_path / "w.db")
    seen: list[bool] = []
    used: set[int] = set()
    original = store.db.transaction

    @contextlib.contextmanager
    def spy() -> Iterator[Any]:
        with original() as tx:
            used.add(id(tx._conn))  # type: ignore[attr-defined]
            yield tx

    store.db.transaction = spy  # type: ignore[method-assign]

    def work(i: int) -> None:
        for j in range(5):
            eid = f"t{i}-{j}"
            store.add(envelope_id=eid, peer="p", direction="outgoing", kind="request",
                      state="sent", envelope=b"x")
            # committed on return: this thread's own (reader) connection sees it now
            seen.append(store.view(eid).initiated() is not None)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 20 and all(seen)
    assert len(used) == 1  # every write transaction on the one writer connection
    assert store.count() == 20
    store.close()
    # twin: a closed store refuses writes (no connection is opened again)
    with pytest.raises(StoreError, match="closed"):
        store.add(envelope_id="late", peer="p", direction="outgoing", kind="request",
                  state="sent", envelope=b"x")
