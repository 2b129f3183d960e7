"""The Sectigo client against the emulator and against deliberately broken servers,
all over real loopback HTTP (no mocks of the HTTP layer)."""

from __future__ import annotations

import http.server
import io
import json
import logging
import os
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from helpers import SECTIGO_PASSWORD as PASSWORD
from helpers import SECTIGO_USER as USER

from trisa_peer.errors import ConfigurationError, SectigoError
from trisa_peer.sectigo import SectigoAPIError, SectigoClient, normalize_status
from trisa_peer.sectigo.client import _safe_filename, normalize_serial
from trisa_peer.sectigo.emulator import SectigoEmulator
from trisa_peer.sectigo.tokens import Credentials, decode_claims, mint

PARAMS = {"commonName": "example.com", "dNSName": "example.com", "pkcs12Password": "Pw-12345"}


# --------------------------------------------------------------------------- helpers


Reply = tuple[int, dict[str, str], bytes]


class _TinyServer:
    """A stdlib HTTP server answering with ``responder(method, path, body)``."""

    def __init__(self, responder: Callable[[str, str, bytes], Reply]) -> None:
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                outer.requests.append((self.command, self.path))
                status, headers, data = responder(self.command, self.path, body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up: what the timeout tests do

            do_GET = do_POST = do_PUT = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       kwargs={"poll_interval": 0.05})
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tiny() -> Iterator[Callable[[Callable[[str, str, bytes], Reply]], _TinyServer]]:
    servers: list[_TinyServer] = []

    def make(responder: Callable[[str, str, bytes], Reply]) -> _TinyServer:
        servers.append(_TinyServer(responder))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _tokens(access_ttl: int = 900, refresh_ttl: int = 7200) -> bytes:
    now = int(time.time())
    access = mint({"iat": now, "exp": now + access_ttl, "sub": "/account/1/user/1"}, b"k")
    refresh = mint({"iat": now, "exp": now + refresh_ttl}, b"k")
    return json.dumps({"accessToken": access, "refreshToken": refresh}).encode()


def _login_then(reply: Callable[[str, str, bytes], Reply]) -> Callable[[str, str, bytes], Reply]:
    """A responder that logs in properly and answers API calls with ``reply``."""

    def responder(method: str, path: str, body: bytes) -> Reply:
        if path == "/auth/pwd":
            return 200, {"Content-Type": "application/json"}, _tokens()
        return reply(method, path, body)

    return responder


def _client(url: str, tmp_path: Path, **kw: Any) -> SectigoClient:
    kw.setdefault("cache_path", tmp_path / "cache" / "credentials.json")
    kw.setdefault("backoff", 0.01)
    return SectigoClient(url, USER, PASSWORD, **kw)


# --------------------------------------------------------------------------- happy paths


def test_full_cycle_in_process(emu: SectigoEmulator, tmp_path: Path) -> None:
    client = _client(emu.base_url, tmp_path)
    [authority] = client.authorities()
    assert authority == {
        "id": 1, "ecosystemId": 100, "signerCertificateId": 1, "ecosystemName": "TRISA",
        "balance": 10, "enabled": True, "profileId": 42, "profileName": "TRISA Profile",
    }
    assert client.balance(1) == 10
    assert [p["name"] for p in client.profile_params(42)] == [
        "commonName", "dNSName", "pkcs12Password"]
    batch = client.create_single_cert_batch(
        1, "example", {**PARAMS, "dNSName": "example.com\nwww.example.com"})
    assert batch["batchId"] == 24 and batch["status"] == "READY_FOR_DOWNLOAD"
    assert client.balance(1) == 9
    assert client.licenses() == {"ordered": 10, "issued": 1}
    assert client.processing_info(batch["batchId"]) == {"active": 0, "success": 1, "failed": 0}
    data = client.download_bytes(batch["batchId"])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == ["example.com.p12"]
        p12 = zf.read("example.com.p12")
    key, leaf, chain = pkcs12.load_key_and_certificates(p12, b"Pw-12345")
    assert key is not None and leaf is not None and len(chain) == 2
    found = client.find(common_name="example.com")
    assert found["totalCount"] == 1
    assert found["items"][0]["serialNumber"] == format(leaf.serial_number, "X")
    client.revoke(42, "CessationOfOperation", leaf.serial_number)
    assert client.find(serial=leaf.serial_number)["items"][0]["status"] == "revoked"
    [entry] = list(emu.ca.crl())
    assert entry.serial_number == leaf.serial_number
    assert emu.ca.is_revoked(leaf.serial_number)


