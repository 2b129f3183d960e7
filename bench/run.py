"""trisa-peer benchmarks (issue 7): ``make bench`` or ``.venv/bin/python bench/run.py``.

Every figure is a ratio against a baseline measured in the same run, interleaved with
it in short windows (this machine's speed drifts by +-30 % from second to second), so
that drift hits both sides alike. Prints a table and writes ``bench/results.json``.
Exit status is 0 whether or not a target is met: benchmarks report, they do not gate.

Figures (see bench/README.md for what each one measures and why):

B1  Transfer round trips/s, RSA-4096, all verification on, durable commits, 8 senders
    over one reused channel; Bob (beneficiary) in his own process, Alice (originator)
    in this one. Bound: RSA-4096 OAEP-SHA512 decrypts/s in one process per core
    (``--rsa-worker``), in windows interleaved with the transfer windows, / 4.
B2  median warm Transfer latency, server with peer verification / same server without.
B3  first contact (lookup + offline checks + pinned mTLS + probe + KeyExchange + first
    Transfer) / the same first contact in reference mode (lookup, plain mTLS to a
    verify_peers=False server, the same KeyExchange and first Transfer); the old figure
    (/ a bare RSA-4096 mTLS connect + one RPC) is b3_bare_ratio.
B4  directory Lookup rate / health Check rate on the same server, keys uniform over
    10,000 records, a writer process changing records: the median of 3 runs; Search
    median over 10,000 records.
B5  RSS of a node process holding 10,000 cached peer decisions.
B6  TransferStream envelopes/s / unary Transfer envelopes/s.
B7  Transfer round trips/s with Bob on the PostgreSQL store / on SQLite (durable both).
B8  Round trips/s with ``serve --workers 2`` / the RSA bound (bench/b8_workers.py).
B10 load curve, B11 hostile flood, B12 idle connections: bench/b_load.py,
    b_hostile.py, b_idle.py when present (each ``--out FILE.json``).
B13 (Alice's + Bob's CPU per B1 round trip) - 4 x the CPU per decrypt of the bound.
B14 summed RSS of a default ``trisa-peer serve`` process tree 5 s after 2,000
    transfers.
``bench/report.png``: B10 latency against concurrency and each figure against its
target (needs the ``bench`` extra: matplotlib).
Size figures (``--scale``, ``make bench-scale``; minutes each, so not in ``make bench``):

S1  ``transfers list`` (latest 100; a peer's latest 20) at 1,000,000 stored transfers,
    both backends, on a generated history (bench/b_history.py).
S2  directory import (Directory.add) of 100,000 records / of 10,000, and db copy of
    them to the other backend, both backends (bench/b_import.py); target <= 12.
B9  Alice and Charlie -> two Bob replicas behind HAProxy (TLS passthrough, one
    PostgreSQL store) / the same senders -> one replica directly (report).

Options: ``--experiments`` also runs the B1 variants behind the proposed fixes
(in-process Bob, SQLite synchronous=NORMAL); ``--senders N``; ``--out FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pki import BenchPKI, pem  # noqa: E402

from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, api_pb2_grpc  # noqa: E402
from trisa_peer.certs import Identity, write_identity  # noqa: E402
from trisa_peer.directory.client import DirectoryClient  # noqa: E402
from trisa_peer.directory.service import Directory  # noqa: E402
from trisa_peer.directory.store import SQLiteStore  # noqa: E402
from trisa_peer.envelope import seal  # noqa: E402
from trisa_peer.envelope.crypto import rsa_oaep_decrypt, rsa_oaep_encrypt  # noqa: E402
from trisa_peer.envelope.keys import (  # noqa: E402
    public_key_from_signing_key,
    signing_key_from_certificate,
)
from trisa_peer.network.node import TrisaNode  # noqa: E402
from trisa_peer.network.store import TransferStore  # noqa: E402
from trisa_peer.testing.cast import BOOK  # noqa: E402
from trisa_peer.testing.network import SimulatedNetwork  # noqa: E402
from trisa_peer.testing.policies import beneficiary_handler, originator_payload  # noqa: E402
from trisa_peer.transport.client import PeerChannel  # noqa: E402
from trisa_peer.transport.identity import Material  # noqa: E402
from trisa_peer.transport.server import StaticMaterial  # noqa: E402

TARGETS = {  # key: (comparison, target)
    "b1_ratio": (">=", 0.75),
    "b2_ratio": ("<=", 1.03),
    "b3_ratio": ("<=", 1.2),
    # issue 16: Lookup at 1.0 x the no-op RPC, passed when the median of 3 runs is >= 0.95
    "b4_lookup_ratio": (">=", 0.95),
    "b4_search_p50_ms": ("<=", 2.0),
    "b5_rss_mb": ("<=", 150.0),
    "b7_ratio": (">=", 0.85),
    "b8_ratio": (">=", 0.8),
    "b10_errors": ("<=", 0),
    "b10_p99_p50": ("<=", 3.0),
    "b11_hostile_ratio": (">=", 0.8),
    "b11_rss_growth_mb": ("<=", 5.0),
    "b12_idle_conns": ("<=", 1.5),
    "b13_non_rsa_cpu_ms": ("<=", 2.0),
    "b14_rss_mb_2000": ("<=", 60.0),
    "s1_list_100_ms": ("<=", 20.0),
    "s1_peer_20_ms": ("<=", 20.0),
    "s2_import_ratio": ("<=", 12.0),
    "s2_copy_ratio": ("<=", 12.0),
}

NPROC = os.cpu_count() or 1

#: what ``--only`` selects (b6 runs inside b1)
ONLY_KEYS = ("b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9", "b10", "b11", "b12",
             "b14", "s1", "s2")


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def child_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_status(root: int, *fields: str) -> dict[str, int]:
    """Sums of /proc/PID/status ``fields`` (e.g. Threads, RssAnon in kB) over ``root`` and
    its descendants."""
    total = dict.fromkeys(fields, 0)
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in total:
                    total[name] += int(value.split()[0])
        except (OSError, IndexError, ValueError):
            continue
    return total


def tree_rss_mb(root: int) -> float:
    """Sum of VmRSS over ``root`` and its descendants, in MB."""
    total = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    import cryptography

    return {
        "nproc": NPROC,
        "cpu": model,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "cryptography": cryptography.__version__,
        "kernel": platform.release(),
    }


# --------------------------------------------------------------------------- helpers


class Child:
    """A node_proc.py subprocess (a TRISA node or a directory) on 127.0.0.1."""

    def __init__(self, config: dict[str, Any], path: Path) -> None:
        path.write_text(json.dumps(config))
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "node_proc.py"), str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "READY":
            self.stop()
            raise RuntimeError(f"node_proc did not start: {line}")
        self.port = int(line[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Gate:
    """``n`` threads calling ``fn`` while the gate is open; counts completed calls."""

    def __init__(self, n: int, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.go = threading.Event()
        self.lock = threading.Lock()
        self.count = 0
        self.busy = 0
        self.errors: list[str] = []
        self.error_count = 0
        self.done = False
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        while not self.done:
            if not self.go.wait(0.05):
                continue
            with self.lock:
                if not self.go.is_set():
                    continue
                self.busy += 1
            try:
                self.fn()
            except Exception as exc:
                self.error_count += 1
                if len(self.errors) < 3:
                    self.errors.append(repr(exc))
            finally:
                with self.lock:
                    self.busy -= 1
                    self.count += 1

    def window(self, seconds: float) -> tuple[int, float]:
        """Open for ``seconds``; returns (calls completed, elapsed incl. draining)."""
        before = self.count
        start = time.perf_counter()
        self.go.set()
        time.sleep(seconds)
        with self.lock:
            self.go.clear()
        while self.busy:
            time.sleep(0.001)
        return self.count - before, time.perf_counter() - start

    def close(self) -> None:
        self.done = True
        self.go.clear()
        for t in self.threads:
            t.join(5)


def rsa_worker(key_path: str) -> int:
    """``run.py --rsa-worker KEY``: one process decrypting on command (the B1 bound).

    Reads a number of seconds per line on stdin, decrypts for that long, prints
    ``count elapsed cpu_seconds``; stops at end of input."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(Path(key_path).read_bytes(), password=None)
    ciphertext = rsa_oaep_encrypt(key.public_key(), os.urandom(32))  # type: ignore[arg-type, union-attr]
    for line in sys.stdin:
        seconds = float(line)
        n, c0, start = 0, time.process_time(), time.perf_counter()
        stop = start + seconds
        while time.perf_counter() < stop:
            rsa_oaep_decrypt(key, ciphertext)  # type: ignore[arg-type]
            n += 1
        print(n, time.perf_counter() - start, time.process_time() - c0, flush=True)
    return 0


