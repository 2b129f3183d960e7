"""A node loads new identity material without a restart, and only a consistent set.

Files are swapped under :class:`FileMaterial` (PEM, zip, PKCS#12 with a password file);
every accepted swap has rejected twins (a key that does not match, an expired
certificate, one from an untrusted CA, a wrong PKCS#12 password) that keep the old set
and log one line, once. Over real TLS on 127.0.0.1: a new connection to a running node
sees the new certificate's serial, the node presents the new certificate when it dials,
and a node whose certificate expired while it runs answers TRISAHealth UNHEALTHY.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import socket
import ssl
import threading
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from helpers import PKI
from pki import identity, pool

from trisa_peer._pb.trisa.api.v1beta1 import api_pb2
from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import Identity, certs_to_pem, key_to_pem
from trisa_peer.directory.client import DirectoryClient
from trisa_peer.directory.server import DirectoryServer
from trisa_peer.directory.store import SQLiteStore
from trisa_peer.errors import CertificateError, ConfigurationError
from trisa_peer.network.handler import Accept
from trisa_peer.network.node import TrisaNode
from trisa_peer.network.store import TransferStore
from trisa_peer.reload import ExpiryWatch, Poller, check_own_identity, expiry_notice
from trisa_peer.testing.network import free_port
from trisa_peer.transport.identity import FileMaterial, Material
from trisa_peer.transport.material import StaticMaterial

KEPT = "keeping the TLS material in use"
LOGGER = "trisa_peer.transport"


def serial(name: str) -> int:
    return identity(name).leaf.serial_number


def put(dst: Path, data: bytes) -> None:
    """Write ``dst`` the way an operator's tools should: a new file renamed over it."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dst)


def put_pem(cert: Path, key: Path, name: str, key_name: str | None = None) -> None:
    put(cert, (PKI / f"{name}.pem").read_bytes())
    put(key, (PKI / f"{key_name or name}.key").read_bytes())


def p12(ident: Identity, password: str) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        ident.common_name.encode(), ident.key, ident.leaf, list(ident.chain),  # type: ignore[arg-type]
        serialization.BestAvailableEncryption(password.encode()))


def zipped(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(name, data)
    return out.getvalue()


def secret(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)
    return path


def kept_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if KEPT in r.getMessage()]


@pytest.fixture
def pem(tmp_path: Path) -> tuple[Path, Path, FileMaterial]:
    cert, key = tmp_path / "bob.pem", tmp_path / "bob.key"
    put_pem(cert, key, "bob")
    return cert, key, FileMaterial(cert, key, [PKI / "trust.pem"])


# ------------------------------------------------------------ swaps on disk


def test_a_consistent_pem_set_replaces_the_one_in_use(
        pem: tuple[Path, Path, FileMaterial]) -> None:
    cert, key, material = pem
    assert material.current().identity.leaf.serial_number == serial("bob")
    put_pem(cert, key, "bob-reissued")
    fresh = material.poll()
    assert fresh.identity.leaf.serial_number == serial("bob-reissued")
    assert fresh.generation == 2 and material.reload_problem is None


@pytest.mark.parametrize(("cert_name", "key_name", "reason"), [
    ("bob-reissued", "bob", "they are not a pair"),       # key of the old set
    ("expired", "expired", "expired at 2021-01-01"),               # expired certificate
    ("evil-bob", "evil-bob", "which the trust pool does not hold"),    # untrusted CA
    ("notyetvalid", "notyetvalid", "is not valid before 2046"),
    ("clientauth-only", "clientauth-only", "TLS server authentication"),
])
def test_an_inconsistent_set_keeps_the_old_one_and_says_why_once(
        pem: tuple[Path, Path, FileMaterial], caplog: pytest.LogCaptureFixture,
        cert_name: str, key_name: str, reason: str) -> None:
    cert, key, material = pem
    caplog.set_level(logging.WARNING, LOGGER)
    put_pem(cert, key, cert_name, key_name)
    for _ in range(3):  # every handshake and every poll: still the old set, one line
        assert material.current().identity.leaf.serial_number == serial("bob")
        assert material.poll().identity.leaf.serial_number == serial("bob")
    assert material.poll(force=True).generation == 1
    lines = kept_lines(caplog)
    assert len(lines) == 1, lines
    assert reason in lines[0] and "bob.vasp.test" in lines[0]
    assert reason in (material.reload_problem or "")
    # ... and a good set afterwards is taken, and the next bad one is said again
    put_pem(cert, key, "bob-reissued")
    assert material.poll().identity.leaf.serial_number == serial("bob-reissued")
    assert material.reload_problem is None
    put_pem(cert, key, cert_name, key_name)
    material.poll()
    assert len(kept_lines(caplog)) == 2


