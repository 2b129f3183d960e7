"""B12 (issue 16 section 3): a new peer's first transfer while 1,000 idle connections sit on Bob.

Standalone (``bench/run.py`` integrates it): ``.venv/bin/python bench/b_idle.py [--out F]``.
RSA-4096 identities from the simulated network; Bob is the real ``trisa-peer serve
--policy rvasp --handshake-timeout 5`` process. A holder process (this script with
``--hold``, running soak/case_idle_connections.py's ``Attack``) keeps ``--idle`` plain
TCP connections open to Bob that never start TLS, reopening every one Bob closes.

A *new verified peer* is a VASP registered (VERIFIED) in the directory just before its
turn and never seen by Bob: its certificate is issued by the TRISA CA for its own
common name (on Alice's RSA-4096 key, to keep the set-up short: Bob's decisions are
per certificate and name, not per key). Its first transfer, timed in this process, is
``TrisaNode.send`` from a fresh node: its look-up of Bob, the pinned mTLS handshake,
Bob's look-up and verification of it, the key exchange and the first Transfer (must be
``accepted``). Phases: ``--peers`` new peers without the holder, the same with it
(measured from twice the handshake timeout after the holder opened its connections;
its open count and Bob's open files are logged, and when each peer began after the
holder opened, against Bob's close cycle of one handshake timeout), and again without.
``b12_idle_conns`` = median with / median of both phases without (target <= 1.5).
Not checked here: Bob's file limit (soak/case_idle_connections.py holds it to 1,024).
Bounded: about 30 s of start-up, 2 x handshake timeout, and 3 x peers first contacts.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent / "soak"))  # after bench/: both have a run.py

from childproc import LineChild  # noqa: E402

HANDSHAKE_TIMEOUT = 5.0


# --------------------------------------------------------------------- the holder process


def hold(port: int, count: int) -> int:
    """Keep ``count`` idle connections to ``port``; print the counts on each stdin line."""
    from case_idle_connections import Attack, _own_limit

    _own_limit(count + 200)
    attack = Attack(port, count)
    thread = threading.Thread(target=attack.run, daemon=True)
    thread.start()
    print("READY", flush=True)
    for _ in sys.stdin:
        print(json.dumps({"open": attack.open_now, "closed_by_node": attack.closed_by_node,
                          "reopened": attack.reopened,
                          "failed_connects": attack.failed_connects}), flush=True)
    attack.stop.set()
    thread.join(timeout=10)
    return 0


class Holder(LineChild):
    """The ``--hold`` child process."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__([str(Path(__file__).resolve()), "--hold", str(port), str(count)],
                         "the holder")
        self.ready()

    def status(self) -> dict[str, Any]:
        self.send("status")
        return self.result()


# --------------------------------------------------------------------- new peers


class Peers:
    """Mints, registers and runs new verified peers (fresh nodes) against Bob."""

    def __init__(self, net: Any, work: Path, bob_port: int) -> None:
        from loadkit import bob_payload

        self.net = net
        self.work = work
        self.resolve = dict(net.resolve)
        self.resolve[f"{net.bob.common_name}:{net.bob.port}".lower()] = f"127.0.0.1:{bob_port}"
        self.payload = bob_payload(net)
        self.made = 0

    def new(self) -> Any:
        """A TrisaNode for a VASP registered just now, with its own directory client."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import NameOID

        from trisa_peer.certs import Identity
        from trisa_peer.network.handler import Reject
        from trisa_peer.network.node import TrisaNode
        from trisa_peer.network.store import TransferStore
        from trisa_peer.testing.network import free_port
        from trisa_peer.transport.identity import Material
        from trisa_peer.transport.server import StaticMaterial

        self.made += 1
        cn = f"newpeer{self.made}.vasp.test"
        key = self.net.alice.identity.key
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
               .sign(key, hashes.SHA256()))
        leaf = self.net.ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM))
        identity = Identity(key=key, leaf=leaf, chain=(self.net.ca.issuing,))
        self.net.directory.directory.add(common_name=cn, endpoint=f"{cn}:{free_port()}",
                                         certificates=[leaf, self.net.ca.issuing], name=cn)
        return TrisaNode(StaticMaterial(Material(identity, self.net.pool, None, 1)),
                         self.net.directory_client(),
                         store=TransferStore(self.work / f"{cn}.db"),
                         handler=lambda _i: Reject(50, "-"), resolve=self.resolve, timeout=10)

    def first_contact(self) -> float:
        """Seconds for a new peer's first transfer to Bob (raises unless accepted)."""
        node = self.new()
        try:
            start = time.perf_counter()
            result = node.send(self.net.bob.common_name, self.payload)
            took = time.perf_counter() - start
        finally:
            node.close()
            node.directory.close()
        if result.state != "accepted":
            raise RuntimeError(f"a new peer's first transfer was {result.describe()}")
        return took


