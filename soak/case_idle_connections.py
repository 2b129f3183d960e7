"""Idle connections against a node whose open-files hard limit is 1,024.

Issue 11 §7. Before: TCP connections that never start TLS were kept open forever
(300/300 after 50 s), so 1,100 of them made a node with a 1,024 file limit unreachable
for new peers. Now the node closes connections that have not finished the handshake
within ``--handshake-timeout`` (default 5 s) and raises its soft file limit to the hard
limit at start.

A ``trisa-peer serve`` child runs with ``RLIMIT_NOFILE`` soft = hard = ``LIMIT``
(``prlimit --nofile=1024:1024``, or ``setrlimit`` in the child before exec where there
is no ``prlimit``), its directory in this process. An attacker keeps ``IDLE``
(> ``LIMIT``) plain TCP connections open to it for ``SECONDS``, reopening every one the
node closes, while a new peer (Alice, registered) opens a fresh mTLS connection every
``PERIOD`` s (each in its own thread) and calls TRISAHealth/Status, which the node
answers only after its steps 3-4.

Figures: connections the node closed, new-peer handshake success rate and latency
(p50 / p95 / max), the node's open files at the peak. Targets: every new peer answered
(success rate 1.0) within ``PEER_DEADLINE``; the node closed idle connections; it
logged its file limit once; it is still running.

The twin: the same attack against a node with the handshake timeout out of reach
(1 day) and no idle limit: new peers are not answered, which is the failure the fix
removes (held to success rate < 0.5).

Scale 1.0: limit 1,024, 1,200 idle connections, 60 s (twin 15 s). Scale < 0.5: limit
128, 150 idle connections, 15 s (twin 5 s): the same assertions.
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from common import Result, stop_process

NAME = "idle_connections"

ROOT = Path(__file__).resolve().parent.parent
PKI = ROOT / "certs" / "fixtures"
PERIOD = 1.0  # seconds between new peers
PEER_DEADLINE = 10.0  # seconds a new peer waits for its answer (twice the timeout)


def _own_limit(need: int) -> int:
    """Raise this process's soft file limit to its hard limit; the attacker needs
    more than ``need`` descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < need:
        raise RuntimeError(f"this process may open {soft} files, the attack needs {need}")
    return soft


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Directory:
    """The project's directory server in this process, Alice and Bob VERIFIED."""

    def __init__(self, tmp: Path, bob_port: int) -> None:
        sys.path.insert(0, str(ROOT))
        from trisa_peer.certs import load_identity
        from trisa_peer.directory import DirectoryServer, SQLiteStore

        self.store = SQLiteStore(tmp / "gds.db")
        self.server = DirectoryServer(self.store, listen="127.0.0.1:0")
        self.server.start()
        for name, port in (("bob", bob_port), ("alice", _free_port())):
            ident = load_identity(PKI / f"{name}.pem", key_path=PKI / f"{name}.key")
            self.server.directory.add(common_name=ident.common_name,
                                      endpoint=f"{ident.common_name}:{port}",
                                      certificates=[ident.leaf, *ident.chain])

    def close(self) -> None:
        self.server.stop()
        self.store.close()