def test_a_second_distinct_problem_is_said_too(
        pem: tuple[Path, Path, FileMaterial], caplog: pytest.LogCaptureFixture) -> None:
    cert, key, material = pem
    caplog.set_level(logging.WARNING, LOGGER)
    put_pem(cert, key, "expired")
    material.poll()
    put_pem(cert, key, "evil-bob")
    material.poll()
    material.poll()
    lines = kept_lines(caplog)
    assert len(lines) == 2 and "expired" in lines[0] and "trust pool does not hold" in lines[1]


def test_an_expired_certificate_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="expired at 2021-01-01"):
        FileMaterial(PKI / "expired.pem", PKI / "expired.key", [PKI / "trust.pem"])
    with pytest.raises(CertificateError, match="which the trust pool does not hold"):
        FileMaterial(PKI / "evil-bob.pem", PKI / "evil-bob.key", [PKI / "trust.pem"])
    # the twin: the same call with a valid certificate
    good = FileMaterial(PKI / "bob.pem", PKI / "bob.key", [PKI / "trust.pem"])
    assert good.current().identity.common_name == "bob.vasp.test"


def test_a_set_that_was_not_yet_valid_is_taken_once_it_is(tmp_path: Path) -> None:
    now = [datetime.now(UTC)]
    cert, key = tmp_path / "c.pem", tmp_path / "c.key"
    put_pem(cert, key, "bob")
    material = FileMaterial(cert, key, [PKI / "trust.pem"], clock=lambda: now[0])
    put_pem(cert, key, "notyetvalid")
    assert material.poll().generation == 1  # refused now ...
    assert material.current().generation == 1  # files unchanged: no reload per handshake
    now[0] = datetime(2046, 1, 2, tzinfo=UTC)
    assert material.poll().identity.common_name == "notyetvalid.vasp.test"  # ... retried


def test_forced_reload_of_unchanged_files_is_not_a_new_generation(
        pem: tuple[Path, Path, FileMaterial]) -> None:
    cert, key, material = pem
    seen: list[Material] = []
    material.subscribe(seen.append)
    put_pem(cert, key, "bob")  # rewritten, same content
    assert material.poll(force=True).generation == 1 and not seen
    put_pem(cert, key, "bob-reissued")
    assert material.poll(force=True).generation == 2 and len(seen) == 1


# ------------------------------------------------------------ PKCS#12, zip, password file


def test_pkcs12_with_a_new_password_from_the_password_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    bundle, pw = tmp_path / "bob.p12", tmp_path / "bob.password"
    put(bundle, p12(identity("bob"), "first-secret"))
    material = FileMaterial(bundle, None, [PKI / "trust.pem"],
                            password_file=secret(pw, "first-secret"))
    assert material.current().identity.leaf.serial_number == serial("bob")
    # the reissue's file arrives before its password: refused, one line, old set kept
    put(bundle, p12(identity("bob-reissued"), "second-secret"))
    for _ in range(3):
        assert material.poll().identity.leaf.serial_number == serial("bob")
    lines = kept_lines(caplog)
    assert len(lines) == 1 and "wrong password" in lines[0]
    assert "first-secret" not in caplog.text and "second-secret" not in caplog.text
    # the new password is installed: the new set is taken
    secret(pw, "second-secret")
    assert material.poll().identity.leaf.serial_number == serial("bob-reissued")


def test_a_zip_holding_a_pkcs12_is_reloaded(tmp_path: Path) -> None:
    bundle, pw = tmp_path / "bob.zip", secret(tmp_path / "pw", "zip-secret")
    put(bundle, zipped("bob.p12", p12(identity("bob"), "zip-secret")))
    material = FileMaterial(bundle, None, [PKI / "trust.pem"], password_file=pw)
    put(bundle, zipped("bob.p12", p12(identity("evil-bob"), "zip-secret")))
    assert material.poll().identity.leaf.serial_number == serial("bob")  # untrusted: kept
    put(bundle, zipped("bob.p12", p12(identity("bob-reissued"), "zip-secret")))
    assert material.poll().identity.leaf.serial_number == serial("bob-reissued")


