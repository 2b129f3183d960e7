"""The TRISA guide's ``sectigo`` walkthrough (spec/sectigo-api.md §15), run verbatim.

Each command is the guide's own text, run by a shell in one temporary folder against a
real ``sectigo serve`` on 127.0.0.1 (a subprocess started here, issuance delay 0).
The only substitutions are the page's placeholders (``<common_name>`` -> example.com,
serial ``12345`` -> the serial ``find`` printed) and ``trisa.conf``, which is the
shipped ``docs/trisa.conf`` (the page's copy lost its section headers).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import SECTIGO_PASSWORD as PASSWORD
from helpers import SECTIGO_USER as USER

REPO = Path(__file__).resolve().parent.parent
TRISA_CONF = REPO / "docs" / "trisa.conf"
_NOT_INHERITED = ("SECTIGO_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")

#: the guide's commands, in its order, exactly as printed (§15 items 1-11)
GUIDE = [
    "sectigo auth",
    "sectigo auth --cache",
    "sectigo auth --debug",
    "sectigo authorities",
    "sectigo licenses",
    "sectigo profiles -i 42",
    "sectigo profile -i 42 --params",
    'sectigo create -a 42 -d example.com -p secrtpasswrd -b "example.com certs"',
    "sectigo batches -i 24",
    "sectigo batches -i 24 --status",
    "sectigo download -i 24 -o certs/",
    "unzip certs/24.zip",
    "openssl pkcs12 -in example.com.p12 -out certs/example.com.pem -nodes",
    "openssl req -new -newkey rsa:4096 -nodes -sha384 -config trisa.conf"
    " -keyout example.com.key -out example.com.csr",
    "sectigo upload -p 42 <common_name>.csr",
    "sectigo find -n example.com",
    'sectigo revoke -p 42 -r "cessation of operation" -s 12345',
]

#: the trisa.conf lines as the page prints them (§15 item 8): no section headers
PAGE_CONF = [
    "distinguished_name = dn_req", "req_extensions = v3ext_req", "prompt = no",
    "default_bits = 4096", "CN = example.com", "O = [Organization]", "L = [City]",
    "ST = [State or Province (fully spelled out, no abbreviations)]",
    "C = [2 digit country code]", "basicConstraints = CA:FALSE",
    "keyUsage = digitalSignature, keyEncipherment, nonRepudiation",
    "extendedKeyUsage = clientAuth, serverAuth", "subjectAltName = @alt_names",
    "DNS.1 = example.com",
]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_NOT_INHERITED)}
    bindir = str(Path(sys.executable).parent)  # the venv's console scripts
    env.update(PATH=bindir + os.pathsep + env.get("PATH", ""), HOME=str(tmp_path / "home"),
               XDG_CACHE_HOME=str(tmp_path / "cache"), SECTIGO_USERNAME=USER,
               SECTIGO_PASSWORD=PASSWORD)
    return env


def _json(text: str) -> Any:
    return json.loads(text)


def _check_conf(text: str) -> None:
    lines = text.splitlines()
    assert not [line for line in lines if line != line.rstrip()], "trailing spaces"
    for header in ("[req]", "[dn_req]", "[v3ext_req]", "[alt_names]"):
        assert header in lines, header
    entries = [line for line in lines if line and not line.startswith(("#", "["))]
    # the page's entries, in the page's order; only its bracketed placeholders differ
    assert [e.split(" = ")[0] for e in entries] == [e.split(" = ")[0] for e in PAGE_CONF]
    for mine, page in zip(entries, PAGE_CONF, strict=True):
        assert mine == page or "[" in page, (mine, page)


@pytest.mark.slow
def test_guide_runs_verbatim(tmp_path: Path) -> None:
    env = _env(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    server = subprocess.Popen(
        ["sectigo", "serve", "--addr", "127.0.0.1:0", "--ca-dir", str(tmp_path / "ca"),
         "--state", str(tmp_path / "state.json"), "--issue-delay", "0",
         "--key-size", "2048"],
        env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        env["SECTIGO_ENDPOINT"] = match.group(1)
        _walk(env, work)
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0


def _walk(env: dict[str, str], work: Path) -> None:
    serial = ""
    out: dict[str, subprocess.CompletedProcess[str]] = {}
    for command in GUIDE:
        cmd = command.replace("<common_name>", "example.com")
        if cmd.startswith("sectigo revoke"):
            assert serial
            cmd = cmd.replace("-s 12345", f"-s {serial}")
        if cmd.startswith("unzip") and shutil.which("unzip") is None:
            cmd = f"{sys.executable} -m zipfile -e certs/24.zip ."
        if "-config trisa.conf" in cmd:
            # the guide has the reader write trisa.conf; we ship the working one
            _check_conf(TRISA_CONF.read_text())
            shutil.copyfile(TRISA_CONF, work / "trisa.conf")
        # openssl pkcs12 asks for the import password: with no terminal (a new
        # session) it reads it from stdin, as a reader would type it
        stdin = "secrtpasswrd\n" if cmd.startswith("openssl pkcs12") else ""
        proc = subprocess.run(["/bin/sh", "-c", cmd], cwd=work, env=env, input=stdin,
                              capture_output=True, text=True, timeout=300,
                              start_new_session=True)
        assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, (cmd, proc.stderr)
        out[command] = proc
        if cmd == "sectigo find -n example.com":
            found = _json(proc.stdout)
            # two certificates: the created batch's and the uploaded CSR's
            assert found["totalCount"] == 2
            assert {i["status"] for i in found["items"]} == {"valid"}
            serial = found["items"][-1]["serialNumber"]

    def stdout(i: int) -> str:
        return out[GUIDE[i]].stdout

    cache = Path(env["XDG_CACHE_HOME"]) / "trisa" / "sectigo" / "credentials.json"
    assert stdout(0) == "user authenticated and credentials cached\n"
    assert stdout(1) == f"{cache}\n"
    assert stdout(2).startswith("credentials are valid until ")
    [authority] = _json(stdout(3))
    sample = {"id": 1, "ecosystemId": 100, "ecosystemName": "TRISA", "balance": 10,
              "enabled": True, "profileId": 42, "profileName": "TRISA Profile"}
    assert {k: authority[k] for k in sample} == sample
    assert set(_json(stdout(4))) == {"ordered", "issued"}
    assert _json(stdout(5))["profileName"] == "TRISA Profile"
    assert [p["name"] for p in _json(stdout(6))] == ["commonName", "dNSName",
                                                      "pkcs12Password"]
    create = out[GUIDE[7]]
    assert create.stderr == "profile 42 -> authority 1\n"
    batch = _json(stdout(7))  # -p given: no generated password line
    sample = {"batchId": 24, "orderNumber": 1024, "profile": "TRISA Profile", "size": 1,
              "batchName": "example.com certs", "rejectReason": "",
              "generatorParametersValues": None}
    assert {k: batch[k] for k in sample} == sample
    assert _json(stdout(8))["batchId"] == 24
    assert stdout(9) == "READY_FOR_DOWNLOAD\n"
    assert (work / "certs" / "24.zip").is_file()
    assert (work / "example.com.p12").is_file()  # the page's unzip: current folder
    pem = (work / "certs" / "example.com.pem").read_bytes()
    assert b"PRIVATE KEY" in pem
    [leaf, *_] = x509.load_pem_x509_certificates(pem)
    assert leaf.subject.rfc4514_string() == "CN=example.com"
    csr = x509.load_pem_x509_csr((work / "example.com.csr").read_bytes())
    key = csr.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 4096  # the page's rsa:4096
    upload = _json(stdout(14))
    assert (upload["batchId"], upload["orderNumber"], upload["size"]) == (25, 1025, 1)
    assert stdout(16) == f"revoked certificate {serial} (reason: cessation of operation)\n"
    # not a guide command: the revocation took effect on the service
    check = subprocess.run(["sectigo", "find", "-s", serial], cwd=work, env=env,
                           capture_output=True, text=True, timeout=60)
    assert _json(check.stdout)["items"][0]["status"] == "revoked"


def test_page_conf_is_refused_shipped_conf_is_not(tmp_path: Path) -> None:
    """The twin of the CSR step: the page's trisa.conf (no section headers) is refused
    by openssl, the shipped one is read (a 2048-bit key here: only the config counts)."""
    (tmp_path / "page.conf").write_text("\n".join(PAGE_CONF) + "\n")
    shutil.copyfile(TRISA_CONF, tmp_path / "trisa.conf")
    for conf, refused in (("page.conf", True), ("trisa.conf", False)):
        proc = subprocess.run(
            ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha384",
             "-config", conf, "-keyout", "k.key", "-out", "r.csr"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        assert (proc.returncode != 0) == refused, (conf, proc.stderr)
    _check_conf(TRISA_CONF.read_text())
