"""A real ``trisa-peer serve`` process for Bob against an in-process directory, and an
in-process node for Alice that talks to it (test_metrics.py, test_json_logs.py); the
directory with both registered (also test_node_cli.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import PKI
from pki import identity, pool

from trisa_peer.directory.client import DirectoryClient
from trisa_peer.directory.server import DirectoryServer
from trisa_peer.directory.store import SQLiteStore
from trisa_peer.network.handler import Accept
from trisa_peer.network.node import TrisaNode
from trisa_peer.network.store import TransferStore
from trisa_peer.testing.network import free_port
from trisa_peer.transport.identity import Material
from trisa_peer.transport.material import StaticMaterial


def directory_with_bob_and_alice(tmp: Path) -> tuple[DirectoryServer, int]:
    """A started directory (SQLite in ``tmp``) with bob.vasp.test and alice.vasp.test
    registered at free ports; returns it and the port registered for Bob."""
    gds = DirectoryServer(SQLiteStore(tmp / "gds.db"), listen="127.0.0.1:0")
    gds.start()
    bob_port = free_port()
    for name, port in (("bob", bob_port), ("alice", free_port())):
        ident = identity(name)
        gds.directory.add(common_name=ident.common_name, endpoint=f"{ident.common_name}:{port}",
                          certificates=[ident.leaf, *ident.chain])
    return gds, bob_port


class BobProcess:
    """``serve`` for bob.vasp.test with ``extra`` options; ``metrics_port`` when
    ``--metrics-listen`` is among them. ``stop()`` returns its stderr."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.tmp = tmp
        self.gds, self.bob_port = directory_with_bob_and_alice(tmp)
        self.db = tmp / "bob.db"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trisa_peer", "serve", "--listen",
             f"127.0.0.1:{self.bob_port}", "--db", str(self.db), "--policy", "rvasp",
             "--cert", str(PKI / "bob.pem"), "--key", str(PKI / "bob.key"),
             "--trust", str(PKI / "trust.pem"), "--directory", self.gds.endpoint,
             "--directory-insecure", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.metrics_port = 0
        # one process: its "serving on port" line; --workers: the supervisor's last line
        until = "workers serving on" if "--workers" in extra else "serving on port"
        for _ in range(20):
            line = self.proc.stdout.readline()
            found = re.search(r"metrics and probes on http://127\.0\.0\.1:(\d+)/", line)
            if found:
                self.metrics_port = int(found.group(1))
                continue
            assert "serving on port" in line or until in line, self._fail(line)
            if until in line:
                break
        self._alice: TrisaNode | None = None
        self._directory: DirectoryClient | None = None

    def _fail(self, line: str) -> str:
        self.proc.terminate()
        return line + (self.proc.communicate(timeout=10)[1] or "")

    def alice(self) -> TrisaNode:
        """Alice's node (not listening), dialing Bob's process by name."""
        if self._alice is None:
            self._directory = DirectoryClient(self.gds.endpoint, insecure=True, timeout=5)
            self._alice = TrisaNode(
                StaticMaterial(Material(identity("alice"), pool(), None, 1)), self._directory,
                store=TransferStore(self.tmp / "alice.db"), handler=lambda incoming: Accept(),
                listen="127.0.0.1:0",
                resolve={f"bob.vasp.test:{self.bob_port}": f"127.0.0.1:{self.bob_port}"})
        return self._alice

    def forget_alice(self) -> None:
        """Close Alice's node: the next :meth:`alice` dials anew (a new connection)."""
        if self._alice is not None:
            self._alice.close()
        if self._directory is not None:
            self._directory.close()
        self._alice = self._directory = None

    def stop(self) -> str:
        self.forget_alice()
        if self.proc.poll() is None:
            self.proc.terminate()
        _, err = self.proc.communicate(timeout=15)
        self.gds.stop()
        return err or ""


def close_quietly(bob: Any) -> None:
    if bob.proc.poll() is None:
        bob.stop()
