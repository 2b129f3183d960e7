"""Connection and process limits of the servers (issue 11 §7), on real loopback servers.

Each limit with its twin: a connection that never starts TLS is closed after the
handshake timeout (kept with a timeout out of reach); an established connection left
without a call is closed after the idle timeout (kept with 0 = never); the soft file
limit is raised to the hard limit (and left alone when it already is).
"""

from __future__ import annotations

import re
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from helpers import PKI, ROOT
from pki import MemoryDirectory, identity, pool, record_for

from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, api_pb2_grpc
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2_grpc as gds_grpc
from trisa_peer.directory import DirectoryServer, SQLiteStore
from trisa_peer.errors import ConfigurationError
from trisa_peer.limits import (
    ENV_HANDSHAKE_TIMEOUT,
    ENV_IDLE_TIMEOUT,
    raise_open_files_limit,
    server_options,
)
from trisa_peer.transport.identity import Material
from trisa_peer.transport.material import StaticMaterial
from trisa_peer.transport.server import TrisaServer

# --------------------------------------------------------------------------- options


def test_server_options_defaults_environment_and_arguments(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_HANDSHAKE_TIMEOUT, raising=False)
    monkeypatch.delenv(ENV_IDLE_TIMEOUT, raising=False)
    assert server_options() == [("grpc.so_reuseport", 0),
                                ("grpc.server_handshake_timeout_ms", 5000),
                                ("grpc.max_connection_idle_ms", 300_000)]
    monkeypatch.setenv(ENV_HANDSHAKE_TIMEOUT, "2.5")
    monkeypatch.setenv(ENV_IDLE_TIMEOUT, "0")  # 0: no idle limit
    assert server_options() == [("grpc.so_reuseport", 0),
                                ("grpc.server_handshake_timeout_ms", 2500)]
    assert dict(server_options(handshake=1, idle=60)) == {
        "grpc.so_reuseport": 0, "grpc.server_handshake_timeout_ms": 1000,
        "grpc.max_connection_idle_ms": 60_000}


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        (ENV_HANDSHAKE_TIMEOUT, "0", "at least 0.1 seconds"),  # cannot be turned off
        (ENV_HANDSHAKE_TIMEOUT, "soon", "must be a number of seconds, not 'soon'"),
        (ENV_HANDSHAKE_TIMEOUT, "nan", "at most"),
        (ENV_IDLE_TIMEOUT, "-1", "must be 0 (off) or at least 0.1 seconds"),
        (ENV_IDLE_TIMEOUT, "1e9", "at most 86400 seconds"),
    ],
)
def test_bad_limits_are_refused_in_one_line(monkeypatch: pytest.MonkeyPatch, env: str,
                                            value: str, message: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError, match=re.escape(message)) as info:
        server_options()
    assert f"${env}" in str(info.value) and "\n" not in str(info.value)


