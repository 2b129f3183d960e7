"""The ``sectigo`` CLI end to end against the local Sectigo service on loopback,
following the documented walkthrough, then bad input. Commands run in process
(``main(argv)``); ``test_serve`` runs the ``sectigo`` console script as a subprocess."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from helpers import SECTIGO_PASSWORD as PASSWORD
from helpers import SECTIGO_USER as USER
from helpers import CliResult

import trisa_peer.cli.sectigo as sectigo_cli_module
from trisa_peer.sectigo.emulator import SectigoEmulator

Run = Callable[..., CliResult]
_NOT_INHERITED = ("SECTIGO_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def sectigo(sectigo_cli: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Run:
    """``sectigo(endpoint, *args, **env)``: one ``sectigo`` command in ``tmp_path``, with
    the credentials in the environment and the token cache under ``tmp_path``."""
    for key in list(os.environ):
        if key.upper().startswith(_NOT_INHERITED):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SECTIGO_USERNAME", USER)
    monkeypatch.setenv("SECTIGO_PASSWORD", PASSWORD)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.chdir(tmp_path)

    def run(endpoint: str, *args: str, **env: str) -> CliResult:
        with monkeypatch.context() as m:
            m.setenv("SECTIGO_ENDPOINT", endpoint)
            for key, value in env.items():
                m.setenv(key, value)
            return sectigo_cli(*args)

    return run


def ok(proc: CliResult | subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def fails(proc: CliResult | subprocess.CompletedProcess[str], pattern: str, code: int = 1
          ) -> str:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    if code == 1:
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("sectigo: error: ")
    assert re.search(pattern, proc.stderr), proc.stderr
    return proc.stderr


def _json_docs(text: str) -> list[Any]:
    docs, decoder, i = [], json.JSONDecoder(), 0
    text = text.strip()
    while i < len(text):
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)
        while i < len(text) and text[i].isspace():
            i += 1
    return docs


# --------------------------------------------------------------------------- walkthrough


@pytest.mark.slow
def test_documented_walkthrough(sectigo: Run, emu: SectigoEmulator, tmp_path: Path) -> None:
    url = emu.base_url
    run = functools.partial(sectigo, url)

    assert ok(run("auth")).strip() == "user authenticated and credentials cached"
    cache = tmp_path / "xdg-cache" / "trisa" / "sectigo" / "credentials.json"
    assert ok(run("auth", "--cache")).strip() == str(cache)
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    assert PASSWORD not in cache.read_text()
    assert ok(run("auth", "--debug")).startswith("credentials are valid until ")

    authorities, balances = _json_docs(ok(run("authorities", "--balances")))
    assert authorities[0]["id"] == 1 and authorities[0]["profileId"] == 42
    assert balances == {"1": 10}
    assert _json_docs(ok(run("licenses"))) == [{"ordered": 10, "issued": 0}]
    assert ok(run("organization")).startswith("{\n  \"organizationId\"")  # 2-space JSON
    assert _json_docs(ok(run("profiles")))[0][0]["profileId"] == 42
    assert _json_docs(ok(run("profiles", "-i", "42")))[0]["profileName"] == "TRISA Profile"
    params = _json_docs(ok(run("profile", "-i", "42", "--params")))[0]
    assert [p["name"] for p in params] == ["commonName", "dNSName", "pkcs12Password"]

    out = ok(run("create", "-a", "1", "-d", "example.com"))
    first, _, rest = out.partition("\n")
    match = re.fullmatch(r"pkcs12 password: (\S+)", first)
    assert match, out
    pkcs12_password = match.group(1)
    [batch] = _json_docs(rest)
    assert batch["batchName"] == "new certs for example.com"
    assert batch["status"] == "READY_FOR_DOWNLOAD"
    bid = str(batch["batchId"])
    assert pkcs12_password not in cache.read_text()

    assert _json_docs(ok(run("batches", "-i", bid)))[0]["batchId"] == int(bid)
    assert ok(run("batches", "-i", bid, "--status")).strip() == "READY_FOR_DOWNLOAD"
    assert _json_docs(ok(run("batches", "-i", bid, "--info"))) == [
        {"active": 0, "success": 1, "failed": 0}]

    certs = tmp_path / "certs"
    assert not certs.exists()  # the walkthrough does not create it: download does
    out = ok(run("download", "-i", bid, "-o", "certs"))
    assert oct(certs.stat().st_mode & 0o777) == "0o700"
    archive = certs / f"{bid}.zip"
    assert f"downloaded batch {bid} to certs/{bid}.zip" in out
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist() == ["example.com.p12"]
        zf.extractall(certs)
    # modern PKCS#12: OpenSSL 3 reads it without -legacy
    subprocess.run(
        ["openssl", "pkcs12", "-in", "certs/example.com.p12", "-out", "certs/example.com.pem",
         "-nodes", "-passin", f"pass:{pkcs12_password}"],
        cwd=tmp_path, check=True, capture_output=True, timeout=60,
    )
    pem = (certs / "example.com.pem").read_bytes()
    assert b"PRIVATE KEY" in pem
    chain = x509.load_pem_x509_certificates(pem)
    leaf = next(c for c in chain if c.subject.rfc4514_string() == "CN=example.com")
    assert emu.ca.issuing in chain and emu.ca.root in chain
    serial = format(leaf.serial_number, "X")

    [found] = _json_docs(ok(run("find", "-n", "example.com")))
    assert found["totalCount"] == 1
    assert found["items"][0]["serialNumber"] == serial
    assert found["items"][0]["status"] == "valid"

    assert ok(run("revoke", "-p", "42", "-r", "key compromise", "-s", serial.lower())) == \
        f"revoked certificate {serial} (reason: key compromise)\n"
    [found] = _json_docs(ok(run("find", "-s", serial)))
    assert found["items"][0]["status"] == "revoked"
    crl = emu.ca.crl()
    entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise
    assert _json_docs(ok(run("authorities", "-b")))[1] == {"1": 9}
    # the CRL is also served (an emulator extra)
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url + "/ca/crl.pem", timeout=10) as resp:
        served = x509.load_pem_x509_crl(resp.read())
    assert served.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None


@pytest.mark.slow
def test_csr_upload_path(sectigo: Run, emu: SectigoEmulator, tmp_path: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha384",
         "-subj", "/CN=example.com", "-addext", "subjectAltName=DNS:example.com",
         "-keyout", "example.com.key", "-out", "example.com.csr"],
        cwd=tmp_path, check=True, capture_output=True, timeout=60,
    )
    [batch] = _json_docs(ok(sectigo(emu.base_url, "upload", "-p", "42",
                                    "example.com.csr")))
    assert batch["size"] == 1 and batch["status"] == "READY_FOR_DOWNLOAD"
    (tmp_path / "certs").mkdir()
    ok(sectigo(emu.base_url, "download", "-i", str(batch["batchId"]), "-o", "certs"))
    with zipfile.ZipFile(tmp_path / "certs" / f"{batch['batchId']}.zip") as zf:
        assert zf.namelist() == ["example.com.pem"]
        chain = x509.load_pem_x509_certificates(zf.read("example.com.pem"))
    key = serialization.load_pem_private_key((tmp_path / "example.com.key").read_bytes(), None)
    assert chain[0].public_key() == key.public_key()
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.com"]
    assert chain[1:] == [emu.ca.issuing, emu.ca.root]


# --------------------------------------------------------------------------- bad input


def test_wrong_credentials(sectigo: Run, emu: SectigoEmulator, tmp_path: Path) -> None:
    proc = sectigo(emu.base_url, "authorities", SECTIGO_PASSWORD="nope")
    err = fails(proc, r"^sectigo: error: could not authenticate credentials \(401\)$")
    assert "nope" not in err and proc.stdout == ""
    assert not (tmp_path / "xdg-cache" / "trisa" / "sectigo" / "credentials.json").exists()
    # global flags go before the command and win over the environment
    ok(sectigo(emu.base_url, "-u", USER, "-p", PASSWORD, "licenses",
               SECTIGO_PASSWORD="nope"))


def test_unknown_batch(sectigo: Run, emu: SectigoEmulator, tmp_path: Path) -> None:
    fails(sectigo(emu.base_url, "batches", "-i", "999"),
          r"^sectigo: error: batch 999 not found \(404\)$")
    fails(sectigo(emu.base_url, "download", "-i", "999", "-o", "."),
          r"batch 999 not found \(404\)")


def test_download_before_ready_writes_nothing(
    sectigo: Run, make_emu: Callable[..., SectigoEmulator], tmp_path: Path
) -> None:
    emu = make_emu(issue_delay=60)
    out = sectigo(emu.base_url, "create", "-a", "1", "-d", "slow.example.com",
                  "-p", "Secret-123")
    [batch] = _json_docs(ok(out))
    assert "pkcs12 password" not in out.stdout  # given, so not printed
    assert batch["status"] == "PROCESSING"
    bid = str(batch["batchId"])
    assert ok(sectigo(emu.base_url, "batches", "-i", bid, "-s")).strip() == \
        "PROCESSING"
    outdir = tmp_path / "certs"
    outdir.mkdir()
    fails(sectigo(emu.base_url, "download", "-i", bid, "-o", "certs"),
          rf"batch {bid} is not ready for download \(status PROCESSING\).*\(400\)")
    assert list(outdir.iterdir()) == []


def test_revoke_unknown_serial(sectigo: Run, emu: SectigoEmulator, tmp_path: Path) -> None:
    fails(sectigo(emu.base_url, "revoke", "-p", "42", "-r", "superseded",
                  "-s", "0a1b2c"),
          r"^sectigo: error: certificate 0A1B2C in profile 42 not found \(404\); "
          r'authorities: 1 \(profile 42 "TRISA Profile", enabled\); profiles: 42$')


def test_zero_balance(sectigo: Run, emu: SectigoEmulator, tmp_path: Path) -> None:
    emu.set_balance(1, 0)
    proc = sectigo(emu.base_url, "create", "-a", "1", "-d", "example.com")
    fails(proc, r"authority 1 has no available balance.*\(400\)")
    assert "pkcs12 password" not in proc.stdout


def test_malformed_csr(sectigo: Run, emu: SectigoEmulator, tmp_path: Path) -> None:
    (tmp_path / "bad.csr").write_text(
        "-----BEGIN CERTIFICATE REQUEST-----\nMIIBAAAA\n-----END CERTIFICATE REQUEST-----\n")
    fails(sectigo(emu.base_url, "upload", "-p", "42", "bad.csr"),
          r"bad.csr: CSR #1 is malformed \(400\)")
    (tmp_path / "none.csr").write_text("just text\n")
    fails(sectigo(emu.base_url, "upload", "-p", "42", "none.csr"),
          r"no PEM certificate signing request")
    fails(sectigo(emu.base_url, "upload", "-p", "42", "missing.csr"),
          r"cannot read missing.csr")
    assert emu.balance(1) == 10


@pytest.mark.parametrize("reason", ["value 7 is not used", "bogus"])
def test_bad_revocation_reason(
    sectigo: Run, emu: SectigoEmulator, tmp_path: Path, reason: str
) -> None:
    fails(sectigo(emu.base_url, "revoke", "-p", "42", "-r", reason, "-s", "AB"),
          r"unknown revocation reason .*valid reasons: \"unspecified\", \"key compromise\"")
    assert emu.counters["certificates/revoke"] == 0
    assert emu.counters["auth/pwd"] == 0


def test_usage_errors(sectigo: Run, tmp_path: Path) -> None:
    url = "http://127.0.0.1:1"
    fails(sectigo(url, "find"), r"find needs --common-name or --serial", 2)
    fails(sectigo(url, "profiles", "--params"), r"--params needs a profile --id", 2)
    fails(sectigo(url, "create", "-d", "x"), r"required: -a/--authority", 2)
    fails(sectigo(url, "batches", "-i", "abc"), r"invalid int value", 2)
    fails(sectigo(url, "nosuch"), r"invalid choice", 2)


def test_unreachable_server(sectigo: Run, tmp_path: Path) -> None:
    fails(sectigo("http://127.0.0.1:1", "licenses"),
          r"cannot reach endpoint http://127\.0\.0\.1:1: .*set SECTIGO_ENDPOINT")


class _Fixed(http.server.BaseHTTPRequestHandler):
    content_type = "text/html"
    body = b"<html><body>Welcome to nginx</body></html>"

    def log_message(self, *args: Any) -> None:
        pass

    def _any(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = do_PUT = _any


class _Garbage(_Fixed):
    content_type = "application/json; charset=utf-8"
    body = b'{"accessToken": '


@pytest.mark.parametrize(("handler", "pattern"), [
    (_Fixed, r"^sectigo: error: login: server answered text/html, not JSON$"),
    (_Garbage, r"^sectigo: error: login: server answered invalid JSON$"),
])
def test_html_or_garbage_server(sectigo: Run, tmp_path: Path, handler: Any, pattern: str) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        fails(sectigo(url, "authorities"), pattern)
        (tmp_path / "certs").mkdir()
        fails(sectigo(url, "download", "-i", "5", "-o", "certs"), pattern)
        assert list((tmp_path / "certs").iterdir()) == []
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- tokens


def _shared_clock(emu: SectigoEmulator, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """One fake clock for the service and the CLI's client: ``offset[0] += s`` is ``s``
    seconds later for both (instead of sleeping past a token's lifetime). Time stands
    still otherwise, so a slow machine cannot expire a 1 s token early."""
    offset = [0.0]
    start = time.time()
    emu.clock = lambda: start + offset[0]
    client = functools.partial(sectigo_cli_module.SectigoClient, clock=emu.clock)
    monkeypatch.setattr(sectigo_cli_module, "SectigoClient", client)
    return offset


def test_expired_access_token_is_refreshed(
    sectigo: Run, make_emu: Callable[..., SectigoEmulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = make_emu(access_ttl=1, refresh_ttl=3600)
    offset = _shared_clock(emu, monkeypatch)
    ok(sectigo(emu.base_url, "auth"))
    offset[0] += 1.1  # the access token has expired, the refresh token not
    ok(sectigo(emu.base_url, "licenses"))
    assert emu.counters["auth/pwd"] == 1
    assert emu.counters["auth/refresh"] >= 1


def test_expired_refresh_token_logs_in_again(
    sectigo: Run, make_emu: Callable[..., SectigoEmulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = make_emu(access_ttl=1, refresh_ttl=1)
    offset = _shared_clock(emu, monkeypatch)
    ok(sectigo(emu.base_url, "auth"))
    offset[0] += 1.1  # both tokens have expired
    assert ok(sectigo(emu.base_url, "auth", "-d")).strip() == \
        "credentials are expired or invalid"
    ok(sectigo(emu.base_url, "licenses"))
    assert emu.counters["auth/refresh"] == 0
    assert emu.counters["auth/pwd"] == 2


# --------------------------------------------------------------------------- serve


def _console_script(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"console script {name} is not installed (make install)"
    return found


@pytest.mark.slow
def test_serve(sectigo: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The ``sectigo`` console script's subprocess smoke test: ``serve`` creates its CA,
    answers, saves its state and stops cleanly on SIGTERM."""
    args = ["serve", "--addr", "127.0.0.1:0", "--ca-dir", str(tmp_path / "ca"),
            "--state", str(tmp_path / "state.json"), "--key-size", "2048"]
    proc = subprocess.Popen([_console_script("sectigo"), *args], env=dict(os.environ),
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        url = match.group(1)
        [batch] = _json_docs(ok(sectigo(url, "create", "-a", "1", "-d", "a.example",
                                        "-p", "Secret-123")))
        assert batch["batchId"] == 24  # the guide's first batch (spec §15), was 10000
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert (tmp_path / "ca" / "root.pem").exists()
    assert json.loads((tmp_path / "state.json").read_text())["batches"]["24"]


def test_serve_needs_credentials(sectigo: Run, monkeypatch: pytest.MonkeyPatch,
                                 tmp_path: Path) -> None:
    monkeypatch.delenv("SECTIGO_PASSWORD")
    fails(sectigo("http://unused", "serve", "--addr", "127.0.0.1:0", "--ca-dir",
                  str(tmp_path / "ca"), "--state", str(tmp_path / "state.json")),
          r"sectigo serve needs credentials")
    assert not (tmp_path / "ca").exists()


# --------------------------------------------------------------------------- user reports


def _cache_file(tmp_path: Path) -> Path:
    return tmp_path / "xdg-cache" / "trisa" / "sectigo" / "credentials.json"


def test_auth_always_checks_the_password(
    sectigo: Run, emu: SectigoEmulator, tmp_path: Path
) -> None:
    url = emu.base_url
    assert ok(sectigo(url, "auth")).strip() == \
        "user authenticated and credentials cached"
    # accepted twin: the right password logs in again although tokens are cached
    assert ok(sectigo(url, "auth")).strip() == \
        "user authenticated and credentials cached"
    assert emu.counters["auth/pwd"] == 2
    # a wrong password fails, whatever is cached
    proc = sectigo(url, "auth", SECTIGO_PASSWORD="wrongpw")
    err = fails(proc, r"^sectigo: error: could not authenticate credentials \(401\)$")
    assert "wrongpw" not in err and proc.stdout == ""
    # ... and the tokens cached for that user are no longer usable
    assert not _cache_file(tmp_path).exists()
    fails(sectigo(url, "licenses", SECTIGO_PASSWORD="wrongpw"),
          r"could not authenticate credentials \(401\)")
    ok(sectigo(url, "licenses"))


def test_cached_tokens_are_never_used_for_another_user(
    sectigo: Run, emu: SectigoEmulator, tmp_path: Path
) -> None:
    url = emu.base_url
    ok(sectigo(url, "auth"))
    cache = _cache_file(tmp_path)
    doc = json.loads(cache.read_text())
    assert doc["username"] == USER and PASSWORD not in cache.read_text()
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    for args in (("licenses",), ("auth",)):
        proc = sectigo(url, "-u", "mallory", "-p", "whatever", *args)
        fails(proc, r"^sectigo: error: could not authenticate credentials \(401\)$")
        assert proc.stdout == ""
    assert ok(sectigo(url, "-u", "mallory", "-p", "whatever", "auth", "--debug")
              ).strip() == "credentials are expired or invalid"
    # accepted twin: the cache still serves its own user without a new login
    assert emu.counters["auth/pwd"] == 3
    assert _json_docs(ok(sectigo(url, "licenses"))) == [{"ordered": 10, "issued": 0}]
    assert emu.counters["auth/pwd"] == 3


def test_download_creates_the_output_directory(
    sectigo: Run, emu: SectigoEmulator, tmp_path: Path
) -> None:
    url = emu.base_url
    [batch] = _json_docs(ok(sectigo(url, "create", "-a", "1", "-d", "example.com",
                                    "-p", "Secret-123")))
    bid = str(batch["batchId"])
    # accepted: missing directories, parents included, are created (0700)
    out = ok(sectigo(url, "download", "-i", bid, "-o", "deep/er/certs"))
    assert f"downloaded batch {bid} to deep/er/certs/{bid}.zip" in out
    assert oct((tmp_path / "deep/er/certs").stat().st_mode & 0o777) == "0o700"
    assert zipfile.is_zipfile(tmp_path / "deep/er/certs" / f"{bid}.zip")
    # refused: a path that exists and is not a directory (before any download)
    (tmp_path / "plain").write_text("x")
    before = emu.counters["batch/download"]
    fails(sectigo(url, "download", "-i", bid, "-o", "plain"),
          r"^sectigo: error: output path plain exists and is not a directory$")
    assert emu.counters["batch/download"] == before
    # refused: a directory that cannot be created, in one clean sentence, before any download
    fails(sectigo(url, "download", "-i", bid, "-o", "plain/sub"),
          r"^sectigo: error: output path plain/sub: plain exists and is not a directory$")
    assert emu.counters["batch/download"] == before
    # a file that cannot be written: the path is named once
    (tmp_path / "busy" / f"{bid}.zip").mkdir(parents=True)
    err = fails(sectigo(url, "download", "-i", bid, "-o", "busy"),
                rf"^sectigo: error: cannot write busy/{bid}\.zip: Is a directory$")
    assert err.count(f"{bid}.zip") == 1


def test_auth_reports_a_cache_that_cannot_be_written(
    sectigo: Run, emu: SectigoEmulator, tmp_path: Path
) -> None:
    (tmp_path / "not-a-dir").write_text("x")
    proc = sectigo(emu.base_url, "auth", XDG_CACHE_HOME=str(tmp_path / "not-a-dir"))
    assert proc.returncode == 0, proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    assert re.fullmatch(
        r"user authenticated, but the credentials could not be cached: "
        r"cannot create cache directory \S+/not-a-dir/trisa/sectigo: Not a directory",
        lines[0]), lines
    assert "credentials cached" not in proc.stdout + proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    # accepted twin: a writable cache
    assert ok(sectigo(emu.base_url, "auth")).strip() == \
        "user authenticated and credentials cached"


def test_verbose_logs_requests(sectigo: Run, emu: SectigoEmulator, tmp_path: Path) -> None:
    proc = sectigo(emu.base_url, "-v", "licenses")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"INFO \S+: POST /auth/pwd -> 200$", proc.stderr, re.M), proc.stderr
    assert re.search(r"INFO \S+: GET /api/v1/devices -> 200$", proc.stderr, re.M)
    assert "DEBUG" not in proc.stderr
    cached = json.loads(_cache_file(tmp_path).read_text())
    for secret in (PASSWORD, cached["access_token"], cached["refresh_token"], "Bearer",
                   '"ordered"'):
        assert secret not in proc.stderr
    # accepted twin: quiet without -v
    assert ok(sectigo(emu.base_url, "licenses"))


@pytest.mark.parametrize(("args", "pattern"), [
    (("-d", "bad name!"), r"profile parameter commonName: 'bad name!' is not valid"),
    (("-d", "example.com", "-n", "bad name"),
     r"profile parameter dNSName: 'bad name' is not valid"),
])
def test_create_validates_profile_patterns(
    sectigo: Run, emu: SectigoEmulator, tmp_path: Path, args: tuple[str, ...], pattern: str
) -> None:
    proc = sectigo(emu.base_url, "create", "-a", "1", *args)
    fails(proc, rf"^sectigo: error: create batch: {pattern} \(must match the validation "
                r"pattern \^\[A-Za-z0-9\*\].*\) \(400\)$")
    assert "pkcs12 password" not in proc.stdout
    assert emu.balance(1) == 10
    # accepted twin: names the pattern allows
    ok(sectigo(emu.base_url, "create", "-a", "1", "-d", "good.example.com",
               "-n", "*.good.example.com", "-p", "Secret-123"))
    assert emu.balance(1) == 9


@pytest.mark.parametrize(("args", "command", "message"), [
    (("find",), "find", "find needs --common-name or --serial"),
    (("create", "-a", "1", "-d", " "), "create", "--domain must not be empty"),
    (("create", "-a", "1", "-d", ""), "create", "--domain must not be empty"),
    (("profiles", "--params"), "profiles", "--params needs a profile --id"),
    (("create", "-d", "x"), "create",  # argparse's own: the reference
     "the following arguments are required: -a/--authority"),
])
def test_usage_errors_show_the_command_usage(
    sectigo: Run, tmp_path: Path, args: tuple[str, ...], command: str, message: str
) -> None:
    err = fails(sectigo("http://127.0.0.1:1", *args), re.escape(message), 2)
    assert err.startswith(f"usage: sectigo {command} "), err
    assert f"sectigo {command}: error: {message}" in err
    assert "COMMAND" not in err  # not the top-level usage


def test_revoke_confirms(sectigo: Run, emu: SectigoEmulator, tmp_path: Path) -> None:
    url = emu.base_url
    ok(sectigo(url, "create", "-a", "1", "-d", "r.example", "-p", "Secret-123"))
    [found] = _json_docs(ok(sectigo(url, "find", "-n", "r.example")))
    serial = found["items"][0]["serialNumber"]
    assert ok(sectigo(url, "revoke", "-p", "42", "-s", serial)) == \
        f"revoked certificate {serial} (reason: unspecified)\n"
    # a second revocation fails: nothing is confirmed
    proc = sectigo(url, "revoke", "-p", "42", "-r", "superseded", "-s", serial)
    fails(proc, r"already revoked \(400\)")
    assert proc.stdout == ""


# --------------------------------------------------------------------------- -a, ids


_EXISTS = r'authorities: 1 \(profile 42 "TRISA Profile", enabled\); profiles: 42$'


def test_create_takes_a_profile_id(sectigo: Run, emu: SectigoEmulator, tmp_path: Path) -> None:
    """The TRISA guide prints ``create -a 42`` (profile 42) and says -a "should be a
    profile id": 42 is no authority, so it names the one enabled authority using it."""
    proc = sectigo(emu.base_url, "create", "-a", "42", "-d", "example.com", "-p", "pw")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "profile 42 -> authority 1\n"
    [batch] = _json_docs(proc.stdout)
    assert (batch["batchId"], batch["orderNumber"]) == (24, 1024)
    assert emu.balance(1) == 9
    # an authority id is tried first, silently; the next batch counts up
    [batch] = _json_docs(ok(sectigo(emu.base_url, "create", "-a", "1", "-d", "example.com",
                                    "-p", "pw")))
    assert (batch["batchId"], batch["orderNumber"]) == (25, 1025)


def test_create_neither_authority_nor_profile(sectigo: Run, emu: SectigoEmulator,
                                              tmp_path: Path) -> None:
    fails(sectigo(emu.base_url, "create", "-a", "99", "-d", "example.com", "-p", "pw"),
          r"^sectigo: error: -a 99 is neither an authority id nor the profile of an "
          r"enabled authority; " + _EXISTS)
    assert emu.balance(1) == 10


def test_create_profile_of_a_disabled_or_several_authorities(
    sectigo: Run, emu: SectigoEmulator, tmp_path: Path
) -> None:
    # the service's own state, edited as an operator would (no client-side stand-in)
    with emu._mutate() as state:
        state["authorities"][0]["enabled"] = False
    fails(sectigo(emu.base_url, "create", "-a", "42", "-d", "example.com", "-p", "pw"),
          r"-a 42 is neither .*authorities: 1 \(profile 42 \"TRISA Profile\", disabled\)")
    with emu._mutate() as state:
        state["authorities"][0]["enabled"] = True
        state["authorities"].append({**state["authorities"][0], "id": 2})
    fails(sectigo(emu.base_url, "create", "-a", "42", "-d", "example.com", "-p", "pw"),
          r"profile 42 is used by several enabled authorities \(1, 2\); give the "
          r"authority id; authorities: 1 .*, 2 \(profile 42 .*\); profiles: 42$")


@pytest.mark.parametrize("args", [
    ("profiles", "-i", "99"),
    ("profile", "-i", "99", "--params"),
    ("upload", "-p", "99", "example.com.csr"),
    ("revoke", "-p", "99", "-r", "cessation of operation", "-s", "12345"),
])
def test_wrong_profile_says_what_exists(sectigo: Run, emu: SectigoEmulator, tmp_path: Path,
                                        args: tuple[str, ...]) -> None:
    (tmp_path / "example.com.csr").write_text(
        "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n")
    fails(sectigo(emu.base_url, *args), r"^sectigo: error: .*99.* \(404\); " + _EXISTS)


def test_auth_unreachable_names_the_endpoint(sectigo: Run, emu: SectigoEmulator,
                                             tmp_path: Path) -> None:
    fails(sectigo("http://127.0.0.1:1", "auth"),
          r"^sectigo: error: login: cannot reach endpoint http://127\.0\.0\.1:1: .*"
          r"set SECTIGO_ENDPOINT=http://127\.0\.0\.1:8831 or pass -e URL\)$")
    # its twin: the same command against the running service
    assert ok(sectigo(emu.base_url, "auth")) == "user authenticated and credentials cached\n"
