"""Retention and audit (issue 15 §6), on SQLite and PostgreSQL (``db_location``).

- ``TransferStore.purge``: a transfer older than the retention period loses its envelope
  bytes and keeps its audit record; the twins: one younger than the period is kept
  whole, one still pending (or claimed) is kept whole however old, and a batch bound
  purges at most that many per pass;
- purged rows are not rejection records: the rejection prune never deletes them;
- ``TransferStore.audit`` / ``transfers export``: JSON lines with exactly the audit
  fields, a purged transfer still listed (``stored`` false), never envelope bytes,
  payloads or a rejection's message; ``--since`` filters; an existing ``--out`` file
  is refused and nothing is half-written;
- ``transfers purge`` on demand, its argument errors (exit 2, one line);
- the node's periodic purge (:class:`RetentionPurger`) and ``serve --retention-days``.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import PKI, CliResult

from trisa_peer.errors import StoreError
from trisa_peer.network.retention import RetentionPurger
from trisa_peer.network.store import AUDIT_FIELDS, TransferStore

_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"
_SECRET = b"customer personal data: Alice Liddell, 1 Rabbit Hole"


def _age(store: TransferStore, envelope_id: str, days: float) -> None:
    """Make every envelope of ``envelope_id`` (and its transfers row) ``days`` old."""
    when = (datetime.now(UTC) - timedelta(days=days)).strftime(_FMT)
    with store.db.transaction() as tx:
        tx.execute("UPDATE envelopes SET created_at = ?, updated_at = ? WHERE envelope_id = ?",
                   (when, when, envelope_id))
        tx.execute("UPDATE transfers SET first_at = ?, last_at = ? WHERE envelope_id = ?",
                   (when, when, envelope_id))


def _accepted(store: TransferStore, envelope_id: str) -> None:
    claim = store.claim(envelope_id=envelope_id, peer="alice", request=_SECRET,
                        request_digest=f"d-{envelope_id}", payload_digest=f"p-{envelope_id}")
    store.add_reply(claim.seq, state="accepted", envelope=_SECRET + b" reply",
                    direction="outgoing")
    store.release(claim)


def _pending(store: TransferStore, envelope_id: str) -> int:
    claim = store.claim(envelope_id=envelope_id, peer="alice", request=_SECRET,
                        request_digest=f"d-{envelope_id}", payload_digest=f"p-{envelope_id}")
    store.add_reply(claim.seq, state="pending", envelope=b"held", direction="outgoing",
                    pending=("2099-01-01T00:00:00Z", ""))
    store.release(claim)
    return claim.seq


def _handler_rejected(store: TransferStore, envelope_id: str) -> None:
    claim = store.claim(envelope_id=envelope_id, peer="bob", request=_SECRET,
                        request_digest=f"d-{envelope_id}", payload_digest=f"p-{envelope_id}")
    store.add_reply(claim.seq, state="rejected", envelope=b"no", direction="outgoing",
                    error_code=50)
    store.release(claim)


def _bytes(store: TransferStore, envelope_id: str) -> list[bytes]:
    return [row.envelope for row in store.exchange(envelope_id)]


# --------------------------------------------------------------------------- purge


def test_purge_takes_old_bytes_and_keeps_young_and_pending_whole(db_location: str) -> None:
    store = TransferStore(db_location)
    for envelope_id in ("old", "young", "old-pending", "old-claimed"):
        if envelope_id == "old-pending":
            _pending(store, envelope_id)
        elif envelope_id == "old-claimed":  # the handler runs right now
            store.claim(envelope_id=envelope_id, peer="alice", request=_SECRET,
                        request_digest="dc", payload_digest="pc")
        else:
            _accepted(store, envelope_id)
    for envelope_id in ("old", "old-pending", "old-claimed"):
        _age(store, envelope_id, 40)
    _age(store, "young", 20)
    before = {e: [(r.seq, r.state, r.digest, r.created_at) for r in store.exchange(e)]
              for e in ("old", "young")}

    assert store.purge(timedelta(days=30)) == 1
    assert _bytes(store, "old") == [b"", b""]
    assert _bytes(store, "young") == [_SECRET, _SECRET + b" reply"]  # younger: whole
    assert _bytes(store, "old-pending") == [_SECRET, b"held"]  # pending: whole
    assert _bytes(store, "old-claimed") == [_SECRET]  # claimed: whole
    # the audit record stays: ids, peers, states, digests, times
    assert [(r.seq, r.state, r.digest, r.created_at)
            for r in store.exchange("old")] == before["old"]
    assert [s.envelope_id for s in store.summaries()].count("old") == 1
    assert store.purge(timedelta(days=30)) == 0  # nothing left to purge: idempotent
    # the younger one goes once it is old enough, the pending one once it is decided
    assert store.purge(timedelta(days=10)) == 1
    assert _bytes(store, "young") == [b"", b""]
    store.close()


def test_a_pending_transfer_is_purged_only_once_decided(db_location: str) -> None:
    store = TransferStore(db_location)
    seq = _pending(store, "p")
    _age(store, "p", 90)
    assert store.purge(timedelta(days=1)) == 0
    assert _bytes(store, "p") == [_SECRET, b"held"]
    store.set_state(seq, "accepted", error_code=0)
    _age(store, "p", 90)
    assert store.purge(timedelta(days=1)) == 1
    assert _bytes(store, "p") == [b"", b""]
    store.close()


def test_purge_is_bounded_per_pass(db_location: str) -> None:
    store = TransferStore(db_location)
    for i in range(5):
        _accepted(store, f"t{i}")
        _age(store, f"t{i}", 100 - i)  # t0 is the oldest
    assert store.purge(timedelta(days=1), batch=2) == 2
    assert [bool(_bytes(store, f"t{i}")[0]) for i in range(5)] == [
        False, False, True, True, True]  # the oldest first
    assert store.purge(timedelta(days=1), batch=2) == 2
    assert store.purge(timedelta(days=1), batch=2) == 1
    assert store.purge(timedelta(days=1), batch=2) == 0
    with pytest.raises(StoreError, match="positive age and batch"):
        store.purge(timedelta(0))
    with pytest.raises(StoreError, match="positive age and batch"):
        store.purge(timedelta(days=1), batch=0)
    store.close()


def test_purged_rows_are_not_pruned_as_rejection_records(db_location: str) -> None:
    store = TransferStore(db_location, max_rejections=0)
    _handler_rejected(store, "business")  # a handler's rejection: kept whole until purged
    store.add_exchange(envelope_id="junk", peer="mallory", request=b"", request_digest="j",
                       reply=b"refused", state="rejected", error_code=4)
    _age(store, "business", 40)
    assert store.rejection_records() == 1  # only the refused input
    assert store.purge(timedelta(days=30)) == 1
    assert _bytes(store, "business") == [b"", b""]
    assert store.rejection_records() == 1  # the purged request is no rejection record
    assert store.prune_rejections() == 1  # the refused input goes (max_rejections=0) ...
    assert [r.state for r in store.exchange("business")] == ["rejected", "rejected"]  # ... not it
    assert store.exchange("junk") == []
    store.close()


# --------------------------------------------------------------------------- audit


def test_audit_lists_a_purged_transfer_without_bytes(db_location: str) -> None:
    store = TransferStore(db_location)
    _accepted(store, "kept")
    _accepted(store, "gone")
    _age(store, "gone", 40)
    store.purge(timedelta(days=30))
    records = list(store.audit(page=1))  # one row per page: paging reaches every row
    assert [(r["envelope_id"], r["kind"], r["stored"]) for r in records] == [
        ("kept", "request", True), ("kept", "reply", True),
        ("gone", "request", False), ("gone", "reply", False)]
    for record in records:
        assert tuple(record) == AUDIT_FIELDS
        assert _SECRET.decode() not in json.dumps(record)
    gone = records[2]
    assert gone["purged_at"] is not None and gone["peer"] == "alice"
    assert gone["state"] == "accepted" and gone["error_code"] == 0
    assert gone["digest"] == "d-gone" and gone["payload_digest"] == "p-gone"
    assert records[0]["purged_at"] is None
    # --since: only envelopes created at or after it
    since = (datetime.now(UTC) - timedelta(days=1)).strftime(_FMT)
    assert {r["envelope_id"] for r in store.audit(since=since)} == {"kept"}
    store.close()


# --------------------------------------------------------------------------- periodic


def test_the_periodic_purger_runs_bounded_passes(db_location: str) -> None:
    store = TransferStore(db_location)
    for i in range(3):
        _accepted(store, f"t{i}")
        _age(store, f"t{i}", 10)
    _accepted(store, "young")
    passes: list[int] = []
    done = threading.Event()

    def seen(count: int) -> None:
        passes.append(count)
        if sum(passes) >= 3:
            done.set()

    purger = RetentionPurger(store, older_than=timedelta(days=5), interval=0.01, batch=2,
                             on_pass=seen)
    purger.start()
    try:
        assert done.wait(30)
    finally:
        purger.stop()
    assert passes[:2] == [2, 1] and all(n <= 2 for n in passes)
    assert [bool(_bytes(store, f"t{i}")[0]) for i in range(3)] == [False] * 3
    assert _bytes(store, "young")[0] == _SECRET
    assert not purger.running
    store.close()


def test_the_purger_refuses_a_bad_period(db_location: str) -> None:
    store = TransferStore(db_location)
    with pytest.raises(StoreError, match="retention"):
        RetentionPurger(store, older_than=timedelta(0))
    RetentionPurger(store, older_than=timedelta(days=1))  # the accepted twin
    store.close()


# --------------------------------------------------------------------------- CLI


def _store_file(tmp_path: Path) -> tuple[str, TransferStore]:
    path = str(tmp_path / "node.db")
    store = TransferStore(path)
    _accepted(store, "kept")
    _accepted(store, "gone")
    _pending(store, "waiting")
    _age(store, "gone", 40)
    _age(store, "waiting", 40)
    return path, store


def test_transfers_purge_and_export_on_the_command_line(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    db, store = _store_file(tmp_path)
    out = trisa_peer_cli("transfers", "purge", "--older-than", "30", "--db", db)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ("purged the envelopes of 1 transfer(s) last active more than 30 "
                          "days ago (pending ones kept)\n")
    assert _bytes(store, "gone") == [b"", b""] and _bytes(store, "kept")[0] == _SECRET
    assert _bytes(store, "waiting")[0] == _SECRET

    printed = trisa_peer_cli("transfers", "export", "--db", db)
    assert printed.returncode == 0, printed.stderr
    lines = [json.loads(line) for line in printed.stdout.splitlines()]
    assert {(r["envelope_id"], r["stored"]) for r in lines} == {
        ("kept", True), ("gone", False), ("waiting", True)}
    assert "Alice Liddell" not in printed.stdout

    target = tmp_path / "audit" / "trail.jsonl"
    target.parent.mkdir()
    written = trisa_peer_cli("transfers", "export", "--db", db, "--out", target,
                             "--since", "2000-01-01")
    assert written.returncode == 0, written.stderr
    assert target.read_text() == printed.stdout
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert written.stdout == f"wrote {len(lines)} audit records to {target}\n"
    # the twin: an existing file is refused, left as it was, nothing else written
    again = trisa_peer_cli("transfers", "export", "--db", db, "--out", target)
    assert again.returncode == 1
    assert again.stderr == f"trisa-peer: error: {target} exists; refusing to overwrite it\n"
    assert target.read_text() == printed.stdout
    assert sorted(p.name for p in target.parent.iterdir()) == ["trail.jsonl"]
    # --since filters
    future = trisa_peer_cli("transfers", "export", "--db", db, "--since", "2999-01-01")
    assert future.returncode == 0 and future.stdout == ""
    store.close()


@pytest.mark.parametrize(("argv", "message"), [
    (["purge", "--older-than", "0"], "--older-than: must be positive: '0'"),
    (["purge", "--older-than", "x"], "--older-than: not a number: 'x'"),
    (["purge", "--older-than", "30", "--batch", "0"], "--batch: must be positive: '0'"),
    (["export", "--since", "yesterday"],
     "--since: not a UTC date or time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ): 'yesterday'"),
])
def test_transfers_purge_and_export_refuse_bad_arguments(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path, argv: list[str], message: str
) -> None:
    db, store = _store_file(tmp_path)
    out = trisa_peer_cli("transfers", *argv, "--db", db)
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1].endswith(f"error: argument {message}")
    assert "Traceback" not in out.stderr
    assert _bytes(store, "gone")[0] == _SECRET  # nothing purged
    store.close()


def test_transfers_purge_refuses_a_missing_store(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    out = trisa_peer_cli("transfers", "purge", "--older-than", "30",
                         "--db", tmp_path / "none.db")
    assert out.returncode == 1
    assert out.stderr == f"trisa-peer: error: {tmp_path / 'none.db'}: no such transfer store\n"
    assert not (tmp_path / "none.db").exists()


# --------------------------------------------------------------------------- serve


def _serve_args(db: str) -> list[str]:
    return ["--listen", "127.0.0.1:0", "--cert", str(PKI / "bob.pem"), "--key",
            str(PKI / "bob.key"), "--trust", str(PKI / "trust.pem"), "--directory",
            "127.0.0.1:1", "--directory-insecure", "--directory-timeout", "1", "--db", db,
            "--policy", "accept"]


@pytest.mark.slow
def test_serve_purges_periodically_with_retention_days(tmp_path: Path) -> None:
    db, store = _store_file(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "trisa_peer", "serve", *_serve_args(db),
                             "--retention-days", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving on port" in line, proc.stderr.read() if proc.stderr else line
        for _ in range(600):  # the first pass runs at start; wait for it (bounded)
            if _bytes(store, "gone")[0] == b"":
                break
            threading.Event().wait(0.05)
        assert _bytes(store, "gone") == [b"", b""]
        assert _bytes(store, "kept")[0] == _SECRET  # younger: whole
        assert _bytes(store, "waiting")[0] == _SECRET  # pending: whole
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "Traceback" not in err and "Alice Liddell" not in err
    store.close()


def test_retention_days_is_checked_as_flag_and_variable(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db, store = _store_file(tmp_path)
    zero = trisa_peer_cli("serve", *_serve_args(db), "--retention-days", "0")
    assert zero.returncode == 2
    assert zero.stderr.splitlines()[-1].endswith(
        "error: argument --retention-days: must be positive: '0'")
    monkeypatch.setenv("TRISA_PEER_RETENTION_DAYS", "soon")
    env = trisa_peer_cli("serve", *_serve_args(db))
    assert env.returncode == 1
    assert env.stderr == ("trisa-peer: error: TRISA_PEER_RETENTION_DAYS: retention_days: "
                          "not a number: "
                          "'soon'\n")
    assert _bytes(store, "gone")[0] == _SECRET  # nothing ran
    store.close()


def test_retention_days_from_the_config_file(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from trisa_peer.cli.node import _SERVE_DEFAULTS, _SERVE_OPTIONS, _SERVE_TYPES
    from trisa_peer.cli.options import apply_config

    monkeypatch.delenv("TRISA_PEER_RETENTION_DAYS", raising=False)
    config = tmp_path / "node.toml"
    config.write_text("retention_days = 90\n")
    args = argparse.Namespace(config=str(config), retention_days=None)
    apply_config(args, list(_SERVE_OPTIONS), types=_SERVE_TYPES, defaults=_SERVE_DEFAULTS)
    assert args.retention_days == 90.0
    args = argparse.Namespace(config=None, retention_days=None)  # the twin: default keeps
    apply_config(args, list(_SERVE_OPTIONS), types=_SERVE_TYPES, defaults=_SERVE_DEFAULTS)
    assert args.retention_days is None


# --------------------------------------------------------------------------- a peer's retry


def test_a_retry_of_a_purged_transfer_gets_a_rejection_not_an_empty_envelope(
    net: Any, db_location: str
) -> None:
    from test_exchange import _extra_node, _restore, bob_key, payload_for, stub

    from trisa_peer._pb.trisa.api.v1beta1 import errors_pb2
    from trisa_peer.envelope import envelope_error, seal
    from trisa_peer.network.handler import Accept

    runs: list[str] = []

    def handler(incoming: Any) -> Any:
        runs.append(incoming.envelope_id)
        return Accept()

    node = _extra_node(net, db_location, "bob", handler)
    try:
        eid = str(uuid.uuid4())
        payload = payload_for("alice.vasp.test", "bob.vasp.test")
        first = seal(payload, bob_key(net), envelope_id=eid)
        answer = stub(net).Transfer(first, timeout=10)
        assert envelope_error(answer) is None and answer.payload
        # the accepted twin: before the purge a retry gets the stored answer
        assert stub(net).Transfer(first, timeout=10) == answer
        later = datetime.now(UTC) + timedelta(days=2)
        assert node.store.purge(timedelta(days=1), now=later) == 1
        resealed = seal(payload, bob_key(net), envelope_id=eid)
        for retry in (first, resealed):  # the same bytes, and the same message re-sealed
            reply = stub(net).Transfer(retry, timeout=10)
            error = envelope_error(reply)
            assert error is not None, reply
            assert error.code == errors_pb2.Error.COMPLIANCE_PERIOD_EXCEEDED
            assert not error.retry and "retention period" in error.message
            assert reply.id == eid and not reply.payload
        assert runs == [eid]  # the handler never ran again
    finally:
        _restore(net, node)