class RSABound:
    """The B1 bound in ``NPROC`` separate processes (each with its own GIL), run in
    windows interleaved with the transfer windows: decrypts/s and CPU per decrypt."""

    def __init__(self, key_path: Path, processes: int = NPROC) -> None:
        self.procs = [
            subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--rsa-worker",
                              str(key_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
            for _ in range(processes)
        ]

    def window(self, seconds: float) -> tuple[float, float]:
        """(decrypts/s over all processes, CPU seconds per decrypt)."""
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(f"{seconds}\n")
            p.stdin.flush()
        rate, count, cpu = 0.0, 0, 0.0
        for p in self.procs:
            assert p.stdout is not None
            n, took, used = p.stdout.readline().split()
            rate += int(n) / float(took)
            count += int(n)
            cpu += float(used)
        return rate, cpu / max(count, 1)

    def close(self) -> None:
        for p in self.procs:
            if p.stdin is not None:
                p.stdin.close()
            p.wait(10)


def store_sync(mode: str) -> Callable[[], None]:
    """Experiment: run SQLite stores with PRAGMA synchronous=``mode``; returns undo."""
    from trisa_peer.storage import database as db_mod

    original = db_mod.SQLiteDatabase._connect

    def _connect(self: Any) -> Any:
        conn = original(self)
        conn.execute(f"PRAGMA synchronous={mode}")
        return conn

    db_mod.SQLiteDatabase._connect = _connect  # type: ignore[method-assign]

    def undo() -> None:
        db_mod.SQLiteDatabase._connect = original  # type: ignore[method-assign]

    return undo


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: dict[str, Any] = {}
        self.tmp = tempfile.TemporaryDirectory(prefix="trisa-bench-")
        self.work = Path(self.tmp.name)
        self.net: SimulatedNetwork
        self.children: list[Child] = []

    # ------------------------------------------------------------------ setup

    def start(self) -> None:
        say("starting the simulated network with RSA-4096 identities (CA, GDS, nodes)")
        start = time.perf_counter()
        self.net = SimulatedNetwork(self.work / "net", key_size=4096, async_delay=0.2).start()
        self.results["setup_network_s"] = round(time.perf_counter() - start, 1)
        self.alice, self.bob = self.net.alice, self.net.bob
        wallet_a = BOOK.wallets_of(self.alice.common_name)[1]  # SendFull
        wallet_b = BOOK.wallets_of(self.bob.common_name)[0]  # SyncRepair -> accepted
        self.payload = originator_payload(wallet_a, wallet_b, sent_at=datetime.now(UTC))
        result = self.alice.send(self.bob.common_name, self.payload)
        if result.state != "accepted":
            raise RuntimeError(f"warm-up transfer was {result.describe()}")
        self.bob_key = self.bob.identity.key
        self.bob_endpoint = f"{self.bob.common_name}:{self.bob.port}"

    def bob_child(self, name: str, sync: str = "FULL", store: str = "") -> Child:
        write_identity(self.bob.identity, self.work / "bob.pem", self.work / "bob.key")
        (self.work / "trust.pem").write_bytes(self.net.pool.pem())
        config = {
            "cert": str(self.work / "bob.pem"),
            "key": str(self.work / "bob.key"),
            "trust": str(self.work / "trust.pem"),
            "directory": self.net.directory_endpoint,
            "resolve": self.net.resolve,
            "store": store or str(self.work / f"bob-{name}.db"),
            "workers": 8,
            "store_sync": sync,
        }
        child = Child(config, self.work / f"bob-{name}.json")
        self.children.append(child)
        return child

    def point_alice_at(self, port: int) -> None:
        """Alice dials Bob's registered endpoint at ``port`` (like --resolve)."""
        self.alice.node.resolver.resolve[self.bob_endpoint.lower()] = f"127.0.0.1:{port}"
        self.alice.node.connector.forget(self.bob.common_name)

    def stop(self) -> None:
        for child in self.children:
            child.stop()
        self.net.stop()
        self.tmp.cleanup()

    # ------------------------------------------------------------------ B1

    def b1_windows(self, child: Child | None, pairs: int, seconds: float) -> dict[str, Any]:
        alice, peer = self.alice.node, self.bob.common_name

        def send() -> None:
            result = alice.send(peer, self.payload)
            if result.state != "accepted":
                raise RuntimeError(result.describe())

        # Open the channel before the senders start: PeerConnector.connect is not
        # single-flight, and concurrent first connects close each other's channels.
        alice.connect(peer)
        gate = Gate(self.args.senders, send)
        gate.window(1.0)  # warm-up: keys, server decision cache
        rates: list[float] = []
        bounds: list[float] = []
        ratios: list[float] = []
        rsa_cpu: list[float] = []
        cpu = 0.0
        total = 0
        elapsed = 0.0
        write_identity(self.bob.identity, self.work / "bob.pem", self.work / "bob.key")
        rsa = RSABound(self.work / "bob.key")
        try:
            rsa.window(0.3)  # warm-up
            for _ in range(pairs):
                decrypts, per_decrypt = rsa.window(1.0)
                bound = decrypts / 4  # four RSA-4096 decrypts per round trip
                rsa_cpu.append(per_decrypt)
                c_self, c_child = time.process_time(), child_cpu(child.pid) if child else 0.0
                n, took = gate.window(seconds)
                cpu += time.process_time() - c_self
                cpu += (child_cpu(child.pid) - c_child) if child else 0.0
                total += n
                elapsed += took
                rates.append(n / took)
                bounds.append(bound)
                ratios.append(n / took / bound)
        finally:
            gate.close()
            rsa.close()
        cpu_ms = cpu / max(total, 1) * 1000
        rsa_ms = 4 * median(rsa_cpu) * 1000
        return {
            "rate": median(rates),
            "non_rsa_cpu_ms": round(cpu_ms - rsa_ms, 2),
            "rsa_cpu_ms_per_rt": round(rsa_ms, 2),
            "bound": median(bounds),
            "ratio": median(ratios),
            "rates": [round(r, 1) for r in rates],
            "bounds": [round(b, 1) for b in bounds],
            "ratios": [round(r, 3) for r in ratios],
            "cpu_ms_per_rt": round(cpu_ms, 2),
            "cores_used": round(cpu / elapsed, 2),
            "errors": gate.errors,
            "error_count": gate.error_count,
        }

    def b1(self) -> None:
        say(f"B1 throughput: {self.args.senders} senders -> Bob in a subprocess, "
            "alternating with the decrypt bound")
        child = self.bob_child("b1")
        self.point_alice_at(child.port)
        out = self.b1_windows(child, pairs=5, seconds=3.0)
        self.results.update(b1_rate=round(out["rate"], 1), b1_bound=round(out["bound"], 1),
                            b1_ratio=round(out["ratio"], 3),
                            b13_non_rsa_cpu_ms=out["non_rsa_cpu_ms"])
        self.results["b1_detail"] = {k: v for k, v in out.items()
                                     if k not in ("rate", "bound", "ratio", "non_rsa_cpu_ms")}
        self.results["b1_detail"]["senders"] = self.args.senders
        self.b6(child)
        child.stop()
        self.children.remove(child)

    def b1_experiments(self) -> None:
        exp: dict[str, Any] = {}
        say("B1 experiment: Bob in this process (no process-level parallelism)")
        self.point_alice_at(self.bob.port)
        exp["inprocess"] = self.b1_windows(None, pairs=3, seconds=3.0)
        say("B1 experiment: both stores with PRAGMA synchronous=NORMAL (WAL)")
        child = self.bob_child("b1-normal", sync="NORMAL")
        undo = store_sync("NORMAL")
        try:
            self.point_alice_at(child.port)
            exp["sync_normal"] = self.b1_windows(child, pairs=3, seconds=3.0)
        finally:
            undo()
        child.stop()
        self.children.remove(child)
        self.point_alice_at(self.bob.port)
        self.results["b1_experiments"] = exp
        for name, out in exp.items():
            self.results[f"b1x_{name}_ratio"] = round(out["ratio"], 3)

    # ------------------------------------------------------------------ B6

    def sealed(self, n: int) -> list[Any]:
        return [seal(self.payload, self.bob_key.public_key(), envelope_id=str(uuid.uuid4()))
                for _ in range(n)]

    def b6(self, child: Child) -> None:
        say("B6 streaming: one TransferStream vs sequential unary Transfer (pre-sealed)")
        stub = self.alice.node.connect(self.bob.common_name).network
        per_run = 250
        stream_rates: list[float] = []
        unary_rates: list[float] = []
        for _ in range(2):
            batch = self.sealed(per_run)
            start = time.perf_counter()
            replies = list(stub.TransferStream(iter(batch), timeout=60))
            stream_rates.append(len(replies) / (time.perf_counter() - start))
            batch = self.sealed(per_run)
            start = time.perf_counter()
            for env in batch:
                stub.Transfer(env, timeout=10)
            unary_rates.append(per_run / (time.perf_counter() - start))
        ratios = [s / u for s, u in zip(stream_rates, unary_rates, strict=True)]
        self.results["b6_ratio"] = round(median(ratios), 3)
        self.results["b6_detail"] = {
            "stream_rate": round(median(stream_rates), 1),
            "unary_rate": round(median(unary_rates), 1),
            "ratios": [round(r, 3) for r in ratios],
            "envelopes_per_run": per_run,
        }

    # ------------------------------------------------------------------ B2

    def b2(self) -> None:
        say("B2 verification overhead: same Bob server with / without the interceptor")
        bob = self.bob

        def node(verify: bool, name: str) -> TrisaNode:
            directory = self.net.directory_client()
            n = TrisaNode(
                StaticMaterial(Material(bob.identity, self.net.pool, None, 1)),
                directory,
                store=TransferStore(self.work / f"b2-{name}.db"),
                handler=beneficiary_handler(BOOK, bob.common_name,
                                            async_delay=timedelta(seconds=0.2)),
                listen="127.0.0.1:0",
                verify_peers=verify,
                max_workers=8,
                timeout=10,
            )
            n.start()
            return n

        on, off = node(True, "on"), node(False, "off")
        plan = self.alice.node.resolver.plan(bob.common_name)
        connector = self.alice.node.connector

        def stub(port: int) -> Any:
            channel = connector._channel(replace(plan, address=f"127.0.0.1:{port}"))
            return channel, api_pb2_grpc.TRISANetworkStub(channel)

        ch_on, s_on = stub(on.port)
        ch_off, s_off = stub(off.port)
        # verify_peers=False is reference mode: no interceptor, no TRISA policy, no
        # directory binding; the servicer only identifies the caller (to seal replies).
        lat_on: list[float] = []
        lat_off: list[float] = []
        try:
            for s in (s_on, s_off, s_on, s_off):  # warm both
                s.Transfer(self.sealed(1)[0], timeout=10)
            pairs = 250
            batch = self.sealed(2 * pairs)
            for i in range(pairs):
                order = ((s_on, lat_on), (s_off, lat_off))
                for s, out in order if i % 2 == 0 else order[::-1]:
                    env = batch.pop()
                    start = time.perf_counter()
                    reply = s.Transfer(env, timeout=10)
                    out.append(time.perf_counter() - start)
                    if reply.error.code:
                        raise RuntimeError(f"B2 transfer rejected: {reply.error}")
        finally:
            ch_on.close()
            ch_off.close()
            on.stop(0.2)
            off.stop(0.2)
        # Median of per-pair ratios: each pair ran back to back, so drift cancels.
        ratio = median([x / y for x, y in zip(lat_on, lat_off, strict=True)])
        self.results["b2_ratio"] = round(ratio, 4)
        self.results["b2_detail"] = {
            "ratio_of_medians": round(median(lat_on) / median(lat_off), 4),
            "on_p50_ms": round(median(lat_on) * 1000, 3),
            "off_p50_ms": round(median(lat_off) * 1000, 3),
            "diff_p50_us": round((median(lat_on) - median(lat_off)) * 1e6, 1),
            "pairs": len(lat_on),
            "cached_decision_us": self.cache_hit_us(on),
        }

    @staticmethod
    def cache_hit_us(node: TrisaNode) -> float:
        """Cost of the per-RPC check once decided (a dict hit), in microseconds."""
        auth = node.server.authenticator
        keys = list(auth._cache)
        if not keys:
            return float("nan")
        start = time.perf_counter()
        for _ in range(10000):
            auth.authenticate_pem(keys[0], None)
        return round((time.perf_counter() - start) / 10000 * 1e6, 3)

    # ------------------------------------------------------------------ B3

    def b3(self) -> None:
        say("B3 first contact vs the same first contact in reference mode (no verification)"
            " and vs a bare RSA-4096 mTLS connect + one RPC")
        a, b = self.alice.node, self.bob.node
        bob_cn, alice_cn = self.bob.common_name, self.alice.common_name
        ident = self.alice.identity
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.net.pool.pem(),
            private_key=ident.key_pem(),
            certificate_chain=ident.chain_pem(),
        )
        options = [("grpc.ssl_target_name_override", bob_cn),
                   ("grpc.default_authority", bob_cn),
                   ("grpc.use_local_subchannel_pool", 1)]
        # The reference Bob: the same identity, store kind and handler, verify_peers=False
        # (no interceptor, no TRISA policy, no directory binding: only the TLS layer's
        # chain check against the trust pool, as upstream nodes do).
        ref_dir = self.net.directory_client()
        ref_bob = TrisaNode(
            StaticMaterial(Material(self.bob.identity, self.net.pool, None, 1)),
            ref_dir,
            store=TransferStore(self.work / "b3-reference.db"),
            handler=beneficiary_handler(BOOK, bob_cn, async_delay=timedelta(seconds=0.2)),
            listen="127.0.0.1:0", verify_peers=False, max_workers=8, timeout=10,
        )
        ref_port = ref_bob.start()
        ref_plan = replace(a.resolver.plan(bob_cn), address=f"127.0.0.1:{ref_port}")
        ours = signing_key_from_certificate(ident.leaf)

        def bare() -> float:
            start = time.perf_counter()
            channel = grpc.secure_channel(f"127.0.0.1:{self.bob.port}", creds, options=options)
            api_pb2_grpc.TRISAHealthStub(channel).Status(api_pb2.HealthCheck(), timeout=10)
            took = time.perf_counter() - start
            channel.close()
            return took

        def reference() -> float:
            # Upstream-style first contact: step-1 look-up (warm directory channel, cold
            # cache), plain mTLS (trust pool only: no pin, no offline checks, no probe),
            # the same KeyExchange, and the same first Transfer through the node's own
            # transfer path (store row, seal, open the reply: the same envelope crypto).
            a.directory.clear_cache()  # type: ignore[attr-defined]
            ref_bob.server.authenticator.forget()
            ref_bob.peer_keys.drop(alice_cn)
            start = time.perf_counter()
            a.directory.lookup(common_name=bob_cn)
            channel = grpc.secure_channel(ref_plan.address, creds, options=options)
            stub = api_pb2_grpc.TRISANetworkStub(channel)
            key = public_key_from_signing_key(stub.KeyExchange(ours, timeout=10))
            peer = PeerChannel(ref_plan, channel, stub, api_pb2_grpc.TRISAHealthStub(channel))
            result = a._transfer(bob_cn, peer, seal(self.payload, key))
            took = time.perf_counter() - start
            channel.close()
            if result.state != "accepted":
                raise RuntimeError(f"B3 reference transfer was {result.describe()}")
            return took

        def first() -> dict[str, float]:
            # Neither side has met the other: no channel, keys, decisions or lookups cached.
            a.connector.forget(bob_cn)
            a.peer_keys.drop(bob_cn)
            a.directory.clear_cache()  # type: ignore[attr-defined]
            b.server.authenticator.forget()
            b.directory.clear_cache()  # type: ignore[attr-defined]
            b.peer_keys.drop(alice_cn)
            t0 = time.perf_counter()
            a.connect(bob_cn)  # lookup, offline checks, pinned mTLS + probe RPC
            t1 = time.perf_counter()
            a.exchange_keys(bob_cn)
            t2 = time.perf_counter()
            result = a.send(bob_cn, self.payload)
            t3 = time.perf_counter()
            if result.state != "accepted":
                raise RuntimeError(result.describe())
            return {"total": t3 - t0, "connect": t1 - t0, "keyx": t2 - t1, "transfer": t3 - t2}

        def plan_only() -> float:
            a.directory.clear_cache()  # type: ignore[attr-defined]
            start = time.perf_counter()
            a.resolver.plan(bob_cn)
            return time.perf_counter() - start

        self.point_alice_at(self.bob.port)
        firsts: list[dict[str, float]] = []
        refs: list[float] = []
        bares: list[float] = []
        plans: list[float] = []
        try:
            first()
            reference()
            bare()
            for i in range(16):  # order alternates so that drift hits both sides alike
                if i % 2:
                    refs.append(reference())
                    firsts.append(first())
                else:
                    firsts.append(first())
                    refs.append(reference())
                bares.append(bare())
                plans.append(plan_only())
        finally:
            ref_bob.close()
            ref_dir.close()
        total = median([f["total"] for f in firsts])
        ratio = median([f["total"] / r for f, r in zip(firsts, refs, strict=True)])
        bare_ratio = median([f["total"] / b_ for f, b_ in zip(firsts, bares, strict=True)])
        self.results["b3_ratio"] = round(ratio, 3)
        self.results["b3_bare_ratio"] = round(bare_ratio, 3)
        self.results["b3_detail"] = {
            "first_contact_p50_ms": round(total * 1000, 2),
            "reference_p50_ms": round(median(refs) * 1000, 2),
            "bare_mtls_rpc_p50_ms": round(median(bares) * 1000, 2),
            "lookup_and_offline_checks_p50_ms": round(median(plans) * 1000, 2),
            "connect_p50_ms": round(median([f["connect"] for f in firsts]) * 1000, 2),
            "key_exchange_p50_ms": round(median([f["keyx"] for f in firsts]) * 1000, 2),
            "first_transfer_p50_ms": round(median([f["transfer"] for f in firsts]) * 1000, 2),
            "ratio_of_medians": round(total / median(refs), 3),
            "ratios": [round(f["total"] / r, 3) for f, r in zip(firsts, refs, strict=True)],
            "iterations": len(firsts),
        }

    # ------------------------------------------------------------------ B4 / B5 data

    def make_pki(self) -> None:
        say("minting 10,000 EC P-256 leaves for B4 and B5")
        start = time.perf_counter()
        self.pki = BenchPKI()
        self.names = [f"vasp{i:05d}.bench.test" for i in range(10_000)]
        self.leaves = [self.pki.leaf(cn) for cn in self.names]
        self.results["setup_leaves_s"] = round(time.perf_counter() - start, 1)

    # ------------------------------------------------------------------ B4

    COUNTRIES = ("DE", "FR", "US", "GB", "SG", "JP", "CH", "NL", "KY", "MT")

    #: B4's writer: another process changing the endpoint of records picked uniformly
    #: over the 10,000 (durable commits through the store, as an operator's would be)
    #: every ``interval`` s until ``stop`` exists; prints how many it changed.
    B4_WRITER = """
import random, sys, time
from pathlib import Path
from trisa_peer.directory.store import Changes, SQLiteStore
db, stop, interval = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
rng, done = random.Random(11), 0
with SQLiteStore(db) as store:
    while not stop.exists():
        cn = f"vasp{rng.randrange(10_000):05d}.bench.test"
        vasp = store.get_vasp_by_common_name(cn)
        vasp.trisa_endpoint = f"{cn}:{rng.randrange(1024, 65536)}"
        done += store.commit(Changes(vasp=vasp))
        time.sleep(interval)
print(done)
"""
    B4_WRITE_INTERVAL = 0.05  # about 20 changes/s (each a durable commit)
    B4_RUNS = 3
    B4_ROUNDS = 4

    def _b4_writer(self, db: Path) -> tuple[subprocess.Popen[str], Path]:
        stop = self.work / "b4-writer.stop"
        stop.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-c", self.B4_WRITER, str(db), str(stop),
             str(self.B4_WRITE_INTERVAL)], stdout=subprocess.PIPE, text=True)
        return proc, stop

    @staticmethod
    def _b4_cpu(pid: int) -> float:
        """User + system CPU seconds of process ``pid`` so far."""
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _b4_stop_writer(proc: subprocess.Popen[str], stop: Path) -> int:
        stop.touch()
        out, _ = proc.communicate(timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"B4 writer failed (exit {proc.returncode})")
        return int(out.strip() or 0)

    def b4(self) -> None:
        say("B4 directory: importing 10,000 VERIFIED records")
        start = time.perf_counter()
        db = self.work / "gds-10k.db"
        store = SQLiteStore(db)
        directory = Directory(store)
        for i, (cn, leaf) in enumerate(zip(self.names, self.leaves, strict=True)):
            directory.add(
                common_name=cn, endpoint=f"{cn}:443", certificates=[leaf, self.pki.issuing],
                name=f"Bench VASP {i:05d} Ltd", country=self.COUNTRIES[i % len(self.COUNTRIES)],
                website=f"https://{cn}",
            )
        store.close()
        self.results["setup_directory_s"] = round(time.perf_counter() - start, 1)
        child = Child({"role": "directory", "db": str(db), "workers": 8},
                      self.work / "gds.json")
        self.children.append(child)
        client = DirectoryClient(f"127.0.0.1:{child.port}", insecure=True, cache_ttl=0,
                                 timeout=10)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(client._channel)
        rng = random.Random(7)

        def lookup() -> None:
            client.lookup_reply(common_name=rng.choice(self.names))

        def noop() -> None:
            health.Check(health_pb2.HealthCheckRequest(), timeout=10)

        say("B4 Lookup rate vs health Check rate (4 client threads, alternating windows, "
            "a writer process changing records)")
        writer, stop = self._b4_writer(db)
        writes = -1
        try:
            lookups, noops = Gate(4, lookup), Gate(4, noop)
            lookups.window(0.5)
            noops.window(0.5)
            ratios: list[float] = []
            l_rates: list[float] = []
            n_rates: list[float] = []
            server_us: dict[str, list[float]] = {"lookup": [], "noop": []}
            client_us: dict[str, list[float]] = {"lookup": [], "noop": []}
            totals: dict[str, list[float]] = {}

            def window(kind: str, gate: Gate, rates: list[float]) -> None:
                cpu, mine = self._b4_cpu(child.proc.pid), time.process_time()
                n, t = gate.window(0.6)
                rates.append(n / t)
                server_us[kind].append((self._b4_cpu(child.proc.pid) - cpu) / max(n, 1) * 1e6)
                client_us[kind].append((time.process_time() - mine) / max(n, 1) * 1e6)
                done = totals.setdefault(kind, [0.0, 0.0])
                done[0] += n
                done[1] += t

            # B4_RUNS runs of B4_ROUNDS rounds of short windows in ABBA order (the
            # machine's drift hits both sides alike); a run's ratio is its Lookup rate
            # over its no-op rate, the figure the median of the runs
            runs: list[float] = []
            for _run in range(self.B4_RUNS):
                totals.clear()
                for i in range(self.B4_ROUNDS):
                    order = [("lookup", lookups, l_rates), ("noop", noops, n_rates)]
                    for kind, gate, rates in order if i % 2 == 0 else order[::-1]:
                        window(kind, gate, rates)
                    ratios.append(l_rates[-1] / n_rates[-1])
                runs.append((totals["lookup"][0] / totals["lookup"][1])
                            / (totals["noop"][0] / totals["noop"][1]))
            lookups.close()
            noops.close()
            writes = self._b4_stop_writer(writer, stop)
            if lookups.error_count:
                raise RuntimeError(f"B4 lookups failed: {lookups.errors}")
            say("B4 Search latency over 10,000 records")
            queries: list[tuple[str, dict[str, Any]]] = []
            for _ in range(100):
                i = rng.randrange(10_000)
                queries.append(("name_prefix", {"name": f"Bench VASP {i // 10:04d}"}))
                queries.append(("website", {"website": f"https://{self.names[i]}"}))
                queries.append(("name_and_country", {
                    "name": f"Bench VASP {i // 10:04d}",
                    "country": self.COUNTRIES[i % len(self.COUNTRIES)]}))
            for _kind, q in queries[:20]:  # warm
                client.search(**q)
            rng.shuffle(queries)
            times: dict[str, list[float]] = {}
            hits: list[int] = []
            for kind, q in queries:
                start = time.perf_counter()
                found = client.search(**q)
                times.setdefault(kind, []).append(time.perf_counter() - start)
                hits.append(len(found))
            noop_lat = []
            for _ in range(200):
                start = time.perf_counter()
                noop()
                noop_lat.append(time.perf_counter() - start)
        finally:
            if writer.poll() is None:
                stop.touch()
                writer.wait(timeout=30)
            client.close()
            child.stop()
            self.children.remove(child)
        every = [t for ts in times.values() for t in ts]
        self.results["b4_lookup_ratio"] = round(median(runs), 3)
        self.results["b4_search_p50_ms"] = round(median(every) * 1000, 3)
        self.results["b4_detail"] = {
            "lookup_rate": round(median(l_rates), 1),
            "noop_rate": round(median(n_rates), 1),
            "ratios": [round(r, 3) for r in ratios],
            "runs": [round(r, 3) for r in runs],
            "search_p50_ms_by_kind": {k: round(median(v) * 1000, 3) for k, v in times.items()},
            "search_p90_ms": round(sorted(every)[int(len(every) * 0.9)] * 1000, 3),
            "search_results_p50": median([float(h) for h in hits]),
            "noop_p50_ms": round(median(noop_lat) * 1000, 3),
            "records": len(self.names),
            "client_threads": 4,
            "lookup_keys": "uniform over the records",
            "writer_changes": writes,
            "server_cpu_us_per_lookup": round(median(server_us["lookup"]), 1),
            "server_cpu_us_per_noop": round(median(server_us["noop"]), 1),
            "client_cpu_us_per_lookup": round(median(client_us["lookup"]), 1),
            "client_cpu_us_per_noop": round(median(client_us["noop"]), 1),
            "windows": f"{self.B4_RUNS} runs of {self.B4_ROUNDS} rounds of two 0.6 s "
                       "windows, ABBA order; b4_lookup_ratio: the median run",
            "writer_interval_s": self.B4_WRITE_INTERVAL,
        }

    # ------------------------------------------------------------------ B5

    def b5(self) -> None:
        say("B5 memory: a node process with 10,000 cached peer decisions")
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = self.pki.leaf("node.bench.test", key)

        b5 = self.work / "b5"
        b5.mkdir()
        write_identity(Identity(key, leaf, (self.pki.issuing,)), b5 / "node.pem", b5 / "node.key")
        (b5 / "trust.pem").write_bytes(self.pki.trust_pem())
        (b5 / "leaves.pem").write_bytes(b"".join(pem(c) for c in self.leaves))

        def run(*options: str) -> dict[str, Any]:
            out = subprocess.run(
                [sys.executable, str(HERE / "b5_memory.py"), str(b5), *options],
                capture_output=True, text=True, timeout=180, check=False,
            )
            if out.returncode != 0:
                raise RuntimeError(f"b5_memory.py failed: {out.stderr[-2000:]}")
            return dict(json.loads(out.stdout.strip().splitlines()[-1]))

        detail = run()
        self.results["b5_rss_mb"] = detail["rss_mb"]
        self.results["b5_detail"] = detail


    # ------------------------------------------------------------------ B14

    def b14(self) -> None:
        say("B14 memory: RSS of a default `trisa-peer serve` (all its processes), 5 s "
            "after 2,000 transfers")
        import socket

        write_identity(self.bob.identity, self.work / "bob.pem", self.work / "bob.key")
        (self.work / "trust.pem").write_bytes(self.net.pool.pem())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [str(Path(sys.executable).with_name("trisa-peer")), "serve",
                   "--listen", f"127.0.0.1:{port}",
                   "--cert", str(self.work / "bob.pem"), "--key", str(self.work / "bob.key"),
                   "--trust", str(self.work / "trust.pem"),
                   "--directory", self.net.directory_endpoint, "--directory-insecure",
                   "--db", str(self.work / "b14.db"), "--policy", "rvasp"]
        for endpoint, address in self.net.resolve.items():
            command += ["--resolve", f"{endpoint}:{address.rsplit(':', 1)[0]}"]
        log = (self.work / "b14-serve.log").open("w")
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("serve exited: " + (self.work / "b14-serve.log")
                                       .read_text().strip().splitlines()[-1:][0])
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("serve did not listen within 30 s") from None
                    time.sleep(0.1)
            idle = tree_rss_mb(proc.pid)
            self.point_alice_at(port)
            alice, peer = self.alice.node, self.bob.common_name
            alice.connect(peer)
            left = [2000]
            lock = threading.Lock()

            def send() -> None:
                with lock:
                    if left[0] <= 0:
                        time.sleep(0.01)
                        return
                    left[0] -= 1
                result = alice.send(peer, self.payload)
                if result.state != "accepted":
                    raise RuntimeError(result.describe())

            gate = Gate(self.args.senders, send)
            try:
                start = time.perf_counter()
                while left[0] > 0 and time.perf_counter() - start < 120:
                    gate.window(1.0)
            finally:
                gate.close()
            if gate.error_count or left[0] > 0:
                raise RuntimeError(f"B14 transfers: {gate.error_count} errors, {left[0]} "
                                   f"not sent: {gate.errors}")
            took = time.perf_counter() - start
            time.sleep(5)
            rss, count = tree_rss_mb(proc.pid), len(tree_pids(proc.pid))
            # each gRPC worker thread keeps a malloc arena; RssFile is shared-library pages
            # (how many of a wheel's .so pages are mapped depends on how they entered the
            # page cache: just written by pip, more than read back from disk)
            status = tree_status(proc.pid, "Threads", "RssAnon", "RssFile")
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            self.alice.node.connector.forget(self.bob.common_name)
        self.results["b14_rss_mb_2000"] = round(rss, 1)
        self.results["b14_detail"] = {"rss_idle_mb": round(idle, 1), "processes": count,
                                      "threads": status["Threads"],
                                      "rss_anon_mb": round(status["RssAnon"] / 1024, 1),
                                      "rss_file_mb": round(status["RssFile"] / 1024, 1),
                                      "transfers": 2000, "send_s": round(took, 1),
                                      "store": "sqlite file (durable)", "policy": "rvasp"}

    # ------------------------------------------------------------------ B7, B9

    def alternate(self, targets: dict[str, int], pairs: int, seconds: float,
                  senders: list[tuple[Any, int]]) -> dict[str, list[float]]:
        """Round trips/s to each named target port, in alternating windows. ``senders``:
        (originator, threads) pairs; each originator keeps its own channel."""
        peer = self.bob.common_name

        def sender(node: Any) -> Callable[[], None]:
            def send() -> None:
                result = node.send(peer, self.payload)
                if result.state != "accepted":
                    raise RuntimeError(result.describe())
            return send

        gates = [Gate(n, sender(vasp.node)) for vasp, n in senders]
        rates: dict[str, list[float]] = {name: [] for name in targets}
        try:
            for _ in range(pairs):
                for name, port in targets.items():
                    for vasp, _n in senders:
                        vasp.node.resolver.resolve[self.bob_endpoint.lower()] = \
                            f"127.0.0.1:{port}"
                        vasp.node.connector.forget(peer)
                        vasp.node.connect(peer)
                    self._windows(gates, 0.5)  # warm-up: first contact, decision cache
                    n, took = self._windows(gates, seconds)
                    rates[name].append(n / took)
        finally:
            for gate in gates:
                gate.close()
        return rates

    @staticmethod
    def _windows(gates: list[Gate], seconds: float) -> tuple[int, float]:
        out: list[tuple[int, float]] = []
        threads = [threading.Thread(target=lambda g=g: out.append(g.window(seconds)))
                   for g in gates]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(n for n, _ in out), max(t for _, t in out)

    def b7(self) -> None:
        from trisa_peer.testing.postgres import TemporaryDatabase

        say("B7 transfer rate with the PostgreSQL store / with SQLite (one Bob process "
            "each, durable commits on both), alternating windows")
        with TemporaryDatabase("trisa_peer_bench") as pg:
            lite = self.bob_child("b7-sqlite")
            post = self.bob_child("b7-postgresql", store=pg.url)
            try:
                rates = self.alternate({"sqlite": lite.port, "postgresql": post.port},
                                       pairs=3, seconds=2.5,
                                       senders=[(self.alice, self.args.senders)])
            finally:
                for child in (lite, post):
                    child.stop()
                    self.children.remove(child)
        ratios = [p / q for p, q in zip(rates["postgresql"], rates["sqlite"], strict=True)]
        self.results["b7_ratio"] = round(median(ratios), 3)
        self.results["b7_detail"] = {
            "postgresql_rate": round(median(rates["postgresql"]), 1),
            "sqlite_rate": round(median(rates["sqlite"]), 1),
            "ratios": [round(r, 3) for r in ratios], "senders": self.args.senders,
        }

    def b9(self) -> None:
        from trisa_peer.testing.postgres import TemporaryDatabase

        sys.path.insert(0, str(HERE.parent / "soak"))
        from haproxy import HAProxy

        say("B9 two Bob replicas behind HAProxy (PostgreSQL store) / one Bob process "
            "without it (same store), Alice and Charlie sending, alternating windows")
        with TemporaryDatabase("trisa_peer_bench") as pg:
            replicas = [self.bob_child(f"b9-r{i}", store=pg.url) for i in (1, 2)]
            lb = HAProxy(self.work, [r.port for r in replicas])
            try:
                half = max(1, self.args.senders // 2)
                rates = self.alternate(
                    {"haproxy_2_replicas": lb.port, "direct_1_replica": replicas[0].port},
                    pairs=2, seconds=3.0,
                    senders=[(self.alice, half), (self.net.charlie, half)])
            finally:
                lb.stop()
                for child in replicas:
                    child.stop()
                    self.children.remove(child)
        ratios = [p / q for p, q in zip(rates["haproxy_2_replicas"], rates["direct_1_replica"],
                                        strict=True)]
        self.results["b9_ratio"] = round(median(ratios), 3)
        self.results["b9_detail"] = {
            "two_replicas_rate": round(median(rates["haproxy_2_replicas"]), 1),
            "one_replica_rate": round(median(rates["direct_1_replica"]), 1),
            "ratios": [round(r, 3) for r in ratios], "senders_each": half,
        }

    # ------------------------------------------------------------------ B8, B10, B11

    @staticmethod
    def script(name: str, *args: str, timeout: float = 900) -> Any:
        """Run ``bench/<name>`` (a standalone measurement in its own processes) and
        return the JSON it wrote with ``--out``."""
        with tempfile.TemporaryDirectory(prefix="trisa-bench-script-") as tmp:
            out = Path(tmp) / "out.json"
            proc = subprocess.run([sys.executable, str(HERE / name), *args, "--out", str(out)],
                                  capture_output=True, text=True, timeout=timeout, check=False)
            if proc.returncode != 0 or not out.exists():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                raise RuntimeError(f"{name} failed: {' / '.join(tail)}")
            return json.loads(out.read_text())

    def b8(self) -> None:
        say("B8 serve --workers 2: round trips/s / RSA bound (and / one worker), "
            "bench/b8_workers.py")
        out = self.script("b8_workers.py", "--senders", str(self.args.senders), "--pairs", "3")
        self.results["b8_ratio"] = out["b8_ratio"]
        self.results["b8_detail"] = {k: v for k, v in out.items() if k != "b8_ratio"}

    # B10-B12: standalone load scripts (their own processes), run when present; the
    # windows are trimmed from the scripts' defaults to keep make bench under 5 minutes
    LOAD_SCRIPTS = {
        "b10": ("b_load.py", ("b10_load", "b10_p99_p50"),
                ("--seconds", "3", "--warmup", "1")),
        "b11": ("b_hostile.py", ("b11_hostile_ratio", "b11_rss_growth_mb"),
                ("--pairs", "2", "--seconds", "3")),
        "b12": ("b_idle.py", ("b12_idle_conns",), ("--peers", "8")),
    }

    def load_script(self, name: str) -> None:
        script, keys, options = self.LOAD_SCRIPTS[name]
        if not (HERE / script).exists():
            say(f"{name.upper()} skipped: bench/{script} is not in this tree")
            self.results.setdefault("not_run", []).append(f"{name} (no bench/{script})")
            return
        say(f"{name.upper()} bench/{script} {' '.join(options)}")
        out = self.script(script, *options, timeout=300)
        if not isinstance(out, dict) or not all(k in out for k in keys):
            raise RuntimeError(f"{script} did not give {', '.join(keys)}")
        for key, value in out.items():  # its figures (b10_*, ...), not its own targets
            if key.startswith(f"{name}_"):
                self.results[key] = value
        self.results[f"{name}_detail"] = {**out.get(f"{name}_detail", {}),
                                          "options": list(options)}

    def b10(self) -> None:
        self.load_script("b10")

    def b11(self) -> None:
        self.load_script("b11")

    def b12(self) -> None:
        self.load_script("b12")

    def s1(self) -> None:
        say("S1 transfers list at 1,000,000 stored transfers (latest 100, a peer's latest "
            "20), both backends, bench/b_history.py (a generated history)")
        rows = self.script("b_history.py", "--n", "100000", "--n", "1000000",
                           "--budget", "420", timeout=1200)
        top = [r for r in rows if r["transfers"] == 1_000_000]
        if len(top) != 2:
            raise RuntimeError(f"b_history measured 1,000,000 on {len(top)} backend(s) only")
        self.results["s1_list_100_ms"] = max(r["latest_100_ms"] for r in top)
        self.results["s1_peer_20_ms"] = max(r["peer_latest_20_ms"] for r in top)
        self.results["s1_detail"] = rows

    def s2(self) -> None:
        say("S2 directory import of 100,000 records / of 10,000 (and db copy of them), "
            "both backends, bench/b_import.py")
        out = self.script("b_import.py", timeout=3600)
        ratios = [out[b]["ratio"] for b in ("sqlite", "postgresql") if "ratio" in out.get(b, {})]
        copies = [out[b]["copy_ratio"] for b in ("sqlite", "postgresql")
                  if "copy_ratio" in out.get(b, {})]
        if len(ratios) != 2 or len(copies) != 2:
            raise RuntimeError(f"b_import gave ratios {ratios} and copy ratios {copies}")
        self.results["s2_import_ratio"] = max(ratios)
        self.results["s2_copy_ratio"] = max(copies)
        self.results["s2_detail"] = out

# --------------------------------------------------------------------------- report


def load_levels(b10: Any) -> list[dict[str, float]]:
    """``b10_load`` as a list of {senders, rate, p50_ms, p99_ms, errors}, sorted by
    senders; accepts a list of such rows or a mapping keyed by the sender count."""
    rows: list[dict[str, Any]] = []
    if isinstance(b10, dict):
        for level, row in b10.items():
            if isinstance(row, dict) and str(level).isdigit():
                rows.append({"senders": int(level), **row})
    elif isinstance(b10, list):
        rows = [dict(r) for r in b10 if isinstance(r, dict)]

    def pick(row: dict[str, Any], *names: str) -> float:
        for name in names:
            if isinstance(row.get(name), (int, float)):
                return float(row[name])
        return float("nan")

    out = [{"senders": pick(r, "senders", "concurrency"),
            "rate": pick(r, "rate", "transfers_per_s", "tps"),
            "p50_ms": pick(r, "p50_ms", "p50"), "p99_ms": pick(r, "p99_ms", "p99"),
            "errors": pick(r, "errors", "error_count")} for r in rows]
    return sorted((r for r in out if r["senders"] == r["senders"]), key=lambda r: r["senders"])


def plot(results: dict[str, Any], path: Path) -> str:
    """Write ``report.png``: latency against concurrency (B10) and every figure with a
    target as headroom (>= 1 meets it). Returns what was done, in words; needs the
    ``bench`` extra (matplotlib), which ``make bench`` installs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "report.png not written: matplotlib missing (pip install -e '.[bench]')"
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5),
                                      gridspec_kw={"width_ratios": [1, 1.3]})
    levels = load_levels(results.get("b10_load"))
    if levels:
        xs = [lv["senders"] for lv in levels]
        left.plot(xs, [lv["p50_ms"] for lv in levels], "o-", label="p50")
        left.plot(xs, [lv["p99_ms"] for lv in levels], "s-", label="p99")
        left.set_xscale("log", base=2)
        left.set_xticks(xs, [f"{x:g}" for x in xs])
        left.legend()
    else:
        left.text(0.5, 0.5, "b10_load not measured\n(bench/b_load.py absent)",
                  ha="center", va="center", transform=left.transAxes)
    left.set_xlabel("concurrent senders (processes)")
    left.set_ylabel("transfer latency at the sender (ms)")
    left.set_title("B10 latency against concurrency")
    left.grid(True, alpha=0.3)
    names, heads, colors, notes = [], [], [], []
    for key, (op, target) in TARGETS.items():
        value = results.get(key)
        if not isinstance(value, (int, float)) or value != value:
            continue
        head = value / target if op == ">=" else (target / value if value else float("inf"))
        names.append(key)
        heads.append(min(head, 3.0))
        colors.append("tab:green" if head >= 1 else "tab:red")
        notes.append(f"{value:g} (target {op} {target:g})")
    ys = list(range(len(names)))
    right.barh(ys, heads, color=colors)
    right.axvline(1.0, color="black", linewidth=1)
    right.set_yticks(ys, names)
    right.invert_yaxis()
    for y, h, note in zip(ys, heads, notes, strict=True):
        right.text(h + 0.03, y, note, va="center", fontsize=8)
    right.set_xlim(0, 3.6)
    right.set_xlabel("headroom: value / target (>= targets), target / value (<= targets)")
    right.set_title("each figure against its target (green: met)")
    fig.suptitle(f"trisa-peer make bench, {results.get('started', '')}, "
                 f"{results['machine']['nproc']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return f"plot in {path}"


def verdict(key: str, value: float) -> str:
    if key not in TARGETS:
        return "-"
    op, target = TARGETS[key]
    ok = value >= target if op == ">=" else value <= target
    return "PASS" if ok else "MISS"


def table(r: dict[str, Any]) -> str:
    d = {k: r.get(k + "_detail", {})
         for k in ("b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9", "b14")}
    rows = [
        ("B1 transfer round trips/s", "b1_ratio", f"{r.get('b1_rate', 'n/a')} rt/s",
         f"bound {r.get('b1_bound', 'n/a')} rt/s", "b1_ratio"),
        ("B2 verification overhead (p50)", "b2_ratio",
         f"{d['b2'].get('on_p50_ms', 'n/a')} ms", f"{d['b2'].get('off_p50_ms', 'n/a')} ms",
         "b2_ratio"),
        ("B3 first contact (p50)", "b3_ratio",
         f"{d['b3'].get('first_contact_p50_ms', 'n/a')} ms",
         f"ref {d['b3'].get('reference_p50_ms', 'n/a')} ms", "b3_ratio"),
        ("B3 old: / bare mTLS + one RPC", "b3_bare_ratio",
         f"{d['b3'].get('first_contact_p50_ms', 'n/a')} ms",
         f"{d['b3'].get('bare_mtls_rpc_p50_ms', 'n/a')} ms", "b3_bare_ratio"),
        ("B4 Lookup / no-op, median of 3", "b4_lookup_ratio",
         f"{d['b4'].get('lookup_rate', 'n/a')}/s",
         f"{d['b4'].get('noop_rate', 'n/a')}/s", "b4_lookup_ratio"),
        ("B4 Search p50, 10k records", "b4_search_p50_ms",
         f"{r.get('b4_search_p50_ms', 'n/a')} ms", f"no-op {d['b4'].get('noop_p50_ms', 'n/a')} ms",
         "b4_search_p50_ms"),
        ("B5 RSS, 10k cached decisions", "b5_rss_mb", f"{r.get('b5_rss_mb', 'n/a')} MB",
         f"idle {d['b5'].get('rss_idle_mb', 'n/a')} MB", "b5_rss_mb"),
        ("B6 TransferStream / unary", "b6_ratio", f"{d['b6'].get('stream_rate', 'n/a')} env/s",
         f"{d['b6'].get('unary_rate', 'n/a')} env/s", "b6_ratio"),
        ("B7 PostgreSQL / SQLite store", "b7_ratio",
         f"{d['b7'].get('postgresql_rate', 'n/a')} rt/s",
         f"{d['b7'].get('sqlite_rate', 'n/a')} rt/s", "b7_ratio"),
        ("B8 --workers 2 / RSA bound", "b8_ratio", f"{d['b8'].get('rate_workers', 'n/a')} rt/s",
         f"bound {d['b8'].get('bound', 'n/a')} rt/s", "b8_ratio"),
        ("B9 2 replicas+HAProxy / direct", "b9_ratio",
         f"{d['b9'].get('two_replicas_rate', 'n/a')} rt/s",
         f"{d['b9'].get('one_replica_rate', 'n/a')} rt/s", "b9_ratio"),
        ("B10 p99/p50 at 64 senders", "b10_p99_p50",
         f"{r.get('b10_p99_p50', 'n/a')}", "b_load.py", "b10_p99_p50"),
        ("B10 errors, 1-64 senders", "b10_errors",
         f"{r.get('b10_errors', 'n/a')}", "b_load.py", "b10_errors"),
        ("B11 rate under a flood / quiet", "b11_hostile_ratio",
         f"{r.get('b11_hostile_ratio', 'n/a')}", "b_hostile.py", "b11_hostile_ratio"),
        ("B11 RSS growth in the flood", "b11_rss_growth_mb",
         f"{r.get('b11_rss_growth_mb', 'n/a')} MB", "b_hostile.py", "b11_rss_growth_mb"),
        ("B12 1st transfer, 1k idle conns", "b12_idle_conns",
         f"{r.get('b12_idle_conns', 'n/a')}", "b_idle.py", "b12_idle_conns"),
        ("B13 CPU/round trip outside RSA", "b13_non_rsa_cpu_ms",
         f"{r.get('b13_non_rsa_cpu_ms', 'n/a')} ms",
         f"RSA {d['b1'].get('rsa_cpu_ms_per_rt', 'n/a')} ms", "b13_non_rsa_cpu_ms"),
        ("B14 serve RSS after 2,000", "b14_rss_mb_2000",
         f"{r.get('b14_rss_mb_2000', 'n/a')} MB",
         f"idle {d['b14'].get('rss_idle_mb', 'n/a')} MB", "b14_rss_mb_2000"),
        ("S1 list latest 100, 1M stored", "s1_list_100_ms",
         f"{r.get('s1_list_100_ms', 'n/a')} ms", "slower backend", "s1_list_100_ms"),
        ("S1 a peer's latest 20, 1M", "s1_peer_20_ms",
         f"{r.get('s1_peer_20_ms', 'n/a')} ms", "slower backend", "s1_peer_20_ms"),
        ("S2 import 100k / 10k records", "s2_import_ratio", "100k records", "10k records",
         "s2_import_ratio"),
        ("S2 db copy 100k / 10k records", "s2_copy_ratio", "100k records", "10k records",
         "s2_copy_ratio"),
    ]
    head = f"| {'figure':<31} | {'value':>14} | {'baseline':>18} | {'ratio':>7} | " \
           f"{'target':>7} | {'result':<6} |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for label, key, value, base, ratio_key in rows:
        raw = r.get(ratio_key)
        shown = f"{raw:.3f}" if isinstance(raw, (int, float)) else "n/a"
        if ratio_key in ("b4_search_p50_ms", "b5_rss_mb", "s1_list_100_ms", "s1_peer_20_ms",
                         "b10_errors",
                         "b11_rss_growth_mb", "b13_non_rsa_cpu_ms", "b14_rss_mb_2000"):
            shown = "-"
        op_target = TARGETS.get(key)
        target = f"{op_target[0]} {op_target[1]:g}" if op_target else "report"
        result = verdict(key, r[key]) if isinstance(r.get(key), (int, float)) else "n/a"
        lines.append(f"| {label:<31} | {value:>14} | {base:>18} | {shown:>7} | {target:>7} | "
                     f"{result:<6} |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--rsa-worker":
        return rsa_worker(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=8, help="B1 concurrent senders")
    parser.add_argument("--experiments", action="store_true",
                        help="also run the B1 variants behind the proposed fixes")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--scale", action="store_true",
                        help="also run S1 and S2 (1,000,000 stored transfers; 100,000 "
                        "directory records; about 20 minutes)")
    parser.add_argument("--plot", default=str(HERE / "report.png"),
                        help="where to draw the figures ('' for no plot)")
    parser.add_argument("--only", default="",
                        help="comma list of " + ",".join(ONLY_KEYS) + " (debugging)")
    args = parser.parse_args()
    only = set(filter(None, args.only.lower().split(",")))
    if only - set(ONLY_KEYS):  # a typo would run nothing and overwrite the results
        parser.error(f"--only: unknown {', '.join(sorted(only - set(ONLY_KEYS)))} "
                     f"(known: {','.join(ONLY_KEYS)})")

    def want(name: str) -> bool:
        return not only or name in only

    started = time.perf_counter()
    bench = Bench(args)
    results = bench.results
    results["machine"] = machine()
    results["started"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    failures: dict[str, str] = {}
    try:
        bench.start()
        steps: list[tuple[str, Callable[[], None]]] = [
            ("b3", bench.b3), ("b2", bench.b2), ("b1", bench.b1),
        ]
        if args.experiments:
            steps.append(("b1x", bench.b1_experiments))
        if want("b4") or want("b5"):
            steps.insert(0, ("pki", bench.make_pki))
        steps += [("b14", bench.b14), ("b4", bench.b4), ("b5", bench.b5), ("b7", bench.b7),
                  ("b9", bench.b9), ("b8", bench.b8), ("b10", bench.b10), ("b11", bench.b11),
                  ("b12", bench.b12), ("s1", bench.s1), ("s2", bench.s2)]
        for name, step in steps:
            if name == "b1x" and not want("b1"):
                continue
            if name in ("s1", "s2") and not (args.scale or name in only):
                continue  # minutes each: `make bench-scale` (--scale) runs them
            if name != "pki" and name != "b1x" and not want(name) and not (
                    name == "b1" and want("b6")):
                continue
            try:
                step()
            except Exception as exc:
                failures[name] = repr(exc)
                say(f"{name} failed: {exc!r}")
    finally:
        bench.stop()
    results["failures"] = failures
    results["duration_s"] = round(time.perf_counter() - started, 1)
    ordered = {k: results[k] for k in (
        "b1_rate", "b1_bound", "b1_ratio", "b2_ratio", "b3_ratio", "b3_bare_ratio",
        "b4_lookup_ratio", "b4_search_p50_ms", "b5_rss_mb", "b6_ratio", "b7_ratio", "b8_ratio",
        "b9_ratio", "b10_load", "b10_errors", "b10_p99_p50", "b11_hostile_ratio",
        "b11_rss_growth_mb", "b12_idle_conns", "b13_non_rsa_cpu_ms", "b14_rss_mb_2000",
        "s1_list_100_ms", "s1_peer_20_ms", "s2_import_ratio", "s2_copy_ratio")
        if k in results}
    ordered.update({k: v for k, v in results.items() if k not in ordered})
    Path(args.out).write_text(json.dumps(ordered, indent=2) + "\n")
    print(table(results))
    if args.plot:
        say(plot(results, Path(args.plot)))
    m = results["machine"]
    print(f"\nmachine: {m['nproc']} x {m['cpu']}; Python {m['python']}, grpcio {m['grpcio']}, "
          f"cryptography {m['cryptography']}; {results['duration_s']} s; "
          f"results in {args.out}")
    if failures:
        print(f"failed figures: {failures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
