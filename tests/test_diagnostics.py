"""Issue 12 sections 4 and 6: each failure a newcomer meets names the problem and the fix.

Real sockets on 127.0.0.1, real TLS, the project's own directory server; every rejected
case has an accepted twin that differs in the one thing the message blames.
"""

from __future__ import annotations

import http.server
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import PKI, SECTIGO_PASSWORD, SECTIGO_USER
from pki import identity
from test_handshake_e2e import Net, dial

from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import common_name, load_identity
from trisa_peer.directory.client import DirectoryClient
from trisa_peer.directory.server import DirectoryServer
from trisa_peer.directory.store import SQLiteStore
from trisa_peer.errors import (
    CertificateError,
    ChainVerificationError,
    DirectoryError,
    DirectoryMismatchError,
    DirectoryNotFoundError,
    HandshakeError,
    SectigoError,
    TransportSecurityError,
)
from trisa_peer.sectigo.client import SectigoClient
from trisa_peer.steps import HandshakeStep, Reason
from trisa_peer.testing.network import free_port
from trisa_peer.transport.identity import FileMaterial
from trisa_peer.trust import TrustPool
from trisa_peer.verify import ChainVerifier

pytestmark = pytest.mark.slow

S = HandshakeStep


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    yield n
    n.close()


# ------------------------------------------- section 4: another CA vs the same CA


def test_server_from_another_ca_is_refused_at_step_6_naming_the_issuer(net: Net) -> None:
    port = free_port()
    net.register(identity("bob"), port)
    net.node(identity("evil-bob"), port, start=True)  # same CN, issued by the Evil CA
    err = dial(net.node(identity("alice")), "bob.vasp.test")
    assert isinstance(err, ChainVerificationError), err
    assert err.step == S.VERIFY_SERVER_CHAIN and err.reason == Reason.UNKNOWN_ISSUER
    assert "issued by 'Evil Issuing CA', not by a CA in the trust pool" in str(err)
    assert net.calls == []


def test_server_from_the_same_ca_not_registered_is_refused_at_step_7_as_reissued(
    net: Net,
) -> None:
    port = free_port()
    net.register(identity("bob"), port)
    net.node(identity("bob-reissued"), port, start=True)  # same CN, same CA, new key
    err = dial(net.node(identity("alice")), "bob.vasp.test")
    assert isinstance(err, DirectoryMismatchError), err
    assert err.step == S.BIND_SERVER_RECORD
    assert "same CA ('TRISA Test Issuing CA'), not the registered certificate" in str(err)
    assert "reissued?" in str(err)
    assert ("serial", f"{identity('bob-reissued').leaf.serial_number:X}",
            f"{identity('bob').leaf.serial_number:X}") in err.mismatches


def test_server_with_the_registered_certificate_passes(net: Net) -> None:
    net.serve("bob")
    assert dial(net.serve("alice"), "bob.vasp.test") is None


# ------------------------------------------- section 6: --resolve, not DNS


def test_resolve_for_another_name_says_so_not_dns(net: Net) -> None:
    net.serve("bob")
    endpoint = next(k for k in net.resolve if k.startswith("bob.vasp.test:"))
    address = net.resolve.pop(endpoint)
    net.resolve["bob.vasp.test:1"] = address  # the user typed another port
    err = dial(net.node(identity("alice")), "bob.vasp.test")
    assert isinstance(err, TransportSecurityError), err
    assert err.reason == Reason.UNREACHABLE
    text = str(err)
    assert f"no --resolve entry matches bob.vasp.test's registered endpoint {endpoint}" in text
    assert "(--resolve given for bob.vasp.test:1)" in text
    assert f"use --resolve {endpoint}:ADDRESS" in text
    assert "does not resolve" not in text and "Domain name" not in text
    net.resolve[endpoint] = address  # the twin: the right name
    assert dial(net.serve("alice"), "bob.vasp.test") is None


def test_resolve_to_an_address_where_nothing_listens(net: Net) -> None:
    net.serve("bob")
    endpoint = next(k for k in net.resolve if k.startswith("bob.vasp.test:"))
    good = net.resolve[endpoint]
    closed = f"127.0.0.1:{free_port()}"
    net.resolve[endpoint] = closed
    err = dial(net.node(identity("alice")), "bob.vasp.test")
    assert isinstance(err, TransportSecurityError) and err.reason == Reason.UNREACHABLE
    assert f"nothing is listening at {closed} (connection refused), where --resolve maps" in (
        str(err))
    net.resolve[endpoint] = good
    assert dial(net.serve("alice"), "bob.vasp.test") is None


def test_no_resolve_at_all_is_a_dns_failure_with_the_fix(net: Net) -> None:
    net.serve("bob")
    net.resolve.clear()
    err = dial(net.node(identity("alice")), "bob.vasp.test")
    assert isinstance(err, TransportSecurityError) and err.reason == Reason.UNREACHABLE
    assert "does not resolve (DNS); if it is not in DNS, map it with --resolve" in str(err)


