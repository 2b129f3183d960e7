"""CRLs fetched from certificates' distribution points (trisa_peer/crlfetch.py), checked
by the real chain verifier. A real HTTP server on 127.0.0.1 serves CRLs produced by
trisa-peer's own CA (ca.crl()); the verifier's clock is moved to pass intervals and
nextUpdate. Each check has its twin: accepted, then refused with the right reason."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import Identity, certs_to_pem
from trisa_peer.crlfetch import CrlFetcher, distribution_points
from trisa_peer.errors import ChainVerificationError, ConfigurationError, RevokedError
from trisa_peer.trust import TrustPool
from trisa_peer.verify import ChainVerifier, CrlChecker


class CrlServer:
    """A real HTTP server: ``bodies[path]`` is served with 200, ``status`` overrides,
    ``hold`` (an Event) makes every request wait until it is set."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.status: int | None = None
        self.hits = 0
        self.hold: threading.Event | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                if server.hold is not None:
                    server.hold.wait(30)
                body = server.bodies.get(self.path)
                code = server.status or (200 if body is not None else 404)
                self.send_response(code)
                self.send_header("Content-Length", str(len(body or b"")) if code == 200
                                 else "0")
                self.end_headers()
                if code == 200 and body is not None:
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, ca: CertificateAuthority, path: str = "/issuing.crl") -> bytes:
        data = ca.crl().public_bytes(serialization.Encoding.DER)
        self.bodies[path] = data
        return data

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[CrlServer]:
    srv = CrlServer()
    yield srv
    srv.close()


@pytest.fixture
def fresh_ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca", key_size=2048)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _pool(ca: CertificateAuthority) -> TrustPool:
    return TrustPool((ca.root,), (ca.issuing,))


def _verifier(ca: CertificateAuthority, fetcher: CrlFetcher, clock: Clock) -> ChainVerifier:
    return ChainVerifier(_pool(ca), clock=clock, crl=CrlChecker((), source=fetcher))


def _leaf(ca: CertificateAuthority, server: CrlServer, name: str = "alice.example.com",
          path: str = "/issuing.crl") -> Identity:
    return ca.issue(name, key_size=2048, crl_urls=[f"{server.url}{path}"])


# --------------------------------------------------------------------------- parsing


def test_distribution_points_http_only(fresh_ca: CertificateAuthority) -> None:
    ident = fresh_ca.issue("a.example.com", key_size=2048,
                           crl_urls=["ldap://x.example.com/cn=crl", "http://crl.example.com/a",
                                     "https://crl.example.com/b"])
    assert distribution_points(ident.leaf) == ("http://crl.example.com/a",)
    plain = fresh_ca.issue("b.example.com", key_size=2048)
    assert distribution_points(plain.leaf) == ()


def test_fetcher_options_must_be_positive() -> None:
    CrlFetcher(interval=1, retry=1, timeout=1, max_bytes=1)
    with pytest.raises(ConfigurationError, match="timeout must be positive"):
        CrlFetcher(timeout=0)


# --------------------------------------------------------------------------- revocation


def test_fetched_crl_revokes_after_the_refresh_interval(
    fresh_ca: CertificateAuthority, server: CrlServer
) -> None:
    alice = _leaf(fresh_ca, server)
    bob = _leaf(fresh_ca, server, "bob.example.com")
    server.publish(fresh_ca)
    clock = Clock()
    fetcher = CrlFetcher(interval=600, background=False)
    verifier = _verifier(fresh_ca, fetcher, clock)
    verifier.verify_client(alice.leaf, alice.chain)
    verifier.verify_client(bob.leaf, bob.chain)
    assert (server.hits, fetcher.fetches) == (1, 1)  # one download for both: cached
    fresh_ca.revoke(alice.leaf.serial_number, "key compromise")
    server.publish(fresh_ca)
    clock.now += timedelta(seconds=599)  # within the interval: the cached CRL answers
    verifier.verify_client(alice.leaf, alice.chain)
    assert server.hits == 1
    clock.now += timedelta(seconds=2)  # interval passed: refetched, alice is revoked
    with pytest.raises(RevokedError) as err:
        verifier.verify_client(alice.leaf, alice.chain)
    assert err.value.reason == "crl-revoked" and server.hits == 2
    verifier.verify_client(bob.leaf, bob.chain)  # twin: bob is still fine