def test_bad_limit_flags_are_usage_errors(
        trisa_peer_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = trisa_peer_cli("gds", "serve", "--db", str(tmp_path / "g.db"), "--insecure",
                         "--handshake-timeout", "0")
    assert out.returncode == 2
    assert "--handshake-timeout: handshake timeout must be at least 0.1 seconds" in out.stderr
    assert not (tmp_path / "g.db").exists()
    out = trisa_peer_cli("serve", "--listen", "127.0.0.1:0", "--idle-timeout", "x")
    assert out.returncode == 2 and "idle timeout must be a number of seconds" in out.stderr


# --------------------------------------------------------------------------- servers


@contextmanager
def node(**limits: float) -> Iterator[TrisaServer]:
    material = StaticMaterial(Material(identity("bob"), pool(), None, 1))
    server = TrisaServer(material, MemoryDirectory(record_for("alice"), record_for("bob")),
                         **limits)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop(None)


@contextmanager
def directory(tmp_path: Path, **limits: float) -> Iterator[DirectoryServer]:
    store = SQLiteStore(tmp_path / f"gds-{time.monotonic_ns()}.db")
    server = DirectoryServer(store, **limits)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
        store.close()


def seconds_until_closed(port: int, wait: float) -> float | None:
    """Open a TCP connection that never sends a byte; seconds until the server closes
    it, or None if it is still open after ``wait``."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        while True:  # a plaintext HTTP/2 server speaks first (SETTINGS): read to EOF
            sock.settimeout(max(0.01, wait - (time.monotonic() - started)))
            try:
                if not sock.recv(4096):
                    break
            except TimeoutError:
                return None
            except ConnectionError:
                break
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["node", "directory"])
def test_a_connection_that_never_starts_tls_is_closed(kind: str, tmp_path: Path) -> None:
    """Before: kept open forever (300/300 after 50 s). The twin: a timeout out of reach
    keeps it open."""
    servers = {"node": lambda **kw: node(**kw),
               "directory": lambda **kw: directory(tmp_path, **kw)}
    with servers[kind](handshake_timeout=0.5) as server:
        closed = seconds_until_closed(server.port, wait=5.0)
        assert closed is not None and 0.3 < closed < 3.0
    with servers[kind](handshake_timeout=60) as server:
        assert seconds_until_closed(server.port, wait=2.0) is None


def _states(channel: grpc.Channel) -> list[grpc.ChannelConnectivity]:
    seen: list[grpc.ChannelConnectivity] = []
    channel.subscribe(seen.append, try_to_connect=False)
    return seen


def _ready_at(seen: list[grpc.ChannelConnectivity], wait: float = 5.0) -> int:
    """The index just after the first READY the subscription delivered: its callbacks
    arrive on another thread, possibly after the call that made the channel ready has
    returned, so the list's length at that moment is not a safe mark."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if grpc.ChannelConnectivity.READY in seen:
            return seen.index(grpc.ChannelConnectivity.READY) + 1
        time.sleep(0.01)
    raise AssertionError(f"the channel never reported READY: {seen}")


def _wait_for(seen: list[grpc.ChannelConnectivity], state: grpc.ChannelConnectivity,
              after: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if state in seen[after:]:
            return True
        time.sleep(0.05)
    return False


def _alice_channel(port: int) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(PKI / "trust.pem").read_bytes(),
        private_key=(PKI / "alice.key").read_bytes(),
        certificate_chain=(PKI / "alice.pem").read_bytes(),
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[
        ("grpc.ssl_target_name_override", "bob.vasp.test"),
        ("grpc.use_local_subchannel_pool", 1)])


@pytest.mark.slow
@pytest.mark.parametrize("idle", [1.0, 0.0], ids=["idle-1s", "twin-never"])
def test_the_node_closes_an_established_connection_left_idle(idle: float) -> None:
    """A verified peer's channel with no call open is closed (HTTP/2 GOAWAY) after the
    idle timeout and reconnects by itself on its next call; with 0 it stays open."""
    with node(idle_timeout=idle) as server:
        channel = _alice_channel(server.port)
        seen = _states(channel)
        stub = api_pb2_grpc.TRISAHealthStub(channel)
        assert stub.Status(api_pb2.HealthCheck(), timeout=10).status == (
            api_pb2.ServiceState.HEALTHY)
        ready_at = _ready_at(seen)
        closed = _wait_for(seen, grpc.ChannelConnectivity.IDLE, ready_at, wait=4.0)
        assert closed is (idle > 0)
        assert stub.Status(api_pb2.HealthCheck(), timeout=10).status == (  # reconnects
            api_pb2.ServiceState.HEALTHY)
        channel.close()


@pytest.mark.slow
@pytest.mark.parametrize("idle", [1.0, 0.0], ids=["idle-1s", "twin-never"])
def test_the_directory_closes_an_established_connection_left_idle(
        idle: float, tmp_path: Path) -> None:
    with directory(tmp_path, idle_timeout=idle) as server:
        channel = grpc.insecure_channel(server.endpoint,
                                        options=[("grpc.use_local_subchannel_pool", 1)])
        seen = _states(channel)
        stub = gds_grpc.TRISADirectoryStub(channel)
        stub.Status(gds_pb2.HealthCheck(), timeout=10)
        ready_at = _ready_at(seen)
        assert _wait_for(seen, grpc.ChannelConnectivity.IDLE, ready_at, wait=4.0) is (idle > 0)
        stub.Status(gds_pb2.HealthCheck(), timeout=10)
        channel.close()


@pytest.mark.slow
def test_an_open_stream_is_not_idle() -> None:
    """A call in progress keeps the connection: the idle limit never cuts a transfer."""
    with node(idle_timeout=0.5) as server:
        channel = _alice_channel(server.port)
        seen = _states(channel)
        stub = api_pb2_grpc.TRISAHealthStub(channel)
        stub.Status(api_pb2.HealthCheck(), timeout=10)
        ready_at = _ready_at(seen)
        stop = threading.Event()

        def busy() -> None:  # back-to-back calls: never 0.5 s without one
            while not stop.is_set():
                stub.Status(api_pb2.HealthCheck(), timeout=10)
                time.sleep(0.1)

        worker = threading.Thread(target=busy)
        worker.start()
        try:
            assert not _wait_for(seen, grpc.ChannelConnectivity.IDLE, ready_at, wait=2.0)
        finally:
            stop.set()
            worker.join()
        assert _wait_for(seen, grpc.ChannelConnectivity.IDLE, ready_at, wait=3.0)  # the twin
        channel.close()


# --------------------------------------------------------------------------- file limit

_RAISE = ("import resource, sys; "
          "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), 512)); "
          "from trisa_peer.limits import raise_open_files_limit as r; "
          "print(r()); print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])")


@pytest.mark.slow
@pytest.mark.parametrize(("soft", "expect"), [
    (256, "open files limit raised from 256 to the hard limit 512"),
    (512, "open files limit 512 (the hard limit)"),  # the twin: nothing to raise
])
def test_the_soft_file_limit_is_raised_to_the_hard_limit(soft: int, expect: str) -> None:
    """A fresh process whose limits are soft/512 (set first thing, as prlimit would)."""
    proc = subprocess.run([sys.executable, "-c", _RAISE, str(soft)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [expect, "512"], (proc.stdout, proc.stderr)


def test_raising_in_this_process_reports_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    line = raise_open_files_limit()
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == (
        hard if hard != resource.RLIM_INFINITY else resource.getrlimit(
            resource.RLIMIT_NOFILE)[0])
    assert line.startswith("open files limit") and str(soft) in line