# ------------------------------------------- section 6: what is wrong with the directory


class Servers:
    """A plaintext and a TLS directory, a silent listener, an HTTP/1.1 server."""

    def __init__(self, tmp: Path) -> None:
        self.plain = DirectoryServer(SQLiteStore(tmp / "plain.db"), listen="127.0.0.1:0")
        self.plain.start()
        cert, key = (PKI / "bob.pem").read_bytes(), (PKI / "bob.key").read_bytes()
        self.tls = DirectoryServer(SQLiteStore(tmp / "tls.db"), listen="127.0.0.1:0",
                                   tls=(cert, key))
        self.tls.start()
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.silent.listen(8)  # the kernel accepts; nobody ever answers
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def endpoint(self, which: str) -> str:
        if which == "silent":
            return f"127.0.0.1:{self.silent.getsockname()[1]}"
        if which == "http":
            return f"127.0.0.1:{self.http.server_address[1]}"
        return str(getattr(self, which).endpoint)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.silent.close()
        self.plain.stop()
        self.tls.stop()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    yield s
    s.close()


def lookup_error(endpoint: str, **kw: object) -> DirectoryError:
    timeout = float(kw.pop("timeout", 3.0))  # type: ignore[arg-type]
    client = DirectoryClient(endpoint, timeout=timeout, cache_ttl=0, **kw)  # type: ignore[arg-type]
    try:
        client.lookup(common_name="nobody.vasp.test")
    except DirectoryError as exc:
        return exc
    finally:
        client.close()
    raise AssertionError("the lookup of a missing record succeeded")


TRUST = (PKI / "trust.pem").read_bytes()
ANSWERED = "directory lookup of nobody.vasp.test: "


@pytest.mark.parametrize(("target", "options", "expected"), [
    ("closed", {"insecure": True},
     "nothing is listening at {ep} (connection refused); check the directory address"),
    ("silent", {"insecure": True, "timeout": 1.0},
     "no answer from {ep} within 1 s (timeout); the directory may be down"),
    ("plain", {},
     "{ep} does not speak TLS (a plaintext server); for a plaintext directory add "
     "--directory-insecure"),
    ("tls", {"insecure": True},
     "{ep} closed the plaintext connection: it expects TLS; remove --directory-insecure"),
    ("http", {"insecure": True},
     "{ep} is not a gRPC server (it answered in another protocol, e.g. HTTP/1.1)"),
    ("tls", {"server_name": "bob.vasp.test"},
     "the TLS certificate of {ep} is not trusted (unable to get local issuer certificate); "
     "give the CA that issued it with --directory-ca"),
])
def test_directory_problem_named_with_its_fix(
    servers: Servers, target: str, options: dict[str, object], expected: str
) -> None:
    ep = f"127.0.0.1:{free_port()}" if target == "closed" else servers.endpoint(target)
    err = lookup_error(ep, **options)
    assert type(err) is DirectoryError
    assert str(err).startswith(ANSWERED + expected.format(ep=ep)), str(err)


@pytest.mark.parametrize(("target", "options"), [
    ("plain", {"insecure": True}),  # twin of "does not speak TLS" and "refused"
    ("tls", {"ca_pem": TRUST, "server_name": "bob.vasp.test"}),  # of "expects TLS", untrusted
])
def test_the_same_directories_answer_when_dialled_right(
    servers: Servers, target: str, options: dict[str, object]
) -> None:
    err = lookup_error(servers.endpoint(target), **options)
    assert isinstance(err, DirectoryNotFoundError)  # an answer: no such record


def test_check_step_1_shows_the_directory_problem_not_just_try_again(net: Net) -> None:
    alice = net.node(identity("alice"))
    net.gds.stop()
    err = dial(alice, "bob.vasp.test")
    assert isinstance(err, HandshakeError) and err.step == S.LOOKUP_PEER
    assert err.reason == Reason.DIRECTORY_UNAVAILABLE
    assert (f"directory unavailable while looking up 'bob.vasp.test': nothing is listening "
            f"at {net.gds.endpoint} (connection refused)") in str(err)


# ------------------------------------------- section 6: a trust pool without the root


