"""The transfer store on both backends: the transfers table, paging by key, schema
upgrades of old SQLite files, durability settings, and replicas on one database
(two store objects, or a second process killed with -9) racing for one message."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from trisa_peer.errors import ConfigurationError, StoreError
from trisa_peer.network.store import SCHEMA_VERSION, TransferStore, open_store

_REQ = dict(request=b"r", request_digest="d", payload_digest="x")


def _reference(store: TransferStore) -> list[tuple[Any, ...]]:
    """``transfers list`` as the aggregate over every envelope (the old query)."""
    rows = store.db.read(
        "SELECT e.envelope_id, "
        "(SELECT f.peer FROM envelopes f WHERE f.envelope_id = e.envelope_id ORDER BY f.seq "
        "LIMIT 1), (SELECT f.direction FROM envelopes f WHERE f.envelope_id = e.envelope_id "
        "ORDER BY f.seq LIMIT 1), (SELECT r.state FROM envelopes r WHERE r.envelope_id = "
        "e.envelope_id AND r.kind = 'request' ORDER BY r.seq DESC LIMIT 1), COUNT(*), "
        "MIN(e.created_at), MAX(e.updated_at), MAX(e.seq) FROM envelopes e "
        "GROUP BY e.envelope_id ORDER BY MAX(e.seq) DESC")
    return [tuple(r) for r in rows]


def _listed(store: TransferStore, **kw: Any) -> list[tuple[Any, ...]]:
    return [(s.envelope_id, s.peer, s.direction, s.state, s.messages, s.first_at, s.last_at,
             s.key) for s in store.summaries(limit=1000, **kw)]


def _history(store: TransferStore) -> None:
    """Every kind of write the node makes."""
    out = store.add(envelope_id="o1", peer="bob", direction="outgoing", kind="request",
                    state="sent", envelope=b"o")
    store.add_reply(out, state="pending", envelope=b"p", direction="incoming")
    claim = store.claim(envelope_id="i1", peer="alice", **_REQ)  # type: ignore[arg-type]
    store.add_reply(claim.seq, state="accepted", envelope=b"a", direction="outgoing",
                    origin=(out, "accepted", 0))
    store.release(claim)
    store.add_exchange(envelope_id="i2", peer="carol", request=b"", request_digest="z",
                       reply=b"no", state="rejected", error_code=4)
    pending = store.claim(envelope_id="i3", peer="alice", request=b"q", request_digest="d3",
                          payload_digest="y")
    store.add_reply(pending.seq, state="pending", envelope=b"w", direction="outgoing",
                    pending=("2099-01-01T00:00:00Z", ""))
    store.release(pending)
    store.set_resolution(pending.seq, "accept")
    store.set_state(pending.seq, "accepted", error_code=0)


def test_transfers_table_follows_every_write(db_location: str) -> None:
    store = TransferStore(db_location)
    _history(store)
    listed = _listed(store)
    assert listed == _reference(store)
    assert [r[0] for r in listed] == ["i3", "i2", "i1", "o1"]
    assert listed[3][3] == "accepted"  # o1: its request's state, changed by i1's origin
    # twin: a row written behind the store's back is not in the table (it is not a view)
    with store.db.transaction() as tx:
        tx.execute("UPDATE envelopes SET state = 'x' WHERE envelope_id = 'i1'")
    assert _listed(store) != _reference(store)
    store.close()


def test_listing_pages_by_key_and_by_peer(db_location: str) -> None:
    store = TransferStore(db_location)
    for i in range(7):
        store.add(envelope_id=f"t{i}", peer="bob" if i % 2 else "carol",
                  direction="outgoing", kind="request", state="sent", envelope=b"x")
    first = store.summaries(limit=3)
    assert [s.envelope_id for s in first] == ["t6", "t5", "t4"]
    second = store.summaries(limit=3, before=first[-1].key)
    assert [s.envelope_id for s in second] == ["t3", "t2", "t1"]
    assert [s.envelope_id for s in store.summaries(limit=3, before=second[-1].key)] == ["t0"]
    bobs = store.summaries(peer="bob", limit=2)
    assert [s.envelope_id for s in bobs] == ["t5", "t3"]
    assert [s.envelope_id for s in store.summaries(peer="bob", before=bobs[-1].key)] == ["t1"]
    # twin: without --before the newest come first again
    assert store.summaries(limit=1)[0].envelope_id == "t6"
    store.close()


def test_pruned_rejection_records_leave_the_transfers_table(db_location: str) -> None:
    store = TransferStore(db_location, max_rejections=1)
    for i in range(3):
        store.add_exchange(envelope_id=f"bad{i}", peer="mallory", request=b"",
                           request_digest=f"d{i}", reply=b"no", state="rejected", error_code=4)
    store.add(envelope_id="kept", peer="bob", direction="outgoing", kind="request",
              state="sent", envelope=b"x")
    assert store.prune_rejections() == 2
    assert [r[0] for r in _listed(store)] == ["kept", "bad2"]
    assert _listed(store) == _reference(store)
    store.close()


# ------------------------------------------------------------------ schema upgrades

_V2_FILE = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (2);
CREATE TABLE envelopes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, envelope_id TEXT NOT NULL, peer TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
    kind TEXT NOT NULL CHECK (kind IN ('request', 'reply')), state TEXT NOT NULL,
    error_code INTEGER NOT NULL DEFAULT 0, digest TEXT NOT NULL,
    reply_to INTEGER REFERENCES envelopes(seq), envelope BLOB NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    payload_digest TEXT NOT NULL DEFAULT '', attempt INTEGER NOT NULL DEFAULT 0,
    deadline TEXT, resolver TEXT NOT NULL DEFAULT '', resolution TEXT NOT NULL DEFAULT '');
CREATE UNIQUE INDEX incoming_requests ON envelopes (peer, envelope_id, digest)
    WHERE direction = 'incoming' AND kind = 'request';
INSERT INTO envelopes (envelope_id, peer, direction, kind, state, digest, reply_to, envelope,
    created_at, updated_at, payload_digest, attempt) VALUES
    ('e1', 'alice', 'incoming', 'request', 'claimed', 'd', NULL, x'01',
     '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 'x', 1),
    ('e2', 'bob', 'outgoing', 'request', 'sent', 'd2', NULL, x'02',
     '2026-01-02T00:00:00Z', '2026-01-02T00:00:00Z', '', 0),
    ('e2', 'bob', 'incoming', 'reply', 'accepted', 'd3', 2, x'03',
     '2026-01-02T00:00:01Z', '2026-01-02T00:00:01Z', '', 0);
"""


