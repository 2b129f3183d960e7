"""kill -9 of the beneficiary at seeded points: what runs once, what at least once.

Bob runs in a child process (``kill9_node.py``) that SIGKILLs itself at the N-th time
it reaches a point (``received``, ``claimed``, ``handled`` = handler returned but reply
not committed, ``committed`` = reply committed but not sent). Alice, in this process,
retries every unacknowledged transfer on the next Bob, alternately re-sealed with the
same id (``send(envelope_id=...)``) and as the same bytes (``resend``).

Targets: handler runs per idempotency key are 1, or 2 only for kills at ``handled``
(then attempts 1 and 2); a kill at ``claimed`` gives one run with attempt 2; every
acknowledged transfer is in Bob's store with exactly one request and one reply.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import Result, scaled

NAME = "kill9"
HERE = Path(__file__).resolve().parent
POINTS = ("received", "claimed", "handled", "committed")
SEED = 20261130


class Bob:
    """One life of the beneficiary child."""

    def __init__(self, config: dict[str, Any], path: Path, kill: str | None) -> None:
        path.write_text(json.dumps(config))
        env = dict(os.environ)
        env.pop("TRISA_SOAK_KILL", None)
        if kill:
            env["TRISA_SOAK_KILL"] = kill
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "kill9_node.py"), str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "READY":
            self.stop()
            raise RuntimeError(f"kill9_node did not start: {line}")
        self.port = int(line[1])

    def stop(self) -> int:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def setup(work: Path) -> tuple[Any, dict[str, Any]]:
    from trisa_peer.certs import write_identity
    from trisa_peer.testing.network import SimulatedNetwork

    net = SimulatedNetwork(work / "net").start()
    write_identity(net.bob.identity, work / "bob.pem", work / "bob.key")
    (work / "trust.pem").write_bytes(net.pool.pem())
    config = {
        "cert": str(work / "bob.pem"), "key": str(work / "bob.key"),
        "trust": str(work / "trust.pem"), "directory": net.directory_endpoint,
        "resolve": net.resolve, "store": str(work / "bob.db"), "runs": str(work / "runs.txt"),
    }
    return net, config


def point_at(net: Any, port: int) -> None:
    alice = net.alice.node
    endpoint = f"{net.bob.common_name}:{net.bob.port}".lower()
    alice.resolver.resolve[endpoint] = f"127.0.0.1:{port}"
    alice.connector.forget(net.bob.common_name)


def payload(net: Any, i: int) -> Any:
    from trisa_peer.testing.cast import BOOK
    from trisa_peer.testing.policies import originator_payload

    o = BOOK.wallets_of(net.alice.common_name)[1]
    b = BOOK.wallets_of(net.bob.common_name)[0]
    p = originator_payload(o, b, sent_at=datetime.now(UTC))
    p.identity.value += b""  # the same object is kept for every retry of transfer i
    return p


def expected_runs(kills: list[str]) -> list[int]:
    """The attempts the handler must have run with, given the kills a transfer saw."""
    attempt, runs = 0, []
    for point in kills:
        if point == "received":
            continue
        attempt += 1
        if point in ("handled", "committed"):
            runs.append(attempt)
        if point == "committed":
            return runs  # the reply is stored: every retry is answered from the store
    return [*runs, attempt + 1]


def run(scale: float) -> Result:
    from trisa_peer.network.service import idempotency_key, payload_digest
    from trisa_peer.network.store import TransferStore

    result = Result(NAME)
    kills = scaled(50, scale, minimum=len(POINTS))
    rng = random.Random(SEED)
    plan = [POINTS[i % len(POINTS)] for i in range(kills)]
    rng.shuffle(plan)
    specs = [f"{p}:{rng.randint(1, 3)}" for p in plan]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="soak-kill9-") as tmp:
        work = Path(tmp)
        net, config = setup(work)
        try:
            peer = net.bob.common_name
            alice = net.alice.node
            directory_id = net.directory_client().lookup(common_name=net.alice.common_name).id
            transfers: list[tuple[str, Any]] = []  # (envelope id, payload)
            acked: set[str] = set()
            kill_of: dict[str, list[str]] = defaultdict(list)  # envelope id -> kills in it
            resends = reseals = 0
            pending: str | None = None  # the unacknowledged transfer to retry first
            lives = [*specs, None]
            for life, spec in enumerate(lives):
                bob = Bob(config, work / f"bob-{life}.json", spec)
                point_at(net, bob.port)
                died = False
                while not died:
                    if pending is not None:
                        eid = pending
                        body = dict(transfers)[eid]
                    else:
                        if spec is None and len(transfers) >= kills + 5:
                            break
                        eid = ""
                        body = payload(net, len(transfers))
                    try:
                        if not eid:
                            res = alice.send(peer, body)
                            transfers.append((res.envelope_id, body))
                            eid = res.envelope_id
                        elif (resends + reseals) % 2 == 0:
                            resends += 1
                            res = alice.resend(eid)
                        else:
                            reseals += 1
                            res = alice.send(peer, body, envelope_id=eid)
                    except Exception:  # Bob died under the call: not acknowledged
                        if not eid:
                            latest = alice.store.summaries(limit=1)
                            eid = latest[0].envelope_id if latest else ""
                            if eid and eid not in dict(transfers):
                                transfers.append((eid, body))
                        if bob.proc.poll() is None:
                            time.sleep(0.2)
                        if bob.proc.poll() is None:
                            raise
                        pending = eid
                        if spec is not None:
                            kill_of[eid].append(spec.split(":")[0])
                        died = True
                        continue
                    if res.state != "accepted":
                        raise RuntimeError(f"transfer {eid}: {res.describe()}")
                    acked.add(eid)
                    pending = None
                code = bob.stop()
                if spec is not None and code != -9:
                    raise RuntimeError(f"life {life} ({spec}) ended with {code}, not SIGKILL")
            runs: dict[str, list[int]] = defaultdict(list)
            for line in Path(config["runs"]).read_text().splitlines():
                key, attempt, _eid = line.split()
                runs[key].append(int(attempt))
            store = TransferStore(config["store"])
            bad_runs = lost = dup = 0
            examples: list[str] = []
            by_count: Counter[int] = Counter()
            for eid, body in transfers:
                key = idempotency_key(directory_id, eid, payload_digest(body))
                attempts = runs.get(key, [])
                by_count[len(attempts)] += 1
                points = kill_of.get(eid, [])
                expected = expected_runs(points)
                if eid in acked and attempts != expected:
                    bad_runs += 1
                    if len(examples) < 3:
                        examples.append(f"{points}:{attempts}")
                rows = store.exchange(eid)
                requests = [r for r in rows if r.kind == "request"]
                replies = [r for r in rows if r.kind == "reply"]
                if eid in acked and not replies:
                    lost += 1
                if len(requests) > 1 or len(replies) > 1:
                    dup += 1
            store.close()
        finally:
            net.stop()
    result.figure("kills", len(specs))
    result.figure("kills_by_point", dict(Counter(s.split(":")[0] for s in specs)))
    result.figure("transfers", len(transfers))
    result.figure("acknowledged", len(acked))
    result.figure("retries_resend_same_bytes", resends)
    result.figure("retries_resealed", reseals)
    result.figure("keys_by_handler_runs", {str(k): v for k, v in sorted(by_count.items())})
    result.figure("double_runs", by_count.get(2, 0))
    result.figure("extra_runs", sum((n - 1) * c for n, c in by_count.items() if n > 1))
    result.figure("runs_not_as_expected", bad_runs)
    if examples:
        result.figure("unexpected_examples", examples)
    result.figure("acknowledged_lost", lost)
    result.figure("duplicated_rows", dup)
    result.figure("seconds", round(time.monotonic() - started, 1))
    result.target("kills", ">=", kills)
    result.target("acknowledged", "==", len(transfers))
    result.target("runs_not_as_expected", "==", 0)
    result.target("acknowledged_lost", "==", 0)
    result.target("duplicated_rows", "==", 0)
    # every run beyond the first is explained by a kill between handler return and commit
    result.target("extra_runs", "<=", sum(1 for s in specs if s.startswith("handled")))
    return result