def test_state_survives_restart(sectigo_ca_dir: Path, tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(ca_dir=sectigo_ca_dir, state_path=tmp_path / "s.json",
                              username=USER, password=PASSWORD, key_size=2048)
    with SectigoEmulator(**kw) as first:
        client = _client(first.base_url, tmp_path)
        bid = client.create_single_cert_batch(1, "b", PARAMS)["batchId"]
    assert oct(os.stat(tmp_path / "s.json").st_mode & 0o777) == "0o600"
    with SectigoEmulator(**kw) as second:
        # the cached tokens are for the old port's endpoint: a fresh login happens
        client = _client(second.base_url, tmp_path)
        assert client.batch_detail(bid)["batchName"] == "b"
        assert client.balance(1) == 9
        assert zipfile.is_zipfile(client.download(bid, tmp_path))
        assert client.create_single_cert_batch(1, "c", PARAMS)["batchId"] == bid + 1


def test_issue_delay_polling_and_download_refused_before_ready(sectigo_ca_dir: Path,
    tmp_path: Path,
) -> None:
    """Readiness follows the service's clock, so the test moves it instead of racing
    real time (a loaded machine once took longer than the delay to create the batch)."""
    now = [time.time()]
    with SectigoEmulator(ca_dir=sectigo_ca_dir, state_path=tmp_path / "s.json",
                         username=USER, password=PASSWORD, key_size=2048,
                         issue_delay=600, clock=lambda: now[0]) as emu:
        client = _client(emu.base_url, tmp_path)
        bid = client.create_single_cert_batch(1, "slow", PARAMS)["batchId"]
        assert client.batch_status(bid) == "PROCESSING"
        assert client.batch_detail(bid)["status"] == "PROCESSING"
        assert client.find(common_name="example.com")["totalCount"] == 0
        out = tmp_path / "out"
        out.mkdir()
        with pytest.raises(SectigoError) as err:
            client.download(bid, out)
        assert err.value.status == 400 and "not ready" in str(err.value)
        assert list(out.iterdir()) == []
        now[0] += 599  # the twin: a second before the delay ends it is still not ready
        assert client.batch_status(bid) == "PROCESSING"
        now[0] += 1
        assert client.batch_status(bid) == "READY_FOR_DOWNLOAD"
        assert client.download(bid, out) == out / f"{bid}.zip"


def test_legacy_pkcs12_still_loads(sectigo_ca_dir: Path, tmp_path: Path) -> None:
    with SectigoEmulator(ca_dir=sectigo_ca_dir, state_path=tmp_path / "s.json",
                         username=USER, password=PASSWORD, key_size=2048,
                         legacy_pkcs12=True) as emu:
        client = _client(emu.base_url, tmp_path)
        bid = client.create_single_cert_batch(1, "legacy", PARAMS)["batchId"]
        with zipfile.ZipFile(io.BytesIO(client.download_bytes(bid))) as zf:
            key, leaf, _ = pkcs12.load_key_and_certificates(zf.read("example.com.p12"),
                                                            b"Pw-12345")
        assert key is not None and leaf is not None


def test_upload_several_csrs_in_one_file(emu: SectigoEmulator, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pems = []
    for cn in ("a.example.com", "b.example.com"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
               .sign(key, hashes.SHA256()))
        pems.append(csr.public_bytes(serialization.Encoding.PEM))
    client = _client(emu.base_url, tmp_path)
    batch = client.upload_csr(42, "two.csr", b"".join(pems))
    assert batch["size"] == 2
    assert client.balance(1) == 8
    with zipfile.ZipFile(io.BytesIO(client.download_bytes(batch["batchId"]))) as zf:
        assert sorted(zf.namelist()) == ["a.example.com.pem", "b.example.com.pem"]
        chain = x509.load_pem_x509_certificates(zf.read("a.example.com.pem"))
    assert len(chain) == 3 and chain[1] == emu.ca.issuing and chain[2] == emu.ca.root


def test_concurrent_creates_are_consistent(emu: SectigoEmulator, tmp_path: Path) -> None:
    client = _client(emu.base_url, tmp_path, cache_path=False)
    client.ensure_authenticated()
    ids: list[int] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            ids.append(client.create_single_cert_batch(
                1, f"b{i}", {**PARAMS, "commonName": f"n{i}.example.com"})["batchId"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 3
    assert client.balance(1) == 7


# --------------------------------------------------------------------------- tokens


def test_expired_access_token_is_refreshed(emu: SectigoEmulator, tmp_path: Path) -> None:
    offset = [0.0]
    emu.clock = lambda: time.time() + offset[0]  # one fake clock for both sides
    client = _client(emu.base_url, tmp_path, clock=emu.clock)
    client.authorities()
    assert emu.counters["auth/pwd"] == 1
    offset[0] = 1000.0  # the 900 s access token looks expired, the refresh token not
    client.authorities()
    assert emu.counters["auth/refresh"] == 1
    assert emu.counters["auth/pwd"] == 1


def test_expired_refresh_token_logs_in_again(emu: SectigoEmulator, tmp_path: Path) -> None:
    offset = [0.0]
    emu.clock = lambda: time.time() + offset[0]
    client = _client(emu.base_url, tmp_path, clock=emu.clock)
    client.authorities()
    offset[0] = 8000.0  # past the 7200 s refresh token too
    client.authorities()
    assert emu.counters["auth/refresh"] == 0
    assert emu.counters["auth/pwd"] == 2


def test_rejected_refresh_falls_back_to_login(sectigo_ca_dir: Path, tmp_path: Path) -> None:
    # Both clocks are fixed, so a slow machine cannot expire the 1 s access token early.
    server_now = [time.time()]
    with SectigoEmulator(ca_dir=sectigo_ca_dir, state_path=tmp_path / "s.json",
                         username=USER, password=PASSWORD, key_size=2048,
                         access_ttl=1, refresh_ttl=60, clock=lambda: server_now[0]) as emu:
        client_now = [server_now[0]]
        client = _client(emu.base_url, tmp_path, clock=lambda: client_now[0])
        client.authorities()
        assert (emu.counters["auth/refresh"], emu.counters["auth/pwd"]) == (0, 1)
        # client thinks the refresh token is still good, server disagrees (its clock
        # is not ours): refresh answers 401, the client logs in again
        client_now[0] += 5.0
        server_now[0] += 100
        client.authorities()
        assert emu.counters["auth/refresh"] == 1
        assert emu.counters["auth/pwd"] == 2


def test_token_rejected_by_server_triggers_one_relogin(
    sectigo_ca_dir: Path, tmp_path: Path
) -> None:
    kw: dict[str, Any] = dict(ca_dir=sectigo_ca_dir, state_path=tmp_path / "s.json",
                              username=USER, password=PASSWORD, key_size=2048)
    with SectigoEmulator(**kw) as emu:
        _client(emu.base_url, tmp_path).authorities()
        port = emu.address[1]
    (tmp_path / "s.json").unlink()  # a fresh state: a new token key
    emu2 = SectigoEmulator(**kw)
    emu2.start("127.0.0.1", port)
    try:
        client = _client(emu2.base_url, tmp_path)
        assert client.credentials.valid()  # loaded from the cache, same endpoint
        assert client.authorities()[0]["id"] == 1  # 401, one login, retried
        assert emu2.counters["authorities"] == 2
        assert emu2.counters["auth/pwd"] == 1
    finally:
        emu2.stop()


def test_cache_file_is_private_and_never_holds_the_password(
    emu: SectigoEmulator, tmp_path: Path
) -> None:
    cache = tmp_path / "cache" / "trisa" / "credentials.json"
    client = _client(emu.base_url, tmp_path, cache_path=cache)
    client.ensure_authenticated()
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    assert oct(cache.parent.stat().st_mode & 0o777) == "0o700"
    text = cache.read_text()
    assert PASSWORD not in text
    doc = json.loads(text)
    assert set(doc) == {"endpoint", "username", "access_token", "refresh_token", "subject",
                        "issued_at", "expires_at", "not_before", "refresh_by"}
    assert doc["username"] == USER  # not a secret: the cache is keyed by it
    # a second client uses the cache without logging in
    other = SectigoClient(emu.base_url, cache_path=cache)
    other.authorities()
    assert emu.counters["auth/pwd"] == 1
    # tokens for another endpoint are ignored
    assert not SectigoClient("http://127.0.0.1:1", cache_path=cache).credentials.valid()


def test_no_credentials_at_all(tmp_path: Path) -> None:
    client = SectigoClient("http://127.0.0.1:1", cache_path=tmp_path / "none.json")
    with pytest.raises(SectigoError, match="no API access credentials"):
        client.authorities()
    with pytest.raises(SectigoError, match="requires both username and password"):
        SectigoClient("http://127.0.0.1:1", USER, None, cache_path=False)


def test_jwt_claims_require_timestamps() -> None:
    good = mint({"iat": 1, "exp": 2}, b"k")
    assert decode_claims(good)["exp"] == 2
    with pytest.raises(SectigoError, match="required timestamps"):
        decode_claims(mint({"exp": 2}, b"k"))
    with pytest.raises(SectigoError, match="not a JWT"):
        decode_claims("garbage")
    creds = Credentials()
    with pytest.raises(SectigoError):
        creds.update(mint({"iat": 1}, b"k"), good)


# --------------------------------------------------------------------------- bad input


def test_wrong_password(emu: SectigoEmulator, tmp_path: Path) -> None:
    client = SectigoClient(emu.base_url, USER, "wrong", cache_path=tmp_path / "c.json")
    with pytest.raises(SectigoError) as err:
        client.authorities()
    assert str(err.value) == "could not authenticate credentials (401)"
    assert err.value.status == 401
    assert "wrong" not in str(err.value)
    assert not (tmp_path / "c.json").exists()


def test_api_errors(emu: SectigoEmulator, tmp_path: Path) -> None:
    client = _client(emu.base_url, tmp_path)
    with pytest.raises(SectigoAPIError) as err:
        client.batch_detail(123)
    assert str(err.value) == "batch 123 not found (404)"
    assert err.value.api_status == 404 and err.value.timestamp and err.value.error_code
    with pytest.raises(SectigoError, match=r"batch 9 not found \(404\)"):
        client.batch_status(9)
    with pytest.raises(SectigoError, match="authority 5 not found"):
        client.create_single_cert_batch(5, "x", PARAMS)
    with pytest.raises(SectigoError, match=r"certificate ABCDEF in profile \d+ not found \(404\)"):
        client.revoke(42, "key compromise", "abcdef")
    with pytest.raises(SectigoError, match="profile 7 not found"):
        client.profile_detail(7)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({**PARAMS, "organizationName": "x"}, "unknown profile parameter"),
        ({k: v for k, v in PARAMS.items() if k != "dNSName"}, "missing required"),
        ({**PARAMS, "pkcs12Password": ""}, "must not be empty"),
        ({**PARAMS, "dNSName": "a.example.com\n\nb.example.com"}, "no empty lines"),
    ],
)
def test_strict_profile_params(
    emu: SectigoEmulator, tmp_path: Path, params: dict[str, str], message: str
) -> None:
    client = _client(emu.base_url, tmp_path)
    with pytest.raises(SectigoError, match=message) as err:
        client.create_single_cert_batch(1, "x", params)
    assert err.value.status == 400
    assert client.balance(1) == 10


def test_zero_balance_refused(emu: SectigoEmulator, tmp_path: Path) -> None:
    emu.set_balance(1, 0)
    client = _client(emu.base_url, tmp_path)
    with pytest.raises(SectigoError, match="no available balance") as err:
        client.create_single_cert_batch(1, "x", PARAMS)
    assert err.value.status == 400


def test_malformed_csr(emu: SectigoEmulator, tmp_path: Path) -> None:
    client = _client(emu.base_url, tmp_path)
    junk = b"-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgQ1NS\n-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(SectigoError, match="malformed") as err:
        client.upload_csr(42, "bad.csr", junk)
    assert err.value.status == 400
    with pytest.raises(SectigoError, match="no PEM certificate signing request"):
        client.upload_csr(42, "empty.csr", b"hello")
    assert client.balance(1) == 10


def test_bearer_required(emu: SectigoEmulator) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(emu.base_url + "/api/v1/authorities/allowed")  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=5)
    assert err.value.code == 401
    assert json.loads(err.value.read())["status"] == 401


@pytest.mark.parametrize(
    ("reason", "code"),
    [("cessation of operation", 5), ("CessationOfOperation", 5), (" key compromise ", 1),
     ("superseded", 4), (0, 0)],
)
def test_reason_names_reach_the_crl(
    emu: SectigoEmulator, tmp_path: Path, reason: str | int, code: int
) -> None:
    client = _client(emu.base_url, tmp_path)
    bid = client.create_single_cert_batch(1, "r", PARAMS)["batchId"]
    assert bid
    serial = client.find(common_name="example.com")["items"][0]["serialNumber"]
    client.revoke(42, reason, serial)
    [entry] = list(emu.ca.crl())
    assert format(entry.serial_number, "X") == serial
    from cryptography import x509

    try:
        flag = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        assert flag.name.replace("_", "") == {
            1: "keycompromise", 4: "superseded", 5: "cessationofoperation"}[code]
    except x509.ExtensionNotFound:
        assert code == 0


@pytest.mark.parametrize("reason", ["value 7 is not used", "bogus", 7])
def test_bad_reasons_never_reach_the_server(
    emu: SectigoEmulator, tmp_path: Path, reason: str | int
) -> None:
    client = _client(emu.base_url, tmp_path)
    with pytest.raises(ConfigurationError, match="valid reasons"):
        client.revoke(42, reason, "AB")
    assert emu.counters["certificates/revoke"] == 0


def test_html_and_garbage_servers(tiny: Any, tmp_path: Path) -> None:
    html = tiny(lambda m, p, b: (200, {"Content-Type": "text/html"}, b"<html>hi</html>"))
    with pytest.raises(SectigoError, match="server answered text/html, not JSON"):
        _client(html.url, tmp_path, cache_path=False).authorities()
    garbage = tiny(_login_then(
        lambda m, p, b: (200, {"Content-Type": "application/json; charset=utf-8"}, b"{nope")))
    with pytest.raises(SectigoError, match="server answered invalid JSON"):
        _client(garbage.url, tmp_path, cache_path=False).authorities()


def test_error_bodies_parsed_by_media_type(tiny: Any, tmp_path: Path) -> None:
    body = json.dumps({"status": 400, "message": "Batch name is invalid",
                       "errorCode": -2001, "timestamp": 1600000000000}).encode()
    srv = tiny(_login_then(
        lambda m, p, b: (400, {"Content-Type": "application/json; charset=utf-8"}, body)))
    with pytest.raises(SectigoAPIError) as err:
        _client(srv.url, tmp_path, cache_path=False).create_single_cert_batch(1, "x", PARAMS)
    assert str(err.value) == "create batch: Batch name is invalid (400)"
    assert (err.value.error_code, err.value.timestamp) == (-2001, 1600000000000)
    text = tiny(_login_then(lambda m, p, b: (409, {"Content-Type": "text/plain"}, b"busy\n")))
    with pytest.raises(SectigoError, match=r"busy \(409\)"):
        _client(text.url, tmp_path, cache_path=False).licenses()


def test_retries_only_idempotent_calls(tiny: Any, tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky(method: str, path: str, body: bytes) -> Reply:
        calls["n"] += 1
        if calls["n"] < 3:
            return 503, {"Content-Type": "text/html"}, b"<html>down</html>"
        return 200, {"Content-Type": "application/json"}, b'{"ordered": 1, "issued": 0}'

    srv = tiny(_login_then(flaky))
    client = _client(srv.url, tmp_path, cache_path=False)
    assert client.licenses() == {"ordered": 1, "issued": 0}
    assert calls["n"] == 3

    always = tiny(_login_then(lambda m, p, b: (503, {"Content-Type": "text/html"}, b"x")))
    client = _client(always.url, tmp_path, cache_path=False)
    with pytest.raises(SectigoError, match=r"\(503\)"):
        client.licenses()
    assert [r for r in always.requests if r[1] == "/api/v1/devices"] == [
        ("GET", "/api/v1/devices")] * 3
    with pytest.raises(SectigoError, match=r"\(503\)"):
        client.create_single_cert_batch(1, "x", PARAMS)
    with pytest.raises(SectigoError, match=r"\(503\)"):
        client.revoke(42, "superseded", "AB")
    puts = [r for r in always.requests if r[0] in ("PUT", "POST") and r[1] != "/auth/pwd"]
    assert len(puts) == 2  # never retried


def test_connection_refused_and_timeout(tiny: Any, tmp_path: Path) -> None:
    client = _client("http://127.0.0.1:1", tmp_path, cache_path=False)
    with pytest.raises(SectigoError, match=r"cannot reach endpoint http://127\.0\.0\.1:1: ") as err:
        client.authenticate()
    assert err.value.status == 0

    # the server answers only once the client has given up (no fixed sleep)
    gave_up = threading.Event()

    def slow(method: str, path: str, body: bytes) -> Reply:
        gave_up.wait(10)
        return 200, {"Content-Type": "application/json"}, b"1"

    srv = tiny(slow)
    client = _client(srv.url, tmp_path, cache_path=False, timeout=0.3)
    try:
        with pytest.raises(SectigoError, match=r"did not answer within 0.3 s"):
            client.authenticate()
    finally:
        gave_up.set()


def test_download_never_saves_an_error_body(tiny: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    html = tiny(_login_then(lambda m, p, b: (200, {"Content-Type": "text/html"}, b"<html>")))
    with pytest.raises(SectigoError, match="server answered text/html, not a zip file"):
        _client(html.url, tmp_path, cache_path=False).download(5, out)
    fake = tiny(_login_then(
        lambda m, p, b: (200, {"Content-Type": "application/octet-stream"}, b"not a zip")))
    with pytest.raises(SectigoError, match="not a zip archive"):
        _client(fake.url, tmp_path, cache_path=False).download(5, out)
    err = tiny(_login_then(lambda m, p, b: (500, {"Content-Type": "application/zip"}, b"PK")))
    with pytest.raises(SectigoError, match=r"\(500\)"):
        _client(err.url, tmp_path, cache_path=False, retries=1).download(5, out)
    assert list(out.iterdir()) == []


def test_download_filename_is_sanitised(tiny: Any, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.p12", b"x")
    evil = tiny(_login_then(lambda m, p, b: (
        200,
        {"Content-Type": "application/zip",
         "Content-Disposition": 'attachment; filename="../../escape.zip"'},
        buf.getvalue())))
    out = tmp_path / "a" / "b"
    out.mkdir(parents=True)
    path = _client(evil.url, tmp_path, cache_path=False).download(7, out)
    assert path == out / "escape.zip" and path.exists()
    assert not (tmp_path / "escape.zip").exists()


def test_helpers() -> None:
    assert normalize_status("  Ready for download\n") == "READY_FOR_DOWNLOAD"
    assert normalize_serial("0a:1b") == "0A1B" and normalize_serial(255) == "FF"
    with pytest.raises(SectigoError):
        normalize_serial("xyz")
    assert _safe_filename('attachment; filename="10.zip"', "d.zip") == "10.zip"
    assert _safe_filename("attachment; filename=..", "d.zip") == "d.zip"
    assert _safe_filename('attachment; filename=".hidden"', "d.zip") == "d.zip"
    assert _safe_filename('attachment; filename="a\\\\b.zip"', "d.zip") == "b.zip"
    assert _safe_filename(None, "d.zip") == "d.zip"


# --------------------------------------------------------------------------- user reports


def test_cache_is_keyed_by_username(emu: SectigoEmulator, tmp_path: Path) -> None:
    cache = tmp_path / "c" / "credentials.json"
    _client(emu.base_url, tmp_path, cache_path=cache).ensure_authenticated()
    assert json.loads(cache.read_text())["username"] == USER
    # accepted twin: the same user (or a client without a username) uses the cache
    assert _client(emu.base_url, tmp_path, cache_path=cache).credentials.valid()
    assert SectigoClient(emu.base_url, cache_path=cache).credentials.valid()
    # another user never sees those tokens, and its failed login leaves them alone
    mallory = SectigoClient(emu.base_url, "mallory", "whatever", cache_path=cache)
    assert not mallory.credentials.valid()
    with pytest.raises(SectigoError, match=r"could not authenticate credentials \(401\)"):
        mallory.licenses()
    assert emu.counters["devices"] == 0
    assert _client(emu.base_url, tmp_path, cache_path=cache).credentials.valid()
    # a cache that does not say whose tokens it holds (older format) is not trusted
    doc = json.loads(cache.read_text())
    del doc["username"]
    cache.write_text(json.dumps(doc))
    assert not _client(emu.base_url, tmp_path, cache_path=cache).credentials.valid()
    assert SectigoClient(emu.base_url, cache_path=cache).credentials.valid()


def test_rejected_login_forgets_the_users_cached_tokens(
    emu: SectigoEmulator, tmp_path: Path
) -> None:
    cache = tmp_path / "c.json"
    good = _client(emu.base_url, tmp_path, cache_path=cache)
    good.authenticate()
    # accepted twin: an explicit login with the right password succeeds again
    good.authenticate()
    assert emu.counters["auth/pwd"] == 2 and cache.exists()
    bad = SectigoClient(emu.base_url, USER, "wrongpw", cache_path=cache)
    assert bad.credentials.valid()  # same user: the cache was loaded
    with pytest.raises(SectigoError, match=r"could not authenticate credentials \(401\)"):
        bad.authenticate()
    assert not bad.credentials.valid()
    assert not cache.exists()
    with pytest.raises(SectigoError, match=r"\(401\)"):
        SectigoClient(emu.base_url, USER, "wrongpw", cache_path=cache).licenses()


def test_cache_write_failure_is_reported(
    emu: SectigoEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("x")
    cache = tmp_path / "file" / "sub" / "credentials.json"
    quiet = _client(emu.base_url, tmp_path, cache_path=cache, warn_cache_errors=False)
    with caplog.at_level(logging.WARNING, logger="trisa_peer.sectigo"):
        quiet.authenticate()
    assert quiet.credentials.valid()
    assert quiet.cache_error == f"cannot create cache directory {cache.parent}: Not a directory"
    assert caplog.records == []
    loud = _client(emu.base_url, tmp_path, cache_path=cache)
    with caplog.at_level(logging.WARNING, logger="trisa_peer.sectigo"):
        loud.authenticate()
    assert [r.getMessage() for r in caplog.records] == [
        f"Sectigo token cache not written: {loud.cache_error}"]
    # accepted twin: a writable cache leaves no error behind
    ok = _client(emu.base_url, tmp_path, cache_path=tmp_path / "ok.json")
    ok.authenticate()
    assert ok.cache_error is None


def test_download_can_create_the_directory(emu: SectigoEmulator, tmp_path: Path) -> None:
    client = _client(emu.base_url, tmp_path)
    bid = client.create_single_cert_batch(1, "d", PARAMS)["batchId"]
    with pytest.raises(SectigoError, match="does not exist"):
        client.download(bid, tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    path = client.download(bid, tmp_path / "new" / "dir", make_dirs=True)
    assert path == tmp_path / "new" / "dir" / f"{bid}.zip" and zipfile.is_zipfile(path)
    assert oct((tmp_path / "new" / "dir").stat().st_mode & 0o777) == "0o700"
    (tmp_path / "f").write_text("x")
    with pytest.raises(SectigoError, match="is not a directory"):
        client.download(bid, tmp_path / "f", make_dirs=True)
    with pytest.raises(SectigoError) as err:
        client.download(bid, tmp_path / "f" / "g", make_dirs=True)
    assert str(err.value) == f"cannot create directory {tmp_path / 'f' / 'g'}: Not a directory"
    (tmp_path / "busy" / f"{bid}.zip").mkdir(parents=True)
    with pytest.raises(SectigoError) as err:
        client.download(bid, tmp_path / "busy")
    assert str(err.value) == f"cannot write {tmp_path / 'busy' / f'{bid}.zip'}: Is a directory"


def test_requests_are_logged_at_info_without_secrets(
    emu: SectigoEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(emu.base_url, tmp_path, cache_path=False)
    with caplog.at_level(logging.INFO, logger="trisa_peer.sectigo.client"):
        client.create_single_cert_batch(1, "x", PARAMS)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "POST /auth/pwd -> 200" in lines
    assert "PUT /api/v1/batches/createSingleCertBatch -> 200" in lines
    for secret in (PASSWORD, PARAMS["pkcs12Password"], client.credentials.access_token,
                   client.credentials.refresh_token):
        assert secret not in caplog.text