def test_pool_without_the_peers_root_names_expected_and_loaded_roots() -> None:
    evil_bob = load_identity(PKI / "evil-bob.pem", key_path=PKI / "evil-bob.key")
    verifier = ChainVerifier(TrustPool.load(PKI / "trust.pem"))
    with pytest.raises(ChainVerificationError) as info:
        verifier.verify_server(evil_bob.leaf, evil_bob.chain, host="bob.vasp.test")
    assert info.value.reason == Reason.UNKNOWN_ISSUER
    assert str(info.value) == (
        "step 6 (client verifies the server chain): certificate of 'bob.vasp.test' is "
        "issued by 'Evil Issuing CA' under root 'Evil Root CA', which the trust pool does "
        "not hold (roots loaded: 'TRISA Test Root CA'); if that CA is to be trusted, add "
        "its root certificate with --trust")
    # the twin: the same certificate with its root in the pool
    both = ChainVerifier(TrustPool.load(PKI / "trust.pem", PKI / "evil-trust.pem"))
    assert both.verify_server(evil_bob.leaf, evil_bob.chain, host="bob.vasp.test")


def test_client_pool_without_the_directory_root_fails_step_6_with_the_roots(net: Net) -> None:
    net.serve("bob")
    alice = net.node(identity("alice"), trust=TrustPool.load(PKI / "evil-trust.pem"))
    err = dial(alice, "bob.vasp.test")
    assert isinstance(err, ChainVerificationError) and err.step == S.VERIFY_SERVER_CHAIN
    assert "issued by 'TRISA Test Issuing CA'" in str(err)
    assert "(roots loaded: 'Evil Root CA')" in str(err)
    assert "candidates exhausted" not in str(err)


def test_local_cas_do_not_share_one_name(tmp_path: Path) -> None:
    first = CertificateAuthority.init(tmp_path / "a" / "myca", key_size=2048)
    second = CertificateAuthority.init(tmp_path / "b" / "myca", key_size=2048)
    names = [common_name(ca.root) for ca in (first, second)]
    assert names[0] != names[1]
    for ca, name in zip((first, second), names, strict=True):
        assert re.fullmatch(r"trisa-peer Local Root CA myca-[0-9a-f]{6}", name)
        suffix = name.rsplit(" ", 1)[1]
        assert common_name(ca.issuing) == f"trisa-peer Local Issuing CA {suffix}"
    # the twin: an explicit name is kept as given
    named = CertificateAuthority.init(tmp_path / "c" / "myca", name="Acme Root CA",
                                      key_size=2048)
    assert common_name(named.root) == "Acme Root CA"
    assert common_name(named.issuing) == "Acme Issuing CA"


# ------------------------------------------- section 6: key and certificate swapped


TRUST_FILE = PKI / "trust.pem"


@pytest.mark.parametrize(("cert", "key", "expected"), [
    ("bob.key", "bob.pem",
     "--cert and --key are swapped: {d}/bob.key holds a private key and {d}/bob.pem a "
     "certificate; give the certificate with --cert and the key with --key"),
    ("bob.pem", "alice.pem",
     "{d}/alice.pem (given as --key) holds a certificate, not a private key; give the "
     "private key file with --key"),
    ("bob.key", "alice.key",
     "{d}/bob.key (given as --cert) holds a private key, not a certificate; give the "
     "certificate file with --cert"),
    ("bob.pem", "alice.key",
     "the private key in {d}/alice.key (--key) does not match the certificate in "
     "{d}/bob.pem (--cert): they are not a pair; give --key the key the certificate was "
     "issued for, or --cert that key's certificate"),
    ("bob.key", None,
     "{d}/bob.key (given as --cert) holds a private key, not a certificate; give the "
     "certificate with --cert and the key with --key"),
])
def test_identity_files_mixed_up_say_which_flag_to_fix(
    cert: str, key: str | None, expected: str
) -> None:
    with pytest.raises(CertificateError) as info:
        FileMaterial(PKI / cert, PKI / key if key else None, [TRUST_FILE])
    assert str(info.value) == expected.format(d=PKI)


def test_identity_files_in_their_places_load() -> None:  # the twin of every case above
    material = FileMaterial(PKI / "bob.pem", PKI / "bob.key", [TRUST_FILE]).current()
    assert material.identity.common_name == "bob.vasp.test"


def test_check_with_swapped_files_is_one_line_exit_1(trisa_peer_cli: Any) -> None:
    result = trisa_peer_cli("check", "bob.vasp.test", "--cert", PKI / "bob.key",
                            "--key", PKI / "bob.pem", "--trust", TRUST_FILE,
                            "--directory", f"127.0.0.1:{free_port()}", "--directory-insecure")
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--cert and --key are swapped" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------- section 6: a Sectigo endpoint that is not one


@pytest.mark.parametrize(("scheme", "expected"), [
    ("http", "login: not a Sectigo API at {ep} (answered with HTTP/2 frames, not HTTP/1.1: "
             "a gRPC port?); check the endpoint (SECTIGO_ENDPOINT)"),
    ("https", "login: not a TLS server at {ep} (answered in plaintext); use http:// for a "
              "plaintext service, or check the port"),
])
def test_sectigo_endpoint_at_a_grpc_port_says_so_without_raw_bytes(
    servers: Servers, scheme: str, expected: str
) -> None:
    ep = f"{scheme}://{servers.endpoint('plain')}"
    client = SectigoClient(ep, "user", "secret", cache_path=False, timeout=3, retries=1)
    with pytest.raises(SectigoError) as info:
        client.authenticate()
    assert str(info.value) == expected.format(ep=ep)
    assert info.value.status == 0