def test_background_refresh_keeps_answering_from_the_cache(
    fresh_ca: CertificateAuthority, server: CrlServer
) -> None:
    alice = _leaf(fresh_ca, server)
    server.publish(fresh_ca)
    clock = Clock()
    fetcher = CrlFetcher(interval=60, background=True)
    verifier = _verifier(fresh_ca, fetcher, clock)
    verifier.verify_client(alice.leaf, alice.chain)  # first fetch: in the handshake
    fresh_ca.revoke(alice.leaf.serial_number)
    server.publish(fresh_ca)
    server.hold = threading.Event()  # the refresh is now stuck on the server
    clock.now += timedelta(seconds=61)
    verifier.verify_client(alice.leaf, alice.chain)  # answered from the cache meanwhile
    entry = next(iter(fetcher._cache.values()))
    server.hold.set()  # let the refresh finish, then the revocation applies
    entry.settled.wait(30)
    with pytest.raises(RevokedError):
        verifier.verify_client(alice.leaf, alice.chain)


def test_an_older_crl_cannot_unrevoke(fresh_ca: CertificateAuthority, server: CrlServer
                                      ) -> None:
    alice = _leaf(fresh_ca, server)
    old = server.publish(fresh_ca)
    fresh_ca.revoke(alice.leaf.serial_number)
    clock = Clock()
    fetcher = CrlFetcher(interval=60, background=False)
    verifier = _verifier(fresh_ca, fetcher, clock)
    clock.now += timedelta(seconds=1)
    server.publish(fresh_ca)
    with pytest.raises(RevokedError):
        verifier.verify_client(alice.leaf, alice.chain)
    server.bodies["/issuing.crl"] = old  # replay of the CRL before the revocation
    clock.now += timedelta(seconds=61)
    with pytest.raises(RevokedError):
        verifier.verify_client(alice.leaf, alice.chain)
    assert server.hits == 2  # it was fetched, and ignored


# --------------------------------------------------------------------------- fail closed


def test_unreachable_first_fetch_fails_closed(fresh_ca: CertificateAuthority,
                                               server: CrlServer) -> None:
    alice = _leaf(fresh_ca, server)
    clock = Clock()
    verifier = _verifier(fresh_ca, CrlFetcher(background=False, retry=30), clock)
    server.status = 503
    with pytest.raises(ChainVerificationError) as err:
        verifier.verify_client(alice.leaf, alice.chain)
    assert err.value.reason == "crl-stale" and "unavailable" in str(err.value)
    assert "HTTP 503" in str(err.value)
    server.status = None
    server.publish(fresh_ca)
    clock.now += timedelta(seconds=10)  # within `retry`: not asked again yet
    with pytest.raises(ChainVerificationError):
        verifier.verify_client(alice.leaf, alice.chain)
    assert server.hits == 1
    clock.now += timedelta(seconds=30)  # twin: reachable again after `retry`
    verifier.verify_client(alice.leaf, alice.chain)


def test_cached_crl_serves_until_next_update_then_fails_closed(
    fresh_ca: CertificateAuthority, server: CrlServer
) -> None:
    alice = _leaf(fresh_ca, server)
    crl = x509.load_der_x509_crl(server.publish(fresh_ca))
    assert crl.next_update_utc is not None
    clock = Clock()
    verifier = _verifier(fresh_ca, CrlFetcher(interval=3600, background=False), clock)
    verifier.verify_client(alice.leaf, alice.chain)
    server.status = 503  # the distribution point goes down
    clock.now = crl.next_update_utc - timedelta(minutes=1)  # refresh fails, cache holds
    verifier.verify_client(alice.leaf, alice.chain)
    clock.now = crl.next_update_utc + timedelta(minutes=2)  # past nextUpdate: stale
    with pytest.raises(ChainVerificationError) as err:
        verifier.verify_client(alice.leaf, alice.chain)
    assert err.value.reason == "crl-stale" and "stale" in str(err.value)
    # with the checker's grace the same cached CRL is still accepted
    tolerant = ChainVerifier(_pool(fresh_ca), clock=clock, crl=CrlChecker(
        (), grace=timedelta(hours=1), source=verifier.crl.source if verifier.crl else None))
    tolerant.verify_client(alice.leaf, alice.chain)