def _old_file(path: Path, script: str) -> None:
    db = sqlite3.connect(path)
    db.executescript(script)
    db.close()


def test_a_version_2_file_upgrades_with_its_transfers_backfilled(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    _old_file(path, _V2_FILE)
    store = TransferStore(path)
    assert store.db.read("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)] == [(5,)]
    assert [(s.envelope_id, s.peer, s.state, s.messages) for s in store.summaries()] == [
        ("e2", "bob", "sent", 2), ("e1", "alice", "claimed", 1)]
    # the unfinished claim of the old file is taken again (its holder is long gone)
    again = store.claim(envelope_id="e1", peer="alice", request=b"\x01", request_digest="d",
                        payload_digest="x")
    assert (again.seq, again.attempt, again.busy) == (1, 2, False)
    store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    _old_file(path, _V2_FILE.replace("VALUES (2)", f"VALUES ({SCHEMA_VERSION + 1})"))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        TransferStore(path)
    # twin: the version this code knows opens
    _old_file(tmp_path / "ok.db", _V2_FILE)
    TransferStore(tmp_path / "ok.db").close()


def test_durable_commits_by_default_on_both_backends(db_location: str) -> None:
    for durable in (True, False):
        store = TransferStore(db_location, durable=durable)
        with store.db.transaction() as tx:
            if tx.backend == "sqlite":
                row = tx.one("PRAGMA synchronous")
                assert row == ((2,) if durable else (1,))  # FULL / NORMAL
            else:
                row = tx.one("SHOW synchronous_commit")
                assert row == (("on",) if durable else ("off",))
        store.close()


def test_open_store_refuses_what_is_not_a_transfer_store(db_location: str) -> None:
    with pytest.raises(ConfigurationError, match="no such transfer store"):
        open_store(db_location, existing=True)
    if "://" not in db_location:
        assert not Path(db_location).exists()  # nothing was created
    TransferStore(db_location).close()
    # twin: once created it opens
    open_store(db_location, existing=True).close()


# ------------------------------------------------------------------ replicas


def _run_once(store: TransferStore, runs: list[str], name: str, gate: threading.Barrier,
              answers: list[bytes]) -> None:
    """What ``Exchange`` does with one message: claim; busy -> wait, claim again;
    answered -> the stored reply; otherwise run the handler and commit its reply."""
    gate.wait()
    claim = store.claim(envelope_id="race", peer="alice", **_REQ)  # type: ignore[arg-type]
    if claim.busy:
        assert store.wait(claim, 30)
        claim = store.claim(envelope_id="race", peer="alice", **_REQ)  # type: ignore[arg-type]
    if claim.reply is not None:
        answers.append(claim.reply.envelope)
        return
    try:
        runs.append(name)
        store.add_reply(claim.seq, state="accepted", envelope=f"by {name}".encode(),
                        direction="outgoing")
        answers.append(f"by {name}".encode())
    finally:
        store.release(claim)


def test_two_replicas_racing_one_claim_run_the_handler_once(db_location: str) -> None:
    replicas = [TransferStore(db_location), TransferStore(db_location)]
    for round_ in range(5):
        with replicas[0].db.transaction() as tx:
            tx.execute("DELETE FROM envelopes")
            tx.execute("DELETE FROM transfers")
        runs: list[str] = []
        answers: list[bytes] = []
        gate = threading.Barrier(6)
        threads = [threading.Thread(target=_run_once,
                                    args=(replicas[i % 2], runs, f"r{i % 2}", gate, answers))
                   for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(runs) == 1, (round_, runs)
        assert answers == [f"by {runs[0]}".encode()] * 6
        rows = replicas[1].exchange("race")
        assert [r.kind for r in rows] == ["request", "reply"] and rows[0].attempt == 1
    for store in replicas:
        store.close()


def test_a_live_holder_makes_the_claim_busy_a_closed_one_frees_it(db_location: str) -> None:
    first, second = TransferStore(db_location), TransferStore(db_location)
    held = first.claim(envelope_id="e", peer="p", **_REQ)  # type: ignore[arg-type]
    busy = second.claim(envelope_id="e", peer="p", **_REQ)  # type: ignore[arg-type]
    assert busy.busy and busy.seq == held.seq
    if "://" not in db_location:  # the holder side file is the owner's only
        assert Path(f"{db_location}-holders").stat().st_mode & 0o777 == 0o600
    assert not second.wait(busy, 0)
    first.close()  # what a dead process's connection or file lock does
    assert second.wait(busy, 30)
    taken = second.claim(envelope_id="e", peer="p", **_REQ)  # type: ignore[arg-type]
    assert (taken.seq, taken.attempt, taken.busy) == (held.seq, 2, False)
    second.close()


_HOLDER = """
import sys
from trisa_peer.network.store import TransferStore
store = TransferStore(sys.argv[1])
claim = store.claim(envelope_id="k", peer="p", request=b"r", request_digest="d",
                    payload_digest="x")
print("HELD", claim.attempt, flush=True)
sys.stdin.read()
"""


def test_a_claim_held_by_a_killed_process_is_taken_over(db_location: str) -> None:
    TransferStore(db_location).close()
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, db_location],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().split() == ["HELD", "1"]
        store = TransferStore(db_location)
        busy = store.claim(envelope_id="k", peer="p", **_REQ)  # type: ignore[arg-type]
        assert busy.busy  # the twin: alive, it is not taken
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        assert store.wait(busy, 30)
        taken = store.claim(envelope_id="k", peer="p", **_REQ)  # type: ignore[arg-type]
        assert (taken.attempt, taken.busy) == (2, False)
        store.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)


def test_two_replicas_storing_one_rejection_keep_one_record(db_location: str) -> None:
    replicas = [TransferStore(db_location), TransferStore(db_location)]
    gate = threading.Barrier(8)
    results: list[int | None] = []

    def store_it(store: TransferStore) -> None:
        gate.wait()
        results.append(store.add_exchange(envelope_id="dup", peer="p", request=b"",
                                          request_digest="same", reply=b"no",
                                          state="rejected", error_code=4))

    threads = [threading.Thread(target=store_it, args=(replicas[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results, key=lambda r: r is None)[0] is not None
    assert results.count(None) == 7
    assert replicas[0].count() == 2
    for store in replicas:
        store.close()


def test_rejection_retention_uses_the_store_clock_cutoff(db_location: str) -> None:
    store = TransferStore(db_location, keep_rejections=timedelta(days=1))
    store.add_exchange(envelope_id="old", peer="m", request=b"", request_digest="o",
                       reply=b"no", state="rejected", error_code=4)
    assert store.prune_rejections(now=datetime.now(UTC)) == 0  # twin: not old yet
    assert store.prune_rejections(now=datetime.now(UTC) + timedelta(days=2)) == 1
    assert store.summaries() == []
    store.close()


def test_a_random_id_lists_nothing(db_location: str) -> None:
    store = TransferStore(db_location)
    _history(store)
    assert store.summaries(peer=str(uuid.uuid4())) == []
    assert len(store.summaries(peer="alice")) == 2
    store.close()


def test_exclusive_queues_replicas_on_one_peer_and_id(db_location: str) -> None:
    first, second = TransferStore(db_location), TransferStore(db_location)
    with first.exclusive("p", "e", 0) as mine:
        assert mine
        with second.exclusive("p", "e", 0) as theirs:
            assert not theirs  # held by a live replica
        with second.exclusive("p", "other", 0) as other:
            assert other  # twin: another id passes
    with second.exclusive("p", "e", 0) as theirs:
        assert theirs  # released: the next one gets it
    first.close()
    second.close()


def test_the_pending_loop_query_reads_the_pending_index(tmp_path: Path) -> None:
    """pending() runs every second: its plan must use the partial index, not scan the
    store. Twin: the same query on the same file without the index is a table scan."""
    path = tmp_path / "t.db"
    store = TransferStore(path)
    store.close()
    query = ("EXPLAIN QUERY PLAN SELECT seq FROM envelopes "
             "WHERE kind = 'request' AND state = 'pending' ORDER BY seq")
    db = sqlite3.connect(path)
    try:
        plan = " ".join(str(row[3]) for row in db.execute(query))
        assert "pending_requests" in plan, plan
        db.execute("DROP INDEX pending_requests")
        db.close()
        db = sqlite3.connect(path)  # a fresh connection: no statement prepared before
        plan = " ".join(str(row[3]) for row in db.execute(query))
        assert "pending_requests" not in plan and "SCAN envelopes" in plan, plan
    finally:
        db.close()
