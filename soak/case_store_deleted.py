"""The ``--db`` folder deleted under a running node: nothing acknowledged is lost.

Issue 11 §6. Before the fix SQLite kept committing into the unlinked file: 40/40
transfers acknowledged, 0 in the store after restart, nothing logged. Now the store
checks after every commit (one ``stat``) that its path still names the file it opened;
if not, the commit is not acknowledged (UNAVAILABLE), one error line is logged, and
TRISAHealth reports UNHEALTHY, until restart.

Bob runs as ``trisa-peer serve --db DIR/transfers.db --policy accept`` in a child
process; Alice (in this process, simulated network) sends 40 transfers one after the
other. After the first half, with Bob idle, the folder is copied aside (the operator's
backup: it holds every transfer acknowledged so far) and then deleted; the second half
is sent. Bob is stopped, the backup is put back at the original path and opened as a
restart would open it. Every transfer Alice saw acknowledged must be in it.

Targets: 0 acknowledged-but-lost; every transfer after the deletion refused (none
acknowledged); Bob UNHEALTHY after the deletion (HEALTHY before); exactly one error line
saying the store is unusable.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import Result, scaled, stop_process

from trisa_peer._pb.trisa.api.v1beta1 import api_pb2
from trisa_peer.certs import write_identity
from trisa_peer.errors import TrisaPeerError
from trisa_peer.network.store import TransferStore
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.network import SimulatedNetwork, free_port
from trisa_peer.testing.policies import originator_payload

NAME = "store_deleted"
ROOT = Path(__file__).resolve().parent.parent


def _payload() -> Any:
    o, b = BOOK.wallets_of("alice.vasp.test")[1], BOOK.wallets_of("bob.vasp.test")[0]
    return originator_payload(o, b, sent_at=datetime.now(UTC))


class Bob:
    """``trisa-peer serve`` for Bob's identity in a child process."""

    def __init__(self, net: SimulatedNetwork, work: Path, db: Path) -> None:
        bob = net.bob
        cert, key, trust = work / "bob.pem", work / "bob.key", work / "trust.pem"
        write_identity(bob.identity, cert, key)
        trust.write_bytes(net.pool.pem())
        self.port = free_port()
        self.log_path = work / "bob.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trisa_peer", "serve", "--listen", f"127.0.0.1:{self.port}",
             "--cert", str(cert), "--key", str(key), "--trust", str(trust),
             "--directory", net.directory_endpoint, "--directory-insecure",
             "--db", str(db), "--policy", "accept"],
            stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "serving on port" not in line:
            self.stop()
            raise RuntimeError(f"bob did not start: {self.log_path.read_text()[-500:]}")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text()


def run(scale: float) -> Result:
    result = Result(NAME)
    total = scaled(40, scale, minimum=10)
    with tempfile.TemporaryDirectory(prefix="soak-store-") as tmp, \
            SimulatedNetwork(Path(tmp) / "net") as net:
        work = Path(tmp)
        folder, backup = work / "db", work / "db-backup"
        folder.mkdir()
        net.bob.node.stop()  # Bob's in-process node gives way to the child
        bob = Bob(net, work, folder / "transfers.db")
        try:
            alice = net.alice.node
            bob_cn = net.bob.common_name
            alice.resolver.resolve[f"{bob_cn}:{net.bob.port}"] = f"127.0.0.1:{bob.port}"
            alice.connector.forget(bob_cn)

            def health() -> int:
                channel = alice.connect(bob_cn)
                state = channel.health.Status(api_pb2.HealthCheck(), timeout=5)
                return int(state.status)

            def send() -> str | None:
                """The envelope id if Bob acknowledged the transfer, else None."""
                try:
                    reply = alice.send(bob_cn, _payload())
                except TrisaPeerError:
                    return None
                return reply.envelope_id if reply.state == "accepted" else None

            acked_before = [eid for eid in (send() for _ in range(total // 2)) if eid]
            healthy_before = health() == api_pb2.ServiceState.HEALTHY
            time.sleep(0.2)  # Bob idle: every acknowledged commit is in the files
            shutil.copytree(folder, backup)
            started = time.monotonic()
            shutil.rmtree(folder)
            acked_after = [eid for eid in (send() for _ in range(total - total // 2)) if eid]
            after_seconds = time.monotonic() - started
            unhealthy_after = health() == api_pb2.ServiceState.UNHEALTHY
        finally:
            bob.stop()
        log = bob.log()
        shutil.move(backup, folder)  # the restart opens what the path names
        store = TransferStore(folder / "transfers.db")
        try:
            acked = acked_before + acked_after
            lost = sum(1 for eid in acked if not any(
                r.direction == "incoming" and r.kind == "request" and r.state == "accepted"
                for r in store.exchange(eid)))
        finally:
            store.close()

    unusable_lines = [ln for ln in log.splitlines()
                      if "ERROR" in ln and "commits would be lost" in ln]
    result.figure("transfers", total)
    result.figure("acked_before_delete", len(acked_before))
    result.figure("acked_after_delete", len(acked_after))
    result.figure("refused_after_delete", (total - total // 2) - len(acked_after))
    result.figure("acked_but_lost", lost)
    result.figure("healthy_before", healthy_before)
    result.figure("unhealthy_after", unhealthy_after)
    result.figure("store_error_lines", len(unusable_lines))
    result.figure("error_lines", sum(1 for ln in log.splitlines() if " ERROR " in ln))
    result.figure("tracebacks", log.count("Traceback"))
    result.figure("after_delete_seconds", round(after_seconds, 2))
    result.target("acked_but_lost", "==", 0)
    result.target("acked_before_delete", "==", total // 2)
    result.target("acked_after_delete", "==", 0)
    result.target("healthy_before", "==", True)
    result.target("unhealthy_after", "==", True)
    result.target("store_error_lines", "==", 1)
    result.target("error_lines", "<=", 2)  # the cause, and refusals aggregated per 10 s
    result.target("tracebacks", "==", 0)
    return result