def test_a_password_file_others_may_read_is_refused(tmp_path: Path) -> None:
    bundle, pw = tmp_path / "bob.p12", secret(tmp_path / "pw", "s3")
    put(bundle, p12(identity("bob"), "s3"))
    assert FileMaterial(bundle, None, [PKI / "trust.pem"], password_file=pw)
    pw.chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        FileMaterial(bundle, None, [PKI / "trust.pem"], password_file=pw)
    with pytest.raises(ConfigurationError, match="not both"):
        FileMaterial(bundle, None, [PKI / "trust.pem"], password="s3", password_file=pw)


# ------------------------------------------------------------ pure parts


def test_check_own_identity_accepts_a_node_certificate_only() -> None:
    now = datetime.now(UTC)
    check_own_identity(identity("bob"), pool(), now)
    with pytest.raises(CertificateError, match="TLS client authentication"):
        check_own_identity(identity("serverauth-only"), pool(), now)
    with pytest.raises(CertificateError, match="does not name host"):
        check_own_identity(identity("san-mismatch"), pool(), now)


def test_expiry_warnings_once_per_threshold() -> None:
    leaf = identity("bob").leaf
    end = leaf.not_valid_after_utc
    watch = ExpiryWatch()
    said = [watch.note(leaf, "fp", end - timedelta(days=d)) for d in
            (40, 29.5, 29, 20, 6.5, 6, 0.5, 0.25, -0.1, -1)]
    levels = [s[0] if s else None for s in said]
    assert levels == [None, "warning", None, None, "warning", None, "warning", None,
                      "error", None]
    assert "expires in 29 days" in said[1][1] and "warning at 30 days" in said[1][1]  # type: ignore[index]
    assert "warning at 7 days" in said[4][1]  # type: ignore[index]
    assert "12 hours" in said[6][1] and "warning at 1 day)" in said[6][1]  # type: ignore[index]
    assert "expired at" in said[8][1] and "UNHEALTHY" in said[8][1]  # type: ignore[index]
    # first seen with 5 days left: one line (7 days), not two
    fresh = ExpiryWatch()
    first = fresh.note(leaf, "fp2", end - timedelta(days=5))
    assert first is not None and "warning at 7 days" in first[1]
    assert fresh.note(leaf, "fp2", end - timedelta(days=4)) is None
    # another certificate has its own thresholds
    assert fresh.note(leaf, "fp3", end - timedelta(days=4)) is not None


def test_expiry_notice_within_30_days_only() -> None:
    leaf = identity("bob").leaf
    end = leaf.not_valid_after_utc
    assert expiry_notice(leaf, end - timedelta(days=31)) is None
    notice = expiry_notice(leaf, end - timedelta(days=30))
    assert notice is not None and "expires in 30 days" in notice
    assert expiry_notice(leaf, end + timedelta(seconds=1)) is None  # expired: not a notice


def test_poller_runs_on_trigger_and_survives_a_failing_tick() -> None:
    ran = threading.Semaphore(0)
    errors: list[BaseException] = []
    calls = [0]

    def tick() -> None:
        calls[0] += 1
        ran.release()
        if calls[0] == 2:
            raise RuntimeError("boom")

    poller = Poller(tick, 3600.0, on_error=errors.append)
    poller.start()
    try:
        assert ran.acquire(timeout=10)  # the first tick: at start
        poller.trigger()
        assert ran.acquire(timeout=10)  # the second: on trigger (it raises)
        poller.trigger()
        assert ran.acquire(timeout=10)  # still running after the failure
    finally:
        poller.stop()
    assert [type(e) for e in errors] == [RuntimeError]
    with pytest.raises(ConfigurationError, match="must be positive"):
        Poller(tick, 0, on_error=errors.append)


# ------------------------------------------------------------ over real TLS