def phase(peers: Peers, count: int, gap: float, bob_pid: int, since: float,
          probe: Any = None) -> dict[str, Any]:
    """``count`` new peers' first contacts; ``at_s``: when each began, from ``since``."""
    from run import child_cpu

    times: list[float] = []
    starts: list[float] = []
    probes: list[Any] = []
    cpu0, wall0 = child_cpu(bob_pid), time.monotonic()
    for _ in range(count):
        if probe is not None:
            probes.append(probe())
        starts.append(time.monotonic() - since)
        times.append(peers.first_contact())
        time.sleep(gap)
    out: dict[str, Any] = {"median_ms": round(statistics.median(times) * 1000, 1),
                           "ms": [round(t * 1000, 1) for t in times],
                           "at_s": [round(t, 2) for t in starts],
                           "bob_cores": round((child_cpu(bob_pid) - cpu0)
                                              / (time.monotonic() - wall0), 2)}
    if probes:
        out["probes"] = probes
    return out


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--idle", type=int, default=1000, help="idle connections (1000)")
    parser.add_argument("--peers", type=int, default=16, help="new peers per phase (16)")
    parser.add_argument("--gap", type=float, default=0.5,
                        help="seconds between new peers (0.5: a phase spans a close cycle)")
    parser.add_argument("--out", metavar="FILE.json", help="also write the JSON here")
    parser.add_argument("--hold", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold:
        return hold(*args.hold)
    if args.idle < 1 or args.peers < 1 or args.gap < 0:
        parser.error("--idle and --peers must be >= 1, --gap >= 0")

    from loadkit import Serve, load_average, network, say, write_out

    started = time.perf_counter()
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="trisa-b12-") as name:
        work = Path(name)
        net = network(work)
        bob: Serve | None = None
        holder: Holder | None = None
        try:
            say(f"starting Bob: trisa-peer serve --handshake-timeout {HANDSHAKE_TIMEOUT:g}")
            bob = Serve(net, work, "b12", ("--handshake-timeout", f"{HANDSHAKE_TIMEOUT:g}"))
            peers = Peers(net, work, bob.port)
            say("warm-up: one new peer (Bob's directory channel, the code paths)")
            warm_ms = round(peers.first_contact() * 1000, 1)
            fds_before = bob.fds()
            say(f"B12: {args.peers} new peers without idle connections")
            before = phase(peers, args.peers, args.gap, bob.pid, time.monotonic())
            say(f"  median {before['median_ms']} ms; Bob has {fds_before} open files")
            say(f"B12: holding {args.idle} idle connections, waiting "
                f"{2 * HANDSHAKE_TIMEOUT:g} s (twice the handshake timeout)")
            holder = Holder(bob.port, args.idle)
            held = time.monotonic()
            time.sleep(2 * HANDSHAKE_TIMEOUT)
            bob_ref = bob
            holder_ref = holder

            def probe() -> dict[str, Any]:
                return {**holder_ref.status(), "bob_fds": bob_ref.fds()}

            during = phase(peers, args.peers, args.gap, bob.pid, held, probe)
            end_status = probe()
            say(f"  median {during['median_ms']} ms; holder/Bob at the end: {end_status}")
            holder.stop()
            holder = None
            time.sleep(1.0)
            say(f"B12: {args.peers} new peers without idle connections again")
            after = phase(peers, args.peers, args.gap, bob.pid, time.monotonic())
            say(f"  median {after['median_ms']} ms")
            running = bob.proc.poll() is None
        finally:
            if holder is not None:
                holder.stop()
            if bob is not None:
                bob.stop()
            net.stop()
    without = statistics.median(before["ms"] + after["ms"])
    doc = {
        "b12_idle_conns": round(during["median_ms"] / without, 3),
        "b12_detail": {
            "load_average": [load_start, load_average()], "nproc": os.cpu_count(),
            "idle": args.idle, "handshake_timeout_s": HANDSHAKE_TIMEOUT,
            "first_contact_ms_without": round(without, 1),
            "first_contact_ms_with": during["median_ms"],
            "warm_up_ms": warm_ms, "before": before, "during": during, "after": after,
            "holder_at_end": end_status, "bob_fds_before": fds_before,
            "bob_running": running, "elapsed_s": round(time.perf_counter() - started, 1),
        },
        "targets": {"b12_idle_conns": ["<=", 1.5]},
    }
    write_out(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
