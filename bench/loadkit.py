"""Shared pieces of the load figures B10-B12 (bench/b_load.py, b_hostile.py, b_idle.py).

* :func:`network`: the simulated network with RSA-4096 identities (as bench/run.py
  builds it), Bob's identity and the trust pool written to files for child processes;
* :class:`Serve`: Bob as a real ``trisa-peer serve --policy rvasp`` process on 127.0.0.1
  (its RSS, its open files, stopped with SIGTERM then SIGKILL);
* :func:`bob_payload`: Alice's payload that Bob's rvasp policy accepts;
* :func:`percentile`, :func:`rss_bytes`, :func:`load_average`, :func:`write_out`.

Nothing here checks a figure against its target: the scripts report, they do not gate.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trisa_peer.certs import write_identity
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.network import SimulatedNetwork
from trisa_peer.testing.policies import originator_payload

MB = 1024 * 1024


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def network(work: Path) -> SimulatedNetwork:
    """Start the RSA-4096 simulated network in ``work``; writes bob.pem/bob.key/trust.pem."""
    say("starting the simulated network with RSA-4096 identities (CA, GDS, nodes)")
    net = SimulatedNetwork(work / "net", key_size=4096, async_delay=0.2).start()
    write_identity(net.bob.identity, work / "bob.pem", work / "bob.key")
    (work / "trust.pem").write_bytes(net.pool.pem())
    return net


def bob_payload(net: SimulatedNetwork, originator: str | None = None) -> Any:
    """A payload from Alice's SendFull wallet to Bob's SyncRepair wallet (accepted)."""
    wallet_a = BOOK.wallets_of(originator or net.alice.common_name)[1]
    wallet_b = BOOK.wallets_of(net.bob.common_name)[0]
    return originator_payload(wallet_a, wallet_b, sent_at=datetime.now(UTC))


def resolve_flags(net: SimulatedNetwork) -> list[str]:
    """``--resolve NAME:PORT:127.0.0.1`` for every node of the network."""
    pairs = [f"{name}:{address.rsplit(':', 1)[0]}" for name, address in net.resolve.items()]
    return list(itertools.chain(*(("--resolve", r) for r in pairs)))


class Serve:
    """Bob as ``trisa-peer serve --policy rvasp`` on a port of its own (one process)."""

    def __init__(self, net: SimulatedNetwork, work: Path, name: str,
                 extra: tuple[str, ...] = ()) -> None:
        argv = [sys.executable, "-m", "trisa_peer", "serve", "--listen", "127.0.0.1:0",
                "--db", str(work / f"bob-{name}.db"), "--policy", "rvasp",
                "--cert", str(work / "bob.pem"), "--key", str(work / "bob.key"),
                "--trust", str(work / "trust.pem"), "--directory", net.directory_endpoint,
                "--directory-insecure", *resolve_flags(net), *extra]
        self.log_path = work / f"bob-{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        self.port = 0
        while not self.port and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            match = re.search(r"serving on port (\d+)", line)
            if match:
                self.port = int(match[1])
        if not self.port:
            self.stop()
            raise RuntimeError(f"trisa-peer serve did not start; see {self.log_path}")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # drain

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return 0

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def load_average() -> float:
    """The 1-minute load average: above the core count means the machine was shared."""
    return round(os.getloadavg()[0], 2)


def write_out(doc: dict[str, Any], out: str | None) -> None:
    """Print ``doc`` as JSON and write it to ``out`` when given."""
    text = json.dumps(doc, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