def served_serial(port: int, host: str = "bob.vasp.test") -> int:
    """The serial of the certificate a node presents to a new TLS connection."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(PKI / "trust.pem")
    ctx.load_cert_chain(PKI / "alice.pem", PKI / "alice.key")
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


class Net:
    """The project's directory (SQLite + gRPC) on loopback and nodes registered in it."""

    def __init__(self, tmp: Path) -> None:
        self.store = SQLiteStore(tmp / "gds.db")
        self.gds = DirectoryServer(self.store, listen=f"127.0.0.1:{free_port()}")
        self.gds.start()
        self.resolve: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self.nodes: list[TrisaNode] = []
        self.seen: list[str] = []  # serials (hex) of the peers whose transfers arrived

    def register(self, ident: Identity, port: int) -> None:
        cn = ident.common_name
        vasp = self.gds.directory.add(common_name=cn, endpoint=f"{cn}:{port}",
                                      certificates=[ident.leaf, *ident.chain], name=cn)
        self.resolve[f"{cn}:{port}"] = f"127.0.0.1:{port}"
        self.ids[cn] = str(vasp.id)

    def handler(self, incoming: Any) -> Accept:
        self.seen.append(incoming.peer.serial_hex)
        return Accept()

    def node(self, material: Any, port: int, **kw: Any) -> TrisaNode:
        node = TrisaNode(material, DirectoryClient(self.gds.endpoint, insecure=True, timeout=5),
                         store=TransferStore(":memory:"), handler=self.handler,
                         listen=f"127.0.0.1:{port}", resolve=self.resolve, timeout=5, **kw)
        node.start()
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        self.gds.stop()


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    yield n
    n.close()


def rotated(material: Any) -> threading.Event:
    event = threading.Event()
    material.subscribe(lambda _m: event.set())
    return event


def transfer_payload() -> api_pb2.Payload:
    from trisa_peer.testing.cast import BOOK
    from trisa_peer.testing.policies import originator_payload

    return originator_payload(BOOK.wallets_of("bob.vasp.test")[0],
                              BOOK.wallets_of("alice.vasp.test")[1], sent_at=datetime.now(UTC))


