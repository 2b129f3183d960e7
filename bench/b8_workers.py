"""B8 (issue 13 section 6): Transfer round trips/s with ``serve --workers 2`` against
``serve`` (one process), and against the RSA crypto bound of B1.

Standalone (``bench/run.py`` is the coordinator's): ``.venv/bin/python bench/b8_workers.py``.
Same method as B1: RSA-4096 identities from the simulated network, all verification on,
the beneficiary Bob run as the real ``trisa-peer serve --policy rvasp`` process (one with
one worker, one with ``--workers 2``, both started up front on their own store), Alice
in this process. Unlike B1's one reused channel, each of the ``--senders`` threads has
its own Alice node and so its own connection (one channel would reach one worker only);
every window opens them anew, so the kernel's spread over the workers varies from
window to window. Windows alternate (1 worker, 2 workers, in turns, each pair after a
1-second measure of the bound) so that this machine's drift hits both sides alike;
medians are reported. Bound: RSA-4096 OAEP-SHA512 decrypts/s on all cores / 4, as B1.

Prints one JSON document: ``b8_ratio`` (2 workers / bound; target >= 0.8),
``workers_ratio`` (2 workers / 1 worker), the per-window rates, the error count, and
per mode the CPU milliseconds per round trip of Bob's processes and of Alice's, and
the cores the two used together: well under the machine's cores means the machine
was shared with other work and the ratios say little.
Bounded: about ``pairs * (1 + 2 * seconds)`` seconds plus the network's start-up.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import Gate, RSABound, child_cpu, median, say  # noqa: E402

from trisa_peer.certs import write_identity  # noqa: E402
from trisa_peer.network.handler import Reject  # noqa: E402
from trisa_peer.network.node import TrisaNode  # noqa: E402
from trisa_peer.network.store import TransferStore  # noqa: E402
from trisa_peer.testing.cast import BOOK  # noqa: E402
from trisa_peer.testing.network import SimulatedNetwork  # noqa: E402
from trisa_peer.testing.policies import originator_payload  # noqa: E402


class Bob:
    """``trisa-peer serve`` with ``workers`` processes on a port of its own."""

    def __init__(self, net: SimulatedNetwork, work: Path, workers: int) -> None:
        resolve = [f"{name}:{address.rsplit(':', 1)[0]}" for name, address in
                   net.resolve.items()]
        argv = [sys.executable, "-m", "trisa_peer", "serve", "--listen", "127.0.0.1:0",
                "--db", str(work / f"bob-{workers}.db"), "--policy", "rvasp",
                "--cert", str(work / "bob.pem"), "--key", str(work / "bob.key"),
                "--trust", str(work / "trust.pem"), "--directory", net.directory_endpoint,
                "--directory-insecure", *itertools.chain(*(("--resolve", r) for r in resolve))]
        if workers > 1:
            argv += ["--workers", str(workers)]
        self.log = (work / f"bob-{workers}.log").open("w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        pattern = re.compile(r"workers serving on .*:(\d+)" if workers > 1
                             else r"serving on port (\d+)")
        deadline = time.monotonic() + 120
        self.port = 0
        while not self.port and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            match = pattern.search(line)
            if match:
                self.port = int(match[1])
        if not self.port:
            self.stop()
            raise RuntimeError(f"serve --workers {workers} did not start; see {self.log.name}")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # drain

    def cpu(self) -> float:
        """CPU seconds of this Bob: the process and its workers (live ones)."""
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(pid) for pid in children.read_text().split()]
        total = 0.0
        for pid in pids:
            try:
                total += child_cpu(pid)
            except (OSError, IndexError, ValueError):
                pass
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=8, help="concurrent senders")
    parser.add_argument("--pairs", type=int, default=4, help="window pairs")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per window")
    parser.add_argument("--workers", type=int, default=2, help="workers of the second Bob")
    parser.add_argument("--out", metavar="FILE.json", help="also write the JSON here")
    args = parser.parse_args()
    started = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="trisa-b8-")
    work = Path(tmp.name)
    say("starting the simulated network with RSA-4096 identities (CA, GDS, nodes)")
    net = SimulatedNetwork(work / "net", key_size=4096).start()
    bobs: dict[int, Bob] = {}
    senders: list[TrisaNode] = []
    try:
        bob_cn = net.bob.common_name
        bob_endpoint = f"{bob_cn}:{net.bob.port}".lower()
        write_identity(net.bob.identity, work / "bob.pem", work / "bob.key")
        (work / "trust.pem").write_bytes(net.pool.pem())
        for n in (1, args.workers):
            say(f"starting trisa-peer serve with {n} worker(s)")
            bobs[n] = Bob(net, work, n)
        wallet_a = BOOK.wallets_of(net.alice.common_name)[1]  # SendFull
        wallet_b = BOOK.wallets_of(bob_cn)[0]  # SyncRepair -> accepted
        payload = originator_payload(wallet_a, wallet_b, sent_at=datetime.now(UTC))
        assert not isinstance(payload, Reject)
        alice = net.alice.node
        for i in range(args.senders):
            senders.append(TrisaNode(
                alice.material, net.directory_client(),
                store=TransferStore(work / f"alice-{i}.db"), handler=lambda _i: Reject(50, "-"),
                resolve=dict(net.resolve), timeout=10))
        slot = itertools.count()
        local = threading.local()

        def send() -> None:
            if not hasattr(local, "node"):
                local.node = senders[next(slot) % len(senders)]
            result = local.node.send(bob_cn, payload)
            if result.state != "accepted":
                raise RuntimeError(result.describe())

        def point_at(port: int) -> None:
            for node in senders:  # a new connection per sender
                node.resolver.resolve[bob_endpoint] = f"127.0.0.1:{port}"
                node.connector.forget(bob_cn)
            for node in senders:
                node.connect(bob_cn)

        gate = Gate(args.senders, send)
        # the B1 method (issue 16): the bound in one process per core, interleaved
        rsa = RSABound(work / "bob.key")
        rates: dict[int, list[float]] = {n: [] for n in bobs}
        cpu: dict[int, dict[str, float]] = {n: {"bob": 0.0, "alice": 0.0, "rt": 0.0,
                                                 "s": 0.0} for n in bobs}
        bounds: list[float] = []
        try:
            for bob in bobs.values():  # warm-up: keys, decisions, connections
                point_at(bob.port)
                gate.window(1.0)
            order = list(bobs)
            for pair in range(args.pairs):
                bounds.append(rsa.window(1.0)[0] / 4)
                for n in order if pair % 2 == 0 else reversed(order):
                    point_at(bobs[n].port)
                    bob_cpu, own_cpu = bobs[n].cpu(), time.process_time()
                    count, took = gate.window(args.seconds)
                    rates[n].append(count / took)
                    cpu[n]["bob"] += bobs[n].cpu() - bob_cpu
                    cpu[n]["alice"] += time.process_time() - own_cpu
                    cpu[n]["rt"] += count
                    cpu[n]["s"] += took
                say(f"pair {pair + 1}/{args.pairs}: bound {bounds[-1]:.1f} rt/s, "
                    + ", ".join(f"{n} worker(s) {rates[n][-1]:.1f} rt/s" for n in order))
        finally:
            gate.close()
            rsa.close()
        one, many = median(rates[1]), median(rates[args.workers])
        bound = median(bounds)
        out: dict[str, Any] = {
            "b8_ratio": round(many / bound, 3),
            "b8_one_worker_ratio": round(one / bound, 3),
            "workers_ratio": round(many / one, 3),
            "rate_workers": round(many, 1),
            "rate_one": round(one, 1),
            "bound": round(bound, 1),
            "workers": args.workers,
            "senders": args.senders,
            "rates": {str(n): [round(r, 1) for r in v] for n, v in rates.items()},
            # CPU ms per round trip (Bob's processes, Alice's) and cores both used
            "cpu": {str(n): {
                "bob_ms_per_rt": round(c["bob"] / max(c["rt"], 1) * 1000, 2),
                "alice_ms_per_rt": round(c["alice"] / max(c["rt"], 1) * 1000, 2),
                "cores_used": round((c["bob"] + c["alice"]) / max(c["s"], 1e-9), 2),
            } for n, c in cpu.items()},
            "bounds": [round(b, 1) for b in bounds],
            "errors": gate.errors,
            "error_count": gate.error_count,
            "duration_s": round(time.perf_counter() - started, 1),
        }
        print(json.dumps(out, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    finally:
        for node in senders:
            node.close()
        for bob in bobs.values():
            bob.stop()
        net.stop()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
