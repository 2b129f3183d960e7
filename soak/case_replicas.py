"""Two replicas of one node behind HAProxy on one PostgreSQL database; kill -9 one.

Bob runs as two processes (``kill9_node.py`` without a fault hook) with the same
identity and the same PostgreSQL store, behind HAProxy in TCP mode (TLS passthrough:
mTLS ends at the replica). Alice sends transfers one after another; every few
transfers she drops her channel so that HAProxy spreads the connections over both
replicas. Half-way, the replica her connection reaches gets SIGKILL while a transfer
is in flight (3 ms after it was sent); Alice
retries every unacknowledged transfer (the same bytes) and HAProxy sends the retry to
the surviving replica.

Targets: every transfer acknowledged; none lost (each acknowledged transfer has its
reply in the shared store) and none stored twice (one request and one reply row);
handler runs beyond one per idempotency key only for the transfer in flight at the
kill (issue 8's at-least-once window: handler returned, reply not committed); both
replicas served transfers before the kill.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from case_kill9 import Bob, payload, point_at, setup
from common import Result, scaled
from haproxy import HAProxy

NAME = "replicas"


def _send(alice: Any, peer: str, body: Any, known: dict[str, Any]) -> tuple[str, int]:
    """Deliver one transfer, retrying what was not acknowledged: (envelope id, retries)."""
    eid, retries = "", 0
    while True:
        try:
            res = alice.send(peer, body) if not eid else alice.resend(eid)
        except Exception:
            if retries >= 30:
                raise
            if not eid:
                latest = alice.store.summaries(limit=1)
                candidate = latest[0].envelope_id if latest else ""
                eid = candidate if candidate and candidate not in known else ""
            retries += 1
            alice.connector.forget(peer)
            time.sleep(0.2)
            continue
        if res.state != "accepted":
            raise RuntimeError(f"transfer {res.envelope_id}: {res.describe()}")
        return res.envelope_id, retries


def run(scale: float) -> Result:
    from trisa_peer.network.service import idempotency_key, payload_digest
    from trisa_peer.network.store import TransferStore
    from trisa_peer.testing.postgres import TemporaryDatabase

    result = Result(NAME)
    total = scaled(300, scale, minimum=24)
    kill_at = total // 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="soak-replicas-") as tmp, \
            TemporaryDatabase("trisa_peer_replicas") as pg:
        work = Path(tmp)
        net, config = setup(work)
        config["store"] = pg.url
        replicas: list[Bob] = []
        lb: HAProxy | None = None
        try:
            for i in (1, 2):
                replicas.append(Bob({**config, "runs": str(work / f"runs-{i}.txt")},
                                    work / f"replica-{i}.json", None))
            lb = HAProxy(work, [r.port for r in replicas])
            point_at(net, lb.port)
            peer = net.bob.common_name
            alice = net.alice.node
            directory_id = net.directory_client().lookup(common_name=net.alice.common_name).id
            sent: dict[str, Any] = {}
            retries = 0
            served_before_kill = [0, 0]
            victim = replicas[0]
            last = 0  # the replica that answered the previous transfer
            for i in range(total):
                if i % 3 == 0 and i != kill_at:
                    alice.connector.forget(peer)  # a new connection: HAProxy's next replica
                counts = [_runs(work / f"runs-{n}.txt") for n in (1, 2)]
                if i == kill_at:  # kill the replica this connection reaches, mid-transfer
                    served_before_kill = counts
                    victim = replicas[last]
                    threading.Timer(0.003, os.kill, (victim.proc.pid, signal.SIGKILL)).start()
                body = payload(net, i)
                eid, tries = _send(alice, peer, body, sent)
                sent[eid] = body
                retries += tries
                after = [_runs(work / f"runs-{n}.txt") for n in (1, 2)]
                last = 0 if after[0] > counts[0] else 1 if after[1] > counts[1] else last
            victim_code = victim.proc.wait(timeout=15)
            runs: dict[str, list[int]] = defaultdict(list)
            for n in (1, 2):
                path = work / f"runs-{n}.txt"
                for line in path.read_text().splitlines() if path.exists() else []:
                    key, attempt, _eid = line.split()
                    runs[key].append(int(attempt))
            store = TransferStore(pg.url)
            lost = dup = 0
            by_count: Counter[int] = Counter()
            for eid, body in sent.items():
                by_count[len(runs.get(idempotency_key(directory_id, eid, payload_digest(body)),
                                      []))] += 1
                rows = store.exchange(eid)
                requests = [r for r in rows if r.kind == "request"]
                replies = [r for r in rows if r.kind == "reply"]
                if not replies:
                    lost += 1
                if len(requests) > 1 or len(replies) > 1:
                    dup += 1
            store.close()
        finally:
            if lb is not None:
                lb.stop()
            for replica in replicas:
                replica.stop()
            net.stop()
    result.figure("transfers", total)
    result.figure("acknowledged", len(sent))
    result.figure("victim_exit", victim_code)
    result.figure("served_before_kill", served_before_kill)
    result.figure("retries", retries)
    result.figure("keys_by_handler_runs", {str(k): v for k, v in sorted(by_count.items())})
    result.figure("extra_runs", sum((n - 1) * c for n, c in by_count.items() if n > 1))
    result.figure("never_run", by_count.get(0, 0))
    result.figure("acknowledged_lost", lost)
    result.figure("duplicated_rows", dup)
    result.figure("seconds", round(time.monotonic() - started, 1))
    result.figure("min_served_before_kill", min(served_before_kill))
    result.target("acknowledged", "==", total)
    result.target("victim_exit", "==", -9)
    result.target("acknowledged_lost", "==", 0)
    result.target("duplicated_rows", "==", 0)
    result.target("never_run", "==", 0)
    result.target("extra_runs", "<=", 1)  # only the transfer in flight at the kill
    result.target("min_served_before_kill", ">=", 1)
    result.target("retries", ">=", 1)  # the kill hit the connection in use
    return result


def _runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0