def test_sectigo_endpoint_answering_binary_garbage(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"\x00\x01\x02garbage\xff\xfe\r\n")

        thread = threading.Thread(target=answer)
        thread.start()
        ep = f"http://127.0.0.1:{listener.getsockname()[1]}"
        client = SectigoClient(ep, "user", "secret", cache_path=False, timeout=3, retries=1)
        with pytest.raises(SectigoError) as info:
            client.authenticate()
        thread.join()
    assert str(info.value) == (
        f"login: not a Sectigo API at {ep} (answered 14 bytes of binary data that are not "
        "an HTTP response); check the endpoint (SECTIGO_ENDPOINT)")
    assert "garbage" not in str(info.value)


def test_sectigo_endpoint_that_is_the_sectigo_service_logs_in(emu: Any) -> None:  # the twin
    client = SectigoClient(emu.base_url, SECTIGO_USER, SECTIGO_PASSWORD, cache_path=False)
    client.authenticate()
    assert client.credentials.access_token


# ------------------------------------------- section 6: revoke with the wrong profile


def _issued_serial(client: SectigoClient) -> str:
    batch = client.create_single_cert_batch(1, "diag", {
        "commonName": "example.com", "dNSName": "example.com", "pkcs12Password": "Pw-12345"})
    [item] = client.find(common_name="example.com")["items"]
    assert batch["status"] == "READY_FOR_DOWNLOAD"
    return str(item["serialNumber"])


def test_revoke_in_another_profile_says_the_certificate_is_elsewhere(
    emu: Any, tmp_path: Path
) -> None:
    client = SectigoClient(emu.base_url, SECTIGO_USER, SECTIGO_PASSWORD, cache_path=False)
    serial = _issued_serial(client)
    with pytest.raises(SectigoError) as info:
        client.revoke(85, "superseded", serial)
    assert info.value.status == 404
    assert str(info.value) == (
        f"certificate {serial} is not in profile 85 (404): it exists (common name "
        "example.com, status valid) under another profile; give that profile's id with -p")
    assert client.find(serial=serial)["items"][0]["status"] == "valid"  # nothing revoked
    client.revoke(42, "superseded", serial)  # the twin: its own profile
    assert client.find(serial=serial)["items"][0]["status"] == "revoked"


def test_revoke_of_an_unknown_serial_stays_not_found(emu: Any) -> None:
    client = SectigoClient(emu.base_url, SECTIGO_USER, SECTIGO_PASSWORD, cache_path=False)
    with pytest.raises(SectigoError, match=r"^certificate 0A1B2C in profile 42 not found \(404\)$"):
        client.revoke(42, "superseded", "0a1b2c")


def test_sectigo_revoke_cli_names_the_profiles_that_exist(
    emu: Any, sectigo_cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    client = SectigoClient(emu.base_url, SECTIGO_USER, SECTIGO_PASSWORD, cache_path=False)
    serial = _issued_serial(client)
    common = ("-e", emu.base_url, "-u", SECTIGO_USER, "-p", SECTIGO_PASSWORD, "--no-cache")
    result = sectigo_cli(*common, "revoke", "-p", "85", "-r", "superseded", "-s", serial)
    assert result.returncode == 1
    assert result.stderr == (
        f"sectigo: error: certificate {serial} is not in profile 85 (404): it exists (common "
        "name example.com, status valid) under another profile; give that profile's id with "
        '-p; authorities: 1 (profile 42 "TRISA Profile", enabled); profiles: 42\n')


def test_check_against_a_plaintext_directory_without_insecure_names_the_flag(
    servers: Servers, trisa_peer_cli: Any
) -> None:
    identity_args = ("--cert", PKI / "alice.pem", "--key", PKI / "alice.key",
                     "--trust", TRUST_FILE, "--directory", servers.endpoint("plain"))
    result = trisa_peer_cli("check", "bob.vasp.test", *identity_args)
    assert result.returncode == 1
    assert (f"directory unavailable while looking up 'bob.vasp.test': "
            f"{servers.endpoint('plain')} does not speak TLS (a plaintext server); for a "
            "plaintext directory add --directory-insecure") in result.stdout + result.stderr
    # the twin: with the flag the directory answers (bob is simply not registered there)
    fixed = trisa_peer_cli("check", "bob.vasp.test", *identity_args, "--directory-insecure")
    assert "has no VERIFIED directory record" in fixed.stdout + fixed.stderr
    assert "does not speak TLS" not in fixed.stdout + fixed.stderr