class Node:
    """``trisa-peer serve`` (Bob) with RLIMIT_NOFILE = ``limit`` for soft and hard."""

    def __init__(self, tmp: Path, port: int, directory: str, limit: int,
                 extra: list[str], name: str) -> None:
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("w")

        command = [
            sys.executable, "-m", "trisa_peer", "serve", "--listen", f"127.0.0.1:{port}",
            "--cert", str(PKI / "bob.pem"), "--key", str(PKI / "bob.key"),
            "--trust", str(PKI / "trust.pem"), "--directory", directory,
            "--directory-insecure", "--db", str(tmp / f"{name}.db"), "--policy", "accept",
            *extra,
        ]
        prlimit = shutil.which("prlimit")

        def limited() -> None:  # in the child, before exec
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self.proc = subprocess.Popen(
            [prlimit, f"--nofile={limit}:{limit}", "--", *command] if prlimit else command,
            stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT,
            preexec_fn=None if prlimit else limited,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "serving on port" not in line:
            self.stop()
            raise RuntimeError(f"node did not start: {self.log()[-500:]}")
        self.port = port
        self.peak_fds = 0

    def fds(self) -> int:
        try:
            count = len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return 0
        self.peak_fds = max(self.peak_fds, count)
        return count

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


class Attack:
    """``count`` idle TCP connections to ``port``, each reopened when the node closes it.

    (A plain class: run.py loads a case without registering its module, which
    dataclasses need.)"""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.closed_by_node = 0
        self.reopened = 0
        self.open_now = 0
        self.failed_connects = 0
        self.stop = threading.Event()

    def _open(self, sel: selectors.BaseSelector) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(("127.0.0.1", self.port))
        if err not in (0, 115):  # 0 or EINPROGRESS
            sock.close()
            self.failed_connects += 1
            return
        sel.register(sock, selectors.EVENT_READ)
        self.open_now += 1

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            for _ in range(self.count):
                self._open(sel)
            while not self.stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(4096)
                    except (ConnectionError, OSError):
                        data = b""
                    if data:
                        continue  # the node never sends first on an idle connection
                    sel.unregister(sock)
                    sock.close()
                    self.open_now -= 1
                    self.closed_by_node += 1
                    self._open(sel)
                    self.reopened += 1
                while self.open_now < self.count and not self.stop.is_set():
                    self._open(sel)  # a connect that failed: try again
                    if self.failed_connects > 10 * self.count:
                        return
        finally:
            for key in list(sel.get_map().values()):
                with contextlib.suppress(OSError):
                    key.fileobj.close()  # type: ignore[union-attr]
            sel.close()


def _new_peer(port: int, i: int) -> float | None:
    """Alice's fresh mTLS connection and one Status call: seconds, or None on failure."""
    sys.path.insert(0, str(ROOT))
    from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, api_pb2_grpc

    creds = grpc.ssl_channel_credentials(
        root_certificates=(PKI / "trust.pem").read_bytes(),
        private_key=(PKI / "alice.key").read_bytes(),
        certificate_chain=(PKI / "alice.pem").read_bytes(),
    )
    started = time.monotonic()
    channel = grpc.secure_channel(
        f"127.0.0.1:{port}", creds,
        options=[("grpc.ssl_target_name_override", "bob.vasp.test"),
                 ("grpc.use_local_subchannel_pool", 1),  # a new connection each time
                 ("grpc.primary_user_agent", f"new-peer-{i}")],
    )
    try:
        reply = api_pb2_grpc.TRISAHealthStub(channel).Status(
            api_pb2.HealthCheck(), timeout=PEER_DEADLINE)
        ok = reply.status == api_pb2.ServiceState.HEALTHY
    except grpc.RpcError:
        ok = False
    finally:
        channel.close()
    return time.monotonic() - started if ok else None


def _phase(tmp: Path, directory: Directory, port: int, limit: int, idle: int,
           seconds: float, extra: list[str], name: str) -> dict[str, object]:
    node = Node(tmp, port, directory.server.endpoint, limit, extra, name)
    attack = Attack(port, idle)
    attacker = threading.Thread(target=attack.run, daemon=True)
    outcomes: list[float | None] = []
    lock = threading.Lock()

    def peer(i: int) -> None:
        latency = _new_peer(port, i)
        with lock:
            outcomes.append(latency)

    peers: list[threading.Thread] = []
    try:
        warm = _new_peer(port, -1)  # first contact: the node's directory look-up
        attacker.start()
        time.sleep(2.0)  # let the attack fill the node's table
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # a new peer every PERIOD, each on its own
            started = time.monotonic()
            thread = threading.Thread(target=peer, args=(len(peers),), daemon=True)
            thread.start()
            peers.append(thread)
            while time.monotonic() - started < PERIOD:
                node.fds()
                time.sleep(0.1)
        for thread in peers:
            thread.join(timeout=PEER_DEADLINE + 5)
            node.fds()
        running = node.proc.poll() is None
    finally:
        attack.stop.set()
        attacker.join(timeout=10)
        node.stop()
    attempts = len(outcomes)
    latencies = [x for x in outcomes if x is not None]
    log = node.log()
    ordered = sorted(latencies)
    return {
        "warm_up_ok": warm is not None,
        "node_closed": attack.closed_by_node,
        "reopened": attack.reopened,
        "attacker_connect_failures": attack.failed_connects,
        "peers": attempts,
        "peers_ok": len(latencies),
        "success_rate": round(len(latencies) / max(attempts, 1), 3),
        "latency_p50_s": round(statistics.median(ordered), 3) if ordered else None,
        "latency_p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 3) if ordered else None,
        "latency_max_s": round(ordered[-1], 3) if ordered else None,
        "node_peak_fds": node.peak_fds,
        "node_running": running,
        "limit_lines": log.count("open files limit"),
        "limit_logged": f"open files limit {limit} (the hard limit)" in log,
        "tracebacks": log.count("Traceback"),
    }


def run(scale: float) -> Result:
    result = Result(NAME)
    full = scale >= 0.5
    limit = 1024 if full else 128
    idle = 1200 if full else 150
    seconds = 60.0 if full else 15.0
    twin_seconds = 15.0 if full else 5.0
    result.figure("node_nofile_limit", limit)
    result.figure("idle_connections", idle)
    result.figure("seconds", seconds)
    result.figure("attacker_nofile", _own_limit(idle + 200))
    with tempfile.TemporaryDirectory(prefix="soak-idle-") as name:
        tmp = Path(name)
        port = _free_port()
        directory = Directory(tmp, port)
        try:
            fixed = _phase(tmp, directory, port, limit, idle, seconds, [], "node")
            for key, value in fixed.items():
                result.figure(key, value)
            twin = _phase(tmp, directory, _free_port(), limit, idle, twin_seconds,
                          ["--handshake-timeout", "86400", "--idle-timeout", "0"], "twin")
            for key in ("node_closed", "peers", "peers_ok", "success_rate", "node_peak_fds"):
                result.figure(f"twin_no_timeout_{key}", twin[key])
        finally:
            directory.close()
    result.target("warm_up_ok", "==", True)
    result.target("success_rate", "==", 1.0)
    result.target("node_closed", ">=", idle)  # every idle connection closed at least once
    result.target("node_running", "==", True)
    result.target("limit_lines", "==", 1)
    result.target("limit_logged", "==", True)
    result.target("tracebacks", "==", 0)
    result.target("twin_no_timeout_success_rate", "<", 0.5)
    return result
