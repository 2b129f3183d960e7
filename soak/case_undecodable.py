"""Undecodable requests: refused by step, no INTERNAL, no traceback, no memory kept.

Issue 11 §1. Before the fix gRPC deserialised each request before the peer check:
20,000 bodies that are not a SecureEnvelope from an unregistered certificate got
``INTERNAL``, a traceback each, and took a node from 66 to 450 MB (grpcio keeps ~19 KiB
per request that fails to parse). Now every handler receives raw bytes and the peer is
checked first.

Two phases, each against a server in its own process (so RSS is the server's):

1. a node (``bench/node_proc.py``, what ``trisa-peer serve`` builds, logging at INFO)
   receives 20,000 undecodable Transfer requests from Mallory's certificate (chains to
   the TRISA test CA, not registered: step 4) over several channels. Targets: 20,000
   step-4 refusals (PERMISSION_DENIED, ``step 4 (...)``), 0 INTERNAL, 0 tracebacks in
   the node's log, RSS growth < 5 MB after a warm-up of 1,000 requests;
2. the directory (``DirectoryServer``, plaintext on loopback as ``gds serve --insecure``)
   receives 20,000 undecodable Lookup requests: all INVALID_ARGUMENT, RSS growth < 5 MB.

Counts scale with ``scale`` (warm-up at least 200); the RSS bound does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
from common import Result, rss_bytes, scaled, stop_process

NAME = "undecodable"

ROOT = Path(__file__).resolve().parent.parent
PKI = ROOT / "certs" / "fixtures"
# Field 1 claims 16 bytes and 3 follow: no protobuf message parses it.
GARBAGE = b"\x0a\x10abc"
TRANSFER = "/trisa.api.v1beta1.TRISANetwork/Transfer"
LOOKUP = "/trisa.gds.api.v1beta1.TRISADirectory/Lookup"
THREADS = 4
MB = 1024 * 1024

# Runs bench/node_proc.py with the package's log lines on stderr (as the CLI does).
LAUNCH = (
    "import logging, sys; "
    "logging.basicConfig(level=logging.INFO, stream=sys.stderr, "
    "format='%(asctime)s %(levelname)s %(name)s %(message)s'); "
    f"sys.path.insert(0, {str(ROOT / 'bench')!r}); "
    "import node_proc; sys.exit(node_proc.main(sys.argv[1]))"
)


class Server:
    """A node_proc child: started from a JSON config, stopped by closing its stdin."""

    def __init__(self, config: dict[str, object], tmp: Path, name: str) -> None:
        path = tmp / f"{name}.json"
        path.write_text(json.dumps(config))
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, str(path)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"{name} did not start: {self.log_path.read_text()[-500:]}")
        self.port = int(line.split()[1])

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        assert self.proc.stdin is not None
        stop_process(self.proc, timeout=10, ask=self.proc.stdin.close)  # EOF: exit
        self._log.close()


def _outcome(call: Callable[..., object]) -> str:
    try:
        call(GARBAGE, timeout=10)
    except grpc.RpcError as exc:
        code = exc.code()
        name = code.name if code is not None else "UNKNOWN"
        details = exc.details() or ""
        if name == "PERMISSION_DENIED" and details.startswith("step 4 ("):
            return "step4"
        return name
    return "OK"


def _blast(channels: list[grpc.Channel], method: str, total: int, deadline: float) -> Counter[str]:
    """``total`` undecodable requests spread over the channels, one thread each."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(channel: grpc.Channel, n: int) -> None:
        call = channel.unary_unary(method, request_serializer=None,
                                   response_deserializer=None)
        local: Counter[str] = Counter()
        for _ in range(n):
            if time.monotonic() > deadline:
                local["timed_out"] += 1
                break
            local[_outcome(call)] += 1
        with lock:
            counts.update(local)

    share = [total // len(channels) + (1 if i < total % len(channels) else 0)
             for i in range(len(channels))]
    threads = [threading.Thread(target=worker, args=(ch, n))
               for ch, n in zip(channels, share, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts


def _settle() -> None:
    time.sleep(0.5)


def mtls_channel(port: int, cert: Path, key: Path, trust: Path,
                 server_name: str = "bob.vasp.test") -> grpc.Channel:
    """An mTLS channel to 127.0.0.1:``port`` presenting ``cert``/``key`` (PEM files)."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=trust.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", creds,
                               options=[("grpc.ssl_target_name_override", server_name)])


def _mtls_channel(port: int, name: str) -> grpc.Channel:
    return mtls_channel(port, PKI / f"{name}.pem", PKI / f"{name}.key", PKI / "trust.pem")


def _register(db: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from trisa_peer.certs import load_identity
    from trisa_peer.directory.service import Directory
    from trisa_peer.directory.store import SQLiteStore

    store = SQLiteStore(db)
    bob = load_identity(PKI / "bob.pem", key_path=PKI / "bob.key")
    Directory(store).add(common_name=bob.common_name, endpoint="bob.vasp.test:443",
                         certificates=[bob.leaf, *bob.chain], name="Bob")
    store.close()


def _phase(result: Result, prefix: str, server: Server, channels: list[grpc.Channel],
           method: str, warmup: int, total: int, budget: float) -> Counter[str]:
    deadline = time.monotonic() + budget
    _blast(channels, method, warmup, deadline)
    _settle()
    before = server.rss()
    started = time.monotonic()
    counts = _blast(channels, method, total, deadline)
    result.figure(f"{prefix}_seconds", round(time.monotonic() - started, 1))
    _settle()
    growth = server.rss() - before
    result.figure(f"{prefix}_rss_before_mb", round(before / MB, 1))
    result.figure(f"{prefix}_rss_growth_mb", round(growth / MB, 2))
    result.figure(f"{prefix}_bytes_per_request", round(growth / max(total, 1)))
    return counts


def run(scale: float) -> Result:
    result = Result(NAME)
    total = scaled(20_000, scale)
    warmup = scaled(1_000, scale, minimum=200)
    budget = max(120.0, 600.0 * scale)
    result.figure("requests", total)
    with tempfile.TemporaryDirectory(prefix="soak-undecodable-") as name:
        tmp = Path(name)
        _register(tmp / "gds.db")
        gds = Server({"role": "directory", "db": str(tmp / "gds.db"), "workers": 8}, tmp, "gds")
        node: Server | None = None
        try:
            node = Server({
                "cert": str(PKI / "bob.pem"), "key": str(PKI / "bob.key"),
                "trust": str(PKI / "trust.pem"), "listen": "127.0.0.1:0",
                "directory": f"127.0.0.1:{gds.port}", "store": str(tmp / "bob.db"),
                "workers": 8,
            }, tmp, "node")
            # 1. the node, from an unregistered TRISA-CA certificate
            channels = [_mtls_channel(node.port, "mallory") for _ in range(THREADS)]
            try:
                counts = _phase(result, "node", node, channels, TRANSFER, warmup, total, budget)
            finally:
                for ch in channels:
                    ch.close()
            log = node.log()
            result.figure("node_step4_refusals", counts["step4"])
            result.figure("node_internal", counts["INTERNAL"])
            result.figure("node_other", sum(v for k, v in counts.items() if k != "step4"))
            result.figure("node_tracebacks", log.count("Traceback"))
            result.figure("node_refusal_log_lines",
                          sum(1 for ln in log.splitlines() if "outcome=reject" in ln))
            result.target("node_step4_refusals", "==", total)
            result.target("node_internal", "==", 0)
            result.target("node_other", "==", 0)
            result.target("node_tracebacks", "==", 0)
            result.target("node_rss_growth_mb", "<", 5)

            # 2. the directory, plaintext on loopback, no certificate needed
            channels = [grpc.insecure_channel(f"127.0.0.1:{gds.port}") for _ in range(THREADS)]
            try:
                counts = _phase(result, "gds", gds, channels, LOOKUP, warmup, total, budget)
            finally:
                for ch in channels:
                    ch.close()
            glog = gds.log()
            result.figure("gds_invalid_argument", counts["INVALID_ARGUMENT"])
            result.figure("gds_other",
                          sum(v for k, v in counts.items() if k != "INVALID_ARGUMENT"))
            result.figure("gds_tracebacks", glog.count("Traceback"))
            result.target("gds_invalid_argument", "==", total)
            result.target("gds_other", "==", 0)
            result.target("gds_tracebacks", "==", 0)
            result.target("gds_rss_growth_mb", "<", 5)
        finally:
            if node is not None:
                node.stop()
            gds.stop()
    return result
