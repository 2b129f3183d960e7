"""B11 (issue 16 section 3): legitimate transfers while an unregistered peer floods Bob.

Standalone (``bench/run.py`` integrates it): ``.venv/bin/python bench/b_hostile.py [--out F]``.
RSA-4096 identities from the simulated network; Bob is the real ``trisa-peer serve
--policy rvasp`` process. Legitimate load: ``--senders`` Alice senders in separate
processes (bench/b_load.py's sender processes), rate = sends completed in the window.
The flood: one process (this script with ``--flood``) holding Mallory's certificate
(issued by the TRISA CA, never registered: Bob refuses at step 4) sends undecodable
Transfer requests over ONE connection, with soak/case_undecodable.py's machinery
(its garbage body, its outcome classification, its ``_blast`` for the full-speed flood).

Windows alternate, flood off / flood at ``--rate`` requests/s (the order swapped every
pair) so that the machine's drift hits both sides: ``b11_hostile_ratio`` = median rate
with the flood / median rate without (target >= 0.8). ``b11_rss_growth_mb``: the growth
of Bob's RSS summed over the flood windows, measured after a warm-up flood (target <= 5);
the growth over the no-flood windows is reported beside it. Then one pair at full speed
(``--full`` requests in flight over the one connection): ``b11_full_ratio`` (report).
Also reported: the flood's achieved rate and outcomes (all should be step-4 refusals).
Not checked here: Bob's log, the directory (soak/case_undecodable.py covers both).
Bounded: about 30 s of start-up plus (2 x pairs + 2) x (warm-up + window).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent / "soak"))  # after bench/: both have a run.py

from childproc import LineChild  # noqa: E402

MB = 1024 * 1024


# --------------------------------------------------------------------- the flood process


def flood(config_path: str) -> int:
    """Mallory: ``rate R SECONDS`` or ``full N SECONDS`` from stdin, counts on stdout."""
    import grpc
    from case_undecodable import TRANSFER, _blast, _outcome, mtls_channel

    cfg = json.loads(Path(config_path).read_text())
    channel = mtls_channel(cfg["port"], Path(cfg["cert"]), Path(cfg["key"]),
                           Path(cfg["trust"]), cfg["server_name"])
    call = channel.unary_unary(TRANSFER, request_serializer=None, response_deserializer=None)
    pool = ThreadPoolExecutor(max_workers=64)
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
    except grpc.FutureTimeoutError:
        print("FAILED channel not ready", flush=True)
        return 1
    print("READY", flush=True)
    for line in sys.stdin:
        mode, amount, seconds = line.split()
        started = time.monotonic()
        deadline = started + float(seconds)
        counts: Counter[str] = Counter()
        if mode == "full":
            counts = _blast([channel] * int(amount), TRANSFER, 10**9, deadline)
            counts.pop("timed_out", None)  # each thread's stop at the deadline
        else:
            period = 1.0 / float(amount)

            futures = []
            tick = started
            while tick < deadline:
                futures.append(pool.submit(_outcome, call))
                tick += period
                pause = tick - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            counts.update(future.result() for future in futures)
        took = time.monotonic() - started
        total = sum(counts.values())
        print(json.dumps({"requests": total, "seconds": round(took, 2),
                          "per_s": round(total / took, 1), "outcomes": dict(counts)}),
              flush=True)
    pool.shutdown()
    channel.close()
    return 0


class Flood(LineChild):
    """The ``--flood`` child process."""

    def __init__(self, config: dict[str, Any], path: Path) -> None:
        path.write_text(json.dumps(config))
        super().__init__([str(Path(__file__).resolve()), "--flood", str(path)],
                         "the flood process")
        self.ready()

    def start(self, mode: str, amount: float, seconds: float) -> None:
        self.send(f"{mode} {amount} {seconds}")


# --------------------------------------------------------------------- the parent


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--senders", type=int, default=8, help="legitimate senders (8)")
    parser.add_argument("--procs", type=int, default=4, help="their processes (4)")
    parser.add_argument("--rate", type=float, default=500.0, help="flood requests/s (500)")
    parser.add_argument("--full", type=int, default=16, help="full-speed flood in flight (16)")
    parser.add_argument("--pairs", type=int, default=3, help="off/on window pairs (3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before a window")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per window")
    parser.add_argument("--out", metavar="FILE.json", help="also write the JSON here")
    parser.add_argument("--flood", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        return flood(args.flood)
    if min(args.senders, args.procs, args.full, args.pairs) < 1 or args.rate <= 0 \
            or args.seconds <= 0 or args.warmup < 0:
        parser.error("counts must be >= 1, --rate and --seconds > 0, --warmup >= 0")

    from b_load import Sender, measure, start_senders
    from loadkit import Serve, load_average, network, say, write_out
    from run import child_cpu

    from trisa_peer.certs import write_identity

    started = time.perf_counter()
    load_start = load_average()
    span = args.warmup + args.seconds
    with tempfile.TemporaryDirectory(prefix="trisa-b11-") as name:
        work = Path(name)
        net = network(work)
        bob: Serve | None = None
        senders: list[Sender] = []
        mallory: Flood | None = None
        try:
            say("starting Bob: trisa-peer serve --policy rvasp")
            bob = Serve(net, work, "b11")
            write_identity(net.mallory.identity, work / "mallory.pem", work / "mallory.key")
            say(f"starting {args.procs} sender processes and Mallory's flood process")
            senders = start_senders(net, work, bob.port, args.procs)
            mallory = Flood({"port": bob.port, "cert": str(work / "mallory.pem"),
                             "key": str(work / "mallory.key"),
                             "trust": str(work / "trust.pem"),
                             "server_name": net.bob.common_name}, work / "flood.json")
            for s in senders:
                s.ready()
            pid = bob.pid

            def bob_cpu() -> float:
                return float(child_cpu(pid))

            def window(mode: str, amount: float) -> tuple[dict[str, Any], dict[str, Any],
                                                          float]:
                """One window: (legitimate figures, flood figures, Bob's RSS growth)."""
                assert bob is not None and mallory is not None
                rss0, cpu0 = bob.rss(), child_cpu(mallory.proc.pid)
                if mode != "off":
                    mallory.start(mode, amount, span)
                legit = measure(senders, args.senders, args.warmup, args.seconds, bob_cpu)
                flooded = mallory.result() if mode != "off" else {}
                legit["flood_cores"] = round((child_cpu(mallory.proc.pid) - cpu0) / span, 2)
                return legit, flooded, (bob.rss() - rss0) / MB

            say(f"warm-up: legitimate senders and {args.rate:g} flood requests/s")
            window("rate", args.rate)
            off: list[dict[str, Any]] = []
            on: list[dict[str, Any]] = []
            floods: list[dict[str, Any]] = []
            growth_on = growth_off = 0.0
            for i in range(args.pairs):
                order = ("off", "rate") if i % 2 == 0 else ("rate", "off")
                for mode in order:
                    say(f"B11 pair {i + 1}: flood {mode}")
                    legit, flooded, growth = window(mode, args.rate)
                    if mode == "off":
                        off.append(legit)
                        growth_off += growth
                    else:
                        on.append(legit)
                        floods.append(flooded)
                        growth_on += growth
                    say(f"  {legit['transfers_per_s']}/s, errors {legit['errors']}, "
                        f"flood {flooded.get('per_s', 0)}/s, RSS {growth:+.2f} MB")
            say(f"B11 full-speed flood: {args.full} in flight over one connection")
            full_off, _, _ = window("off", 0)
            full_on, full_flood, full_growth = window("full", args.full)
            say(f"  {full_off['transfers_per_s']}/s without, {full_on['transfers_per_s']}/s "
                f"with; flood {full_flood.get('per_s')}/s, RSS {full_growth:+.2f} MB")
            rss_end = bob.rss() / MB
        finally:
            if mallory is not None:
                mallory.stop()
            for s in senders:
                s.stop()
            if bob is not None:
                bob.stop()
            net.stop()

    def rate(rows: list[dict[str, Any]]) -> float:
        return float(statistics.median(r["transfers_per_s"] for r in rows))

    outcomes: Counter[str] = Counter()
    for f in floods:
        outcomes.update(f["outcomes"])
    doc = {
        "b11_hostile_ratio": round(rate(on) / rate(off), 3),
        "b11_rss_growth_mb": round(growth_on, 2),
        "b11_full_ratio": round(full_on["transfers_per_s"] / full_off["transfers_per_s"], 3),
        "b11_detail": {
            "load_average": [load_start, load_average()], "nproc": os.cpu_count(),
            "rate_without": rate(off), "rate_with": rate(on),
            "rates_without": [r["transfers_per_s"] for r in off],
            "rates_with": [r["transfers_per_s"] for r in on],
            "p50_ms_without": [r["p50_ms"] for r in off],
            "p50_ms_with": [r["p50_ms"] for r in on],
            "bob_cores_without": [r["bob_cores"] for r in off],
            "bob_cores_with": [r["bob_cores"] for r in on],
            "flood_process_cores": [r["flood_cores"] for r in on],
            "legit_errors": sum(r["errors"] for r in [*off, *on, full_off, full_on]),
            "flood_target_per_s": args.rate,
            "flood_per_s": [f["per_s"] for f in floods],
            "flood_outcomes": dict(outcomes),
            "rss_growth_mb_without_flood": round(growth_off, 2),
            "bob_rss_end_mb": round(rss_end, 1),
            "full": {"in_flight": args.full, "rate_without": full_off["transfers_per_s"],
                     "rate_with": full_on["transfers_per_s"],
                     "p50_ms_with": full_on["p50_ms"], "p99_ms_with": full_on["p99_ms"],
                     "flood_per_s": full_flood.get("per_s"),
                     "bob_cores_without": full_off["bob_cores"],
                     "bob_cores_with": full_on["bob_cores"],
                     "flood_process_cores": full_on["flood_cores"],
                     "flood_outcomes": full_flood.get("outcomes"),
                     "rss_growth_mb": round(full_growth, 2)},
            "senders": args.senders, "procs": args.procs, "pairs": args.pairs,
            "window_s": args.seconds, "elapsed_s": round(time.perf_counter() - started, 1),
        },
        "targets": {"b11_hostile_ratio": [">=", 0.8], "b11_rss_growth_mb": ["<=", 5.0]},
    }
    write_out(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
