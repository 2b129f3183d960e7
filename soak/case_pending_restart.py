"""Pending transfers survive SIGKILL and SIGTERM of the beneficiary, and expire.

Bob (a child process, ``kill9_node.py``) answers every transfer ``Pending`` with a
resolver registered by name. Alice (this process) sends 5 transfers; Bob is killed
(SIGKILL) or stopped (SIGTERM) before deciding; one transfer is decided by the operator
(``trisa-peer transfers resolve``) while Bob is down; the next Bob asks its resolver
again and delivers every decision. Then 2 transfers with a 2 s window are never decided:
at the deadline both sides mark them expired and Alice is told with
COMPLIANCE_PERIOD_EXCEEDED.

Targets: 5/5 decisions delivered after SIGKILL and after SIGTERM (each with the state
decided); 0 transfers pending past their deadline on either side.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from case_kill9 import Bob, payload, point_at, setup
from common import Result

NAME = "pending_restart"
TRANSFERS = 5


def _code(name: str) -> int:
    from trisa_peer._pb.trisa.api.v1beta1 import errors_pb2

    return int(errors_pb2.Error.Code.Value(name))


def _wait(predicate: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


def _outgoing_state(alice: Any, eid: str) -> str:
    row = alice.store.initiated(eid)
    return row.state if row is not None else "missing"


def _restart_case(net: Any, config: dict[str, Any], work: Path, how: str) -> tuple[int, str]:
    """Returns (decisions delivered as decided, note)."""
    alice, peer = net.alice.node, net.bob.common_name
    db = str(work / f"bob-{how}.db")
    first = {**config, "store": db, "pending_resolver": "review", "pending_window": 60,
             "resolve_after": time.time() + 3600}
    bob = Bob(first, work / f"bob-{how}-1.json", None)
    point_at(net, bob.port)
    eids = []
    for i in range(TRANSFERS):
        res = alice.send(peer, payload(net, i))
        if res.state != "pending":
            raise RuntimeError(f"expected pending, got {res.describe()}")
        eids.append(res.envelope_id)
    sig = signal.SIGKILL if how == "SIGKILL" else signal.SIGTERM
    bob.proc.send_signal(sig)
    code = bob.proc.wait(timeout=20)
    expected_code = -9 if how == "SIGKILL" else 0
    if code != expected_code:
        raise RuntimeError(f"Bob ended with {code} after {how}")
    reject = _code("COMPLIANCE_CHECK_FAIL")
    decisions = {eids[0]: str(reject), eids[1]: "accept", eids[2]: "accept",
                 eids[3]: "accept", eids[4]: "wait"}
    # the operator decides the last one while Bob is down
    cli = subprocess.run(
        [sys.executable, "-m", "trisa_peer", "transfers", "resolve", eids[4], "--db", db,
         "--reject", "COMPLIANCE_CHECK_FAIL"],
        capture_output=True, text=True, timeout=60, check=False)
    if cli.returncode != 0:
        raise RuntimeError(f"transfers resolve failed: {cli.stderr.strip()}")
    second = {**first, "resolve_after": 0, "decisions": decisions}
    bob = Bob(second, work / f"bob-{how}-2.json", None)
    point_at(net, bob.port)
    want = {eids[0]: "rejected", eids[1]: "accepted", eids[2]: "accepted",
            eids[3]: "accepted", eids[4]: "rejected"}
    _wait(lambda: all(_outgoing_state(alice, e) != "pending" for e in eids), 30)
    bob.stop()
    delivered = sum(1 for e in eids if _outgoing_state(alice, e) == want[e])
    states = [_outgoing_state(alice, e) for e in eids]
    return delivered, ",".join(states)


def _expiry_case(net: Any, config: dict[str, Any], work: Path) -> dict[str, int]:
    from trisa_peer.network.store import TransferStore

    alice, peer = net.alice.node, net.bob.common_name
    db = str(work / "bob-expiry.db")
    conf = {**config, "store": db, "pending_resolver": "never", "pending_window": 2,
            "decisions": {}, "resolve_after": time.time() + 3600}
    bob = Bob(conf, work / "bob-expiry-1.json", None)
    point_at(net, bob.port)
    eids = [alice.send(peer, payload(net, i)).envelope_id for i in range(2)]
    bob.proc.send_signal(signal.SIGKILL)
    bob.proc.wait(timeout=20)
    time.sleep(2.2)  # the window closes while Bob is down
    bob = Bob(conf, work / "bob-expiry-2.json", None)
    point_at(net, bob.port)

    def told(eid: str) -> bool:
        return any(r.direction == "incoming" and r.kind == "request"
                   and r.error_code == _code("COMPLIANCE_PERIOD_EXCEEDED")
                   for r in alice.store.exchange(eid))

    _wait(lambda: all(told(e) and _outgoing_state(alice, e) == "expired" for e in eids), 15)
    bob.stop()
    store = TransferStore(db)
    bob_expired = sum(1 for e in eids
                      if any(r.state == "expired" for r in store.exchange(e)
                             if r.direction == "incoming" and r.kind == "request"))
    bob_left = _past_deadline(store)
    store.close()
    return {
        "expired_originator": sum(1 for e in eids if _outgoing_state(alice, e) == "expired"),
        "expired_beneficiary": bob_expired,
        "originator_told": sum(1 for e in eids if told(e)),
        "pending_past_deadline": bob_left + _past_deadline(alice.store),
        "expiring": len(eids),
    }


def _past_deadline(store: Any) -> int:
    from trisa_peer.clock import utcnow
    from trisa_peer.envelope import parse_timestamp

    now = utcnow()
    return sum(1 for r in store.pending()
               if r.deadline and parse_timestamp(r.deadline) < now)


def run(scale: float) -> Result:
    del scale  # 5 transfers per signal at every scale: the target is 5/5
    result = Result(NAME)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="soak-pending-") as tmp:
        work = Path(tmp)
        net, config = setup(work)
        try:
            for how in ("SIGKILL", "SIGTERM"):
                delivered, states = _restart_case(net, config, work, how)
                result.figure(f"delivered_after_{how.lower()}", f"{delivered}/{TRANSFERS}")
                result.figure(f"_n_{how.lower()}", delivered)
                if delivered != TRANSFERS:
                    result.figure(f"states_after_{how.lower()}", states)
            for key, value in _expiry_case(net, config, work).items():
                result.figure(key, value)
        finally:
            net.stop()
    result.figure("seconds", round(time.monotonic() - started, 1))
    result.target("_n_sigkill", "==", TRANSFERS)
    result.target("_n_sigterm", "==", TRANSFERS)
    result.target("expired_originator", "==", result.figures["expiring"])
    result.target("expired_beneficiary", "==", result.figures["expiring"])
    result.target("originator_told", "==", result.figures["expiring"])
    result.target("pending_past_deadline", "==", 0)
    return result