def test_crl_signed_by_another_key_is_refused(fresh_ca: CertificateAuthority,
                                              server: CrlServer) -> None:
    alice = _leaf(fresh_ca, server)
    now = datetime.now(UTC)
    forged_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(fresh_ca.issuing.subject)  # the right name, the wrong key
        .last_update(now)
        .next_update(now + timedelta(days=7))
        .sign(forged_key, hashes.SHA256())
    )
    server.bodies["/issuing.crl"] = forged.public_bytes(serialization.Encoding.DER)
    clock = Clock()
    verifier = _verifier(fresh_ca, CrlFetcher(background=False, retry=1), clock)
    with pytest.raises(ChainVerificationError) as err:
        verifier.verify_client(alice.leaf, alice.chain)
    assert err.value.reason == "crl-stale" and "signature does not verify" in str(err.value)
    server.publish(fresh_ca)  # twin: the CA's own CRL
    clock.now += timedelta(seconds=2)
    verifier.verify_client(alice.leaf, alice.chain)


def test_crl_of_another_ca_is_refused(fresh_ca: CertificateAuthority, ca: CertificateAuthority,
                                      server: CrlServer) -> None:
    alice = _leaf(fresh_ca, server)
    server.bodies["/issuing.crl"] = ca.crl().public_bytes(serialization.Encoding.PEM)
    verifier = _verifier(fresh_ca, CrlFetcher(background=False), Clock())
    with pytest.raises(ChainVerificationError) as err:
        verifier.verify_client(alice.leaf, alice.chain)
    assert "CRL signature does not verify" in str(err.value) or "not by the" in str(err.value)


def test_size_bound(fresh_ca: CertificateAuthority, server: CrlServer) -> None:
    alice = _leaf(fresh_ca, server)
    data = server.publish(fresh_ca)
    small = CrlFetcher(max_bytes=len(data) - 1, background=False)
    with pytest.raises(ChainVerificationError) as err:
        _verifier(fresh_ca, small, Clock()).verify_client(alice.leaf, alice.chain)
    assert f"more than the {len(data) - 1}" in str(err.value)
    exact = CrlFetcher(max_bytes=len(data), background=False)  # twin: just fits
    _verifier(fresh_ca, exact, Clock()).verify_client(alice.leaf, alice.chain)


def test_timeout_bound(fresh_ca: CertificateAuthority, server: CrlServer) -> None:
    alice = _leaf(fresh_ca, server)
    server.publish(fresh_ca)
    server.hold = threading.Event()  # the server never answers until released
    with pytest.raises(ChainVerificationError) as err:
        _verifier(fresh_ca, CrlFetcher(timeout=0.3, background=False), Clock()).verify_client(
            alice.leaf, alice.chain)
    assert "timed out" in str(err.value)
    server.hold.set()  # twin: an answering server
    _verifier(fresh_ca, CrlFetcher(timeout=5, background=False), Clock()).verify_client(
        alice.leaf, alice.chain)


def test_not_a_crl_and_404(fresh_ca: CertificateAuthority, server: CrlServer) -> None:
    alice = _leaf(fresh_ca, server)
    missing = _leaf(fresh_ca, server, "bob.example.com", path="/missing.crl")
    server.bodies["/issuing.crl"] = b"<html>hello</html>"
    verifier = _verifier(fresh_ca, CrlFetcher(background=False), Clock())
    with pytest.raises(ChainVerificationError, match="not a PEM or DER CRL"):
        verifier.verify_client(alice.leaf, alice.chain)
    with pytest.raises(ChainVerificationError, match="HTTP 404"):
        verifier.verify_client(missing.leaf, missing.chain)


def test_certificate_without_distribution_point_uses_files_only(
    fresh_ca: CertificateAuthority, server: CrlServer
) -> None:
    plain = fresh_ca.issue("plain.example.com", key_size=2048)
    verifier = _verifier(fresh_ca, CrlFetcher(background=False), Clock())
    verifier.verify_client(plain.leaf, plain.chain)
    assert server.hits == 0


# --------------------------------------------------------------------------- node serve flag