@pytest.mark.slow
def test_a_running_node_serves_and_presents_the_new_certificate(
        net: Net, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    cert, key = tmp_path / "bob.pem", tmp_path / "bob.key"
    put_pem(cert, key, "bob")
    bob_port, alice_port = free_port(), free_port()
    net.register(identity("bob"), bob_port)
    net.register(identity("alice"), alice_port)
    material = FileMaterial(cert, key, [PKI / "trust.pem"])
    bob = net.node(material, bob_port)
    net.node(StaticMaterial(Material(identity("alice"), pool(), None, 1)), alice_port)
    assert served_serial(bob_port) == serial("bob")
    assert bob.send("alice.vasp.test", transfer_payload()).state == "accepted"
    assert net.seen[-1] == f"{serial('bob'):X}"

    # rejected twins first: each keeps the old certificate on the wire, one line each
    for cert_name, key_name in (("bob-reissued", "bob"), ("expired", "expired"),
                                ("evil-bob", "evil-bob")):
        put_pem(cert, key, cert_name, key_name)
        bob.reload()  # SIGHUP
        assert served_serial(bob_port) == serial("bob")
        assert served_serial(bob_port) == serial("bob")
    assert len(kept_lines(caplog)) == 3

    # the reissue: files swapped, directory updated, operator sends SIGHUP
    changed = rotated(material)
    put_pem(cert, key, "bob-reissued")
    net.gds.directory.update_certificate(net.ids["bob.vasp.test"],
                                         [identity("bob-reissued").leaf])
    bob.reload()
    assert changed.wait(10)
    assert served_serial(bob_port) == serial("bob-reissued")
    # the client side: bob's next outgoing connection presents the new certificate
    assert bob.send("alice.vasp.test", transfer_payload()).state == "accepted"
    assert net.seen[-1] == f"{serial('bob-reissued'):X}"
    assert len(kept_lines(caplog)) == 3


@pytest.mark.slow
def test_a_new_outgoing_connection_presents_the_files_on_disk(net: Net, tmp_path: Path) -> None:
    """No signal, an hour's poll interval: the first dial after the swap reads the files
    (the reissued set) and presents it; the twin, a bad set, presents the old one."""
    cert, key = tmp_path / "bob.pem", tmp_path / "bob.key"
    put_pem(cert, key, "bob")
    bob_port, alice_port, carol_port = free_port(), free_port(), free_port()
    net.register(identity("bob"), bob_port)
    net.register(identity("alice"), alice_port)
    net.register(identity("charlie"), carol_port)
    bob = net.node(FileMaterial(cert, key, [PKI / "trust.pem"]), bob_port,
                   reload_interval=3600)
    net.node(StaticMaterial(Material(identity("alice"), pool(), None, 1)), alice_port)
    net.node(StaticMaterial(Material(identity("charlie"), pool(), None, 1)), carol_port)
    put_pem(cert, key, "evil-bob")  # refused: the old certificate is presented
    assert bob.send("alice.vasp.test", transfer_payload()).state == "accepted"
    assert net.seen[-1] == f"{serial('bob'):X}"
    put_pem(cert, key, "bob-reissued")
    net.gds.directory.update_certificate(net.ids["bob.vasp.test"],
                                         [identity("bob-reissued").leaf])
    assert bob.send("charlie.vasp.test", transfer_payload()).state == "accepted"
    assert net.seen[-1] == f"{serial('bob-reissued'):X}"


@pytest.mark.slow
def test_the_poll_interval_picks_up_new_files_without_a_signal_or_connection(
        net: Net, tmp_path: Path) -> None:
    cert, key = tmp_path / "bob.pem", tmp_path / "bob.key"
    put_pem(cert, key, "bob")
    material = FileMaterial(cert, key, [PKI / "trust.pem"])
    port = free_port()
    net.node(material, port, reload_interval=0.2)
    changed = rotated(material)
    put_pem(cert, key, "bob-reissued")
    assert changed.wait(30)  # no connection, no reload(): the poller found it
    assert served_serial(port) == serial("bob-reissued")


@pytest.mark.slow
def test_a_certificate_that_expires_while_the_node_runs(
        net: Net, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The node keeps serving, answers TRISAHealth UNHEALTHY, logs one error, and a
    reload of a valid certificate makes it HEALTHY again. The node's clock is moved
    past its certificate's end; peers check with the real time."""
    caplog.set_level(logging.WARNING, LOGGER)
    shutil.copytree(PKI / "ca", tmp_path / "ca")
    ca = CertificateAuthority.open(tmp_path / "ca")
    short = ca.issue("bob.vasp.test", key_size=2048, days=10)
    cert, key = tmp_path / "bob.pem", tmp_path / "bob.key"
    put(cert, certs_to_pem([short.leaf, *short.chain]))
    put(key, key_to_pem(short.key))
    now = [datetime.now(UTC)]
    material = FileMaterial(cert, key, [PKI / "trust.pem"], clock=lambda: now[0])
    bob_port, alice_port = free_port(), free_port()
    net.register(short, bob_port)
    net.register(identity("alice"), alice_port)
    bob = net.node(material, bob_port, clock=lambda: now[0])
    alice = net.node(StaticMaterial(Material(identity("alice"), pool(), None, 1)), alice_port)

    def health() -> int:
        channel = alice.connect("bob.vasp.test")
        return int(channel.health.Status(api_pb2.HealthCheck(), timeout=5).status)

    assert health() == api_pb2.ServiceState.HEALTHY
    bob.server._poll()  # polled again: 10 days left, still the one warning from the start
    warned = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and "expires in" in r.getMessage()]
    assert len(warned) == 1 and "expires in 9 days" in warned[0], warned
    assert "(warning at 30 days)" in warned[0]
    now[0] = short.leaf.not_valid_after_utc + timedelta(minutes=1)
    assert health() == api_pb2.ServiceState.UNHEALTHY
    assert "expired at" in (bob.server.problem() or "")
    for _ in range(3):
        bob.server._poll()
    errors = [r.getMessage() for r in caplog.records
              if r.levelno == logging.ERROR and r.name == LOGGER]
    assert len(errors) == 1 and "expired at" in errors[0] and "UNHEALTHY" in errors[0]
    # a reload that picks up another expired certificate is refused (one line)
    put_pem(cert, key, "expired")
    bob.reload()
    bob.server._poll()
    assert "expired at 2021-01-01" in (material.reload_problem or "")
    # a valid certificate installed: HEALTHY again, from the next connection
    changed = rotated(material)
    put_pem(cert, key, "bob")
    net.gds.directory.update_certificate(net.ids["bob.vasp.test"], [identity("bob").leaf])
    bob.reload()
    assert changed.wait(10)
    alice.connector.forget("bob.vasp.test")
    assert health() == api_pb2.ServiceState.HEALTHY


# ------------------------------------------------------------ the command line


def test_serve_refuses_to_start_with_an_expired_certificate(
        trisa_peer_cli: Any, tmp_path: Path) -> None:
    base = ["serve", "--listen", f"127.0.0.1:{free_port()}", "--trust", str(PKI / "trust.pem"),
            "--directory", "127.0.0.1:1", "--directory-insecure", "--db", str(tmp_path / "b.db")]
    out = trisa_peer_cli(*base, "--cert", str(PKI / "expired.pem"),
                         "--key", str(PKI / "expired.key"))
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "expired at 2021-01-01" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    both = trisa_peer_cli(*base, "--cert", str(PKI / "bob.pem"), "--key", str(PKI / "bob.key"),
                          "--password", "x", "--password-file", str(tmp_path / "pw"))
    assert both.returncode == 2 and "not both" in both.stderr
    assert list(tmp_path.iterdir()) == []


class Lines:
    """The stderr lines of a process, read on a thread (so a wait has a bound)."""

    def __init__(self, stream: Any) -> None:
        import queue

        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.queue.put(line)

    def until(self, text: str, bound: float = 30.0) -> list[str]:
        """Lines up to and including the first one containing ``text``."""
        got: list[str] = []
        while True:
            line = self.queue.get(timeout=bound)
            got.append(line)
            self.seen.append(line)
            if text in line:
                return got


@pytest.mark.slow
def test_serve_reloads_a_reissued_pkcs12_on_sighup(tmp_path: Path) -> None:
    """The runbook's steps: a running ``serve`` with a PKCS#12 and --password-file; the
    reissue's file arrives, SIGHUP: refused (old password), one line; the new password
    is installed, SIGHUP: the new certificate is served. The polling interval is an hour,
    so only the signal can have caused the reloads."""
    import signal
    import subprocess
    import sys

    gds = DirectoryServer(SQLiteStore(tmp_path / "gds.db"), listen="127.0.0.1:0")
    gds.start()
    bundle, pw = tmp_path / "bob.p12", secret(tmp_path / "bob.pw", "old-secret")
    put(bundle, p12(identity("bob"), "old-secret"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trisa_peer", "serve", "--listen", f"127.0.0.1:{port}",
         "--cert", str(bundle), "--password-file", str(pw), "--trust", str(PKI / "trust.pem"),
         "--directory", gds.endpoint, "--directory-insecure", "--reload-interval", "3600",
         "--policy", "accept"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert "serving on port" in line, proc.stderr.read()
        err = Lines(proc.stderr)
        assert served_serial(port) == serial("bob")
        put(bundle, p12(identity("bob-reissued"), "new-secret"))
        proc.send_signal(signal.SIGHUP)
        kept = err.until(KEPT)
        assert "wrong password" in kept[-1] and "secret" not in "".join(err.seen)
        proc.send_signal(signal.SIGHUP)  # the same problem: not said again
        secret(pw, "new-secret")
        proc.send_signal(signal.SIGHUP)
        err.until("reloaded TLS material")
        assert sum(KEPT in line for line in err.seen) == 1
        assert served_serial(port) == serial("bob-reissued")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        gds.stop()
    assert proc.returncode == 0


def short_lived(tmp_path: Path, days: int) -> tuple[Path, Path]:
    """A Bob certificate from the test CA (a copy: the fixture is left alone)."""
    shutil.copytree(PKI / "ca", tmp_path / "ca")
    ca = CertificateAuthority.open(tmp_path / "ca")
    short = ca.issue("bob.vasp.test", key_size=2048, days=days)
    cert, key = tmp_path / "short.pem", tmp_path / "short.key"
    put(cert, certs_to_pem([short.leaf, *short.chain]))
    put(key, key_to_pem(short.key))
    return cert, key


def test_check_warns_when_the_own_certificate_expires_within_30_days(
        trisa_peer_cli: Any, tmp_path: Path) -> None:
    cert, key = short_lived(tmp_path, 6)
    args = ["check", "alice.vasp.test", "--trust", str(PKI / "trust.pem"), "--directory",
            f"127.0.0.1:{free_port()}", "--directory-insecure", "--directory-timeout", "1"]
    out = trisa_peer_cli(*args, "--cert", str(cert), "--key", str(key))
    warnings = [line for line in out.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "expires in 5 days" in warnings[0], out.stdout
    assert "bob.vasp.test (serial 0x" in warnings[0]
    twin = trisa_peer_cli(*args, "--cert", str(PKI / "bob.pem"), "--key", str(PKI / "bob.key"))
    assert twin.stdout.startswith("checking alice.vasp.test")
    assert "warning:" not in twin.stdout
