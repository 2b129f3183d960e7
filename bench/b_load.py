"""B10 (issue 16 section 3): Transfer throughput and latency at 1, 8, 32 and 64 senders.

Standalone (``bench/run.py`` integrates it): ``.venv/bin/python bench/b_load.py [--out F]``.
RSA-4096 identities from the simulated network (as bench/run.py builds it), all
verification on, durable commits (the default). Bob is the real ``trisa-peer serve
--policy rvasp`` process. Alice's senders run in ``--procs`` separate processes (this
script with ``--worker``), each with its own Alice node and so its own connection to
Bob, and up to ``level / procs`` sender threads sharing it; level 1 is one thread in
one process. Every level has a warm-up (``--warmup`` s) and then a window of
``--seconds`` s, the same wall-clock interval in every process.

Measured at the sender: the latency of each ``send`` that starts inside the window
(p50, p99, nearest rank), and the rate of sends completed inside it. An error is a
send that raised, was not ``accepted``, or needed more than one Transfer call (the
node's one channel re-plan or key refresh: a retry counts as an error); errors are
counted over warm-up and window alike. Targets: 0 errors at every level, p99 / p50 at
64 senders <= 3. Not checked here: anything about Bob's side (no CPU split, no RSS).
Bounded: about 25 s of start-up plus 4 x (warm-up + window), under 90 s by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from childproc import LineChild  # noqa: E402

LEVELS = (1, 8, 32, 64)


# --------------------------------------------------------------------- the sender process


def timed_sender(node: Any, peer: str, payload: Any) -> Any:
    """``one()`` -> (start, end, error or ''): one ``node.send``, wall-clock seconds.

    An error is an exception, a state other than ``accepted``, or a retry: more than
    one Transfer call inside the send (the node re-plans a broken channel, or
    refreshes the peer's key, once). Counted per thread, so threads may share ``node``.
    """
    attempts = threading.local()
    transfer = node._transfer

    def counted(*args: Any, **kwargs: Any) -> Any:
        attempts.n += 1
        return transfer(*args, **kwargs)

    node._transfer = counted

    def one() -> tuple[float, float, str]:
        attempts.n = 0
        start = time.time()
        error = ""
        try:
            result = node.send(peer, payload)
            if result.state != "accepted":
                error = result.describe()
        except Exception as exc:
            error = repr(exc)
        if not error and attempts.n > 1:
            error = f"retried: {attempts.n} Transfer calls"
        return start, time.time(), error

    return one


def worker(config_path: str) -> int:
    """A sender process: one Alice node; runs ``run THREADS T0 T1`` commands from stdin."""
    from datetime import UTC, datetime

    from trisa_peer.certs import load_identity
    from trisa_peer.directory.client import DirectoryClient
    from trisa_peer.network.handler import Reject
    from trisa_peer.network.node import TrisaNode
    from trisa_peer.network.store import TransferStore
    from trisa_peer.testing.cast import BOOK
    from trisa_peer.testing.policies import originator_payload
    from trisa_peer.transport.identity import Material
    from trisa_peer.transport.server import StaticMaterial
    from trisa_peer.trust import TrustPool

    cfg = json.loads(Path(config_path).read_text())
    identity = load_identity(cfg["cert"], key_path=cfg["key"])
    directory = DirectoryClient(cfg["directory"], insecure=True, timeout=5, cache_ttl=30)
    node = TrisaNode(
        StaticMaterial(Material(identity, TrustPool.load(cfg["trust"]), None, 1)), directory,
        store=TransferStore(cfg["store"]), handler=lambda _i: Reject(50, "-"),
        resolve=cfg["resolve"], timeout=10)
    payload = originator_payload(BOOK.wallets_of(cfg["alice"])[1],
                                 BOOK.wallets_of(cfg["bob"])[0],
                                 sent_at=datetime.now(UTC))
    one = timed_sender(node, cfg["bob"], payload)

    first = one()
    if first[2]:
        print(f"FAILED {first[2]}", flush=True)
        return 1
    print("READY", flush=True)
    for line in sys.stdin:
        word, threads, t0, t1 = line.split()
        if word != "run":
            break
        begin, end = float(t0), float(t1)
        records: list[tuple[float, float, str]] = []
        pool = [threading.Thread(target=_loop, args=(one, end, records))
                for _ in range(int(threads))]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        errors = [r[2] for r in records if r[2]]
        print(json.dumps({
            "latencies_ms": [round((r[1] - r[0]) * 1000, 3) for r in records
                             if begin <= r[0] < end and not r[2]],
            "completed_in_window": sum(1 for r in records if begin <= r[1] < end),
            "sends": len(records),
            "errors": len(errors),
            "error_samples": sorted(set(errors))[:3],
        }), flush=True)
    node.close()
    directory.close()
    return 0


def _loop(one: Any, end: float, records: list[tuple[float, float, str]]) -> None:
    """One sender thread: ``one()`` until wall-clock ``end``, then hand in the records."""
    local: list[tuple[float, float, str]] = []
    while time.time() < end:
        local.append(one())
    records.extend(local)  # list.extend is atomic under the GIL


# --------------------------------------------------------------------- the parent


class Sender(LineChild):
    """One ``--worker`` child process."""

    def __init__(self, config: dict[str, Any], path: Path) -> None:
        path.write_text(json.dumps(config))
        super().__init__([str(Path(__file__).resolve()), "--worker", str(path)],
                         "a sender process")

    def run(self, threads: int, begin: float, end: float) -> None:
        self.send(f"run {threads} {begin} {end}")


def start_senders(net: Any, work: Path, bob_port: int, procs: int) -> list[Sender]:
    """``procs`` sender processes holding Alice's identity, dialling Bob's registered
    endpoint at ``127.0.0.1:bob_port`` (the ``serve`` under test); each its own store."""
    from trisa_peer.certs import write_identity

    write_identity(net.alice.identity, work / "alice.pem", work / "alice.key")
    resolve = dict(net.resolve)
    resolve[f"{net.bob.common_name}:{net.bob.port}".lower()] = f"127.0.0.1:{bob_port}"
    return [Sender({
        "cert": str(work / "alice.pem"), "key": str(work / "alice.key"),
        "trust": str(work / "trust.pem"), "directory": net.directory_endpoint,
        "resolve": resolve, "store": str(work / f"alice-{i}.db"),
        "alice": net.alice.common_name, "bob": net.bob.common_name,
    }, work / f"sender-{i}.json") for i in range(procs)]


def share(level: int, procs: int) -> list[int]:
    """Sender threads per process for ``level`` senders over ``procs`` processes."""
    used = min(level, procs)
    return [level // used + (1 if i < level % used else 0) if i < used else 0
            for i in range(procs)]


def measure(senders: list[Sender], level: int, warmup: float, seconds: float,
            bob_cpu: Any) -> dict[str, Any]:
    from loadkit import percentile

    threads = share(level, len(senders))
    begin = time.time() + warmup
    end = begin + seconds
    cpu0 = bob_cpu()
    for sender, n in zip(senders, threads, strict=True):
        if n:
            sender.run(n, begin, end)
    parts = [s.result() for s, n in zip(senders, threads, strict=True) if n]
    cpu = bob_cpu() - cpu0
    latencies = [x for p in parts for x in p["latencies_ms"]]
    completed = sum(p["completed_in_window"] for p in parts)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return {
        "senders": level,
        "processes": sum(1 for n in threads if n),
        "transfers_per_s": round(completed / seconds, 1),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "p99_p50": round(p99 / p50, 2) if p50 else None,
        "max_ms": round(max(latencies), 1) if latencies else None,
        "sends": sum(p["sends"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "error_samples": sorted({e for p in parts for e in p["error_samples"]})[:3],
        "bob_cores": round(cpu / (warmup + seconds), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)),
                        help="comma-separated sender counts (default 1,8,32,64)")
    parser.add_argument("--procs", type=int, default=8, help="sender processes (default 8)")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds before each window")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per window")
    parser.add_argument("--out", metavar="FILE.json", help="also write the JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    try:
        levels = [int(x) for x in args.levels.split(",")]
    except ValueError:
        parser.error("--levels takes comma-separated integers")
    if args.procs < 1 or any(n < 1 for n in levels) or args.seconds <= 0 or args.warmup < 0:
        parser.error("--procs and levels must be >= 1, --seconds > 0, --warmup >= 0")

    from loadkit import Serve, load_average, network, say, write_out


    started = time.perf_counter()
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="trisa-b10-") as name:
        work = Path(name)
        net = network(work)
        bob: Serve | None = None
        senders: list[Sender] = []
        try:
            say("starting Bob: trisa-peer serve --policy rvasp")
            bob = Serve(net, work, "b10")
            say(f"starting {args.procs} sender processes (Alice, one connection each)")
            senders = start_senders(net, work, bob.port, args.procs)
            for s in senders:
                s.ready()
            pid = bob.pid

            def bob_cpu() -> float:
                from run import child_cpu

                return float(child_cpu(pid))

            rows: dict[str, Any] = {}
            for level in levels:
                say(f"B10: {level} concurrent senders, {args.warmup:g} s warm-up, "
                    f"{args.seconds:g} s window")
                rows[str(level)] = measure(senders, level, args.warmup, args.seconds, bob_cpu)
                say(f"  {rows[str(level)]}")
        finally:
            for s in senders:
                s.stop()
            if bob is not None:
                bob.stop()
            net.stop()
    top = rows[str(max(levels))]
    doc = {
        "b10_load": {k: {f: v[f] for f in ("transfers_per_s", "p50_ms", "p99_ms", "errors")}
                     for k, v in rows.items()},
        "b10_errors": sum(v["errors"] for v in rows.values()),
        "b10_p99_p50": top["p99_p50"],
        "b10_detail": {
            "load_average": [load_start, load_average()], "nproc": os.cpu_count(),
            "levels": rows, "procs": args.procs, "warmup_s": args.warmup,
            "window_s": args.seconds, "elapsed_s": round(time.perf_counter() - started, 1),
        },
        "targets": {"b10_errors": ["==", 0], "b10_p99_p50": ["<=", 3.0]},
    }
    write_out(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