def test_node_serve_crl_fetch_flag_builds_a_fetching_checker(
    tmp_path: Path, fresh_ca: CertificateAuthority, server: CrlServer
) -> None:
    from trisa_peer.cli.main import build_parser
    from trisa_peer.cli.options import load_material

    node = fresh_ca.issue("node.example.com", key_size=2048)
    cert, key, trust = tmp_path / "node.pem", tmp_path / "node.key", tmp_path / "trust.pem"
    cert.write_bytes(certs_to_pem([node.leaf, *node.chain]))
    key.write_bytes(node.key_pem())
    key.chmod(0o600)
    trust.write_bytes(fresh_ca.trust_pem())
    base = ["serve", "--cert", str(cert), "--key", str(key), "--trust", str(trust)]
    args: argparse.Namespace = build_parser().parse_args([*base, "--crl-fetch",
                                                         "--crl-fetch-interval", "120"])
    material = load_material(args).current()
    assert material.crl is not None and isinstance(material.crl.source, CrlFetcher)
    assert material.crl.source.interval == timedelta(seconds=120)
    plain = load_material(build_parser().parse_args(base)).current()
    assert plain.crl is None  # twin: without the flag, no CRL checking at all


@pytest.mark.slow
def test_node_serve_crl_fetch_refuses_a_revoked_client_end_to_end(
    tmp_path: Path, fresh_ca: CertificateAuthority, server: CrlServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real `trisa-peer serve --crl-fetch` (subprocess), a real directory and the HTTP
    distribution point: Alice, revoked before she calls, is refused at step 3 for the
    fetched CRL; Carol (same CA, not revoked) passes all eight steps (the twin)."""
    import subprocess
    import sys

    from trisa_peer.cli.main import main
    from trisa_peer.directory import Directory, DirectoryServer, SQLiteStore
    from trisa_peer.testing.network import free_port

    bob_port = free_port()
    trust = tmp_path / "trust.pem"
    trust.write_bytes(fresh_ca.trust_pem())
    files: dict[str, tuple[Path, Path]] = {}
    store = SQLiteStore(tmp_path / "gds.db")
    gds = DirectoryServer(Directory(store), listen="127.0.0.1:0")
    gds.start()
    try:
        for name in ("bob", "alice", "carol"):
            cn = f"{name}.vasp.test"
            ident = _leaf(fresh_ca, server, cn)
            cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
            cert.write_bytes(certs_to_pem([ident.leaf, *ident.chain]))
            key.write_bytes(ident.key_pem())
            key.chmod(0o600)
            files[name] = (cert, key)
            port = bob_port if name == "bob" else free_port()
            gds.directory.add(common_name=cn, endpoint=f"{cn}:{port}",
                              certificates=[ident.leaf, *ident.chain])
            if name == "alice":
                fresh_ca.revoke(ident.leaf.serial_number, "key compromise")
        server.publish(fresh_ca)

        def args(name: str) -> list[str]:
            cert, key = files[name]
            return ["--cert", str(cert), "--key", str(key), "--trust", str(trust),
                    "--directory", gds.endpoint, "--directory-insecure"]

        bob = subprocess.Popen(
            [sys.executable, "-m", "trisa_peer", "serve", "--listen", f"127.0.0.1:{bob_port}",
             "--crl-fetch", "--policy", "accept", *args("bob")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert bob.stdout is not None
            line = bob.stdout.readline()
            assert "serving on port" in line, bob.stderr.read() if bob.stderr else line
            resolve = ["--resolve", f"bob.vasp.test:{bob_port}:127.0.0.1"]
            code = main(["check", "bob.vasp.test", *args("carol"), *resolve])
            out, err = capsys.readouterr()
            assert code == 0 and "all eight steps passed" in out, (out, err)
            code = main(["check", "bob.vasp.test", *args("alice"), *resolve])
            out, err = capsys.readouterr()
            assert code == 1 and "step 3" in err, (out, err)
        finally:
            bob.terminate()
            _, log = bob.communicate(timeout=30)
        assert "peer=alice.vasp.test" in log and "reason=crl-revoked" in log, log
        assert "peer=carol.vasp.test" in log and "outcome=accept" in log, log
        assert server.hits >= 1
    finally:
        gds.stop()
        store.close()
