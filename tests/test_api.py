"""Issue 15 section 2: the back-office HTTP API (``serve --api-listen``), over real
sockets: uvicorn on 127.0.0.1, httpx as the back office, real TLS (trustme CAs) for the
mutual-TLS cases, the simulated network's real nodes and directory behind it.

Every check has its twin: the accepted request and a near-identical refused one."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from google.protobuf import json_format
from helpers import ROOT, CliResult
from test_exchange import _extra_node, _restore, payload_for

from trisa_peer.api.app import MAX_BODY, build_app
from trisa_peer.api.auth import TokenFile, read_tokens
from trisa_peer.api.server import ApiServer, TlsFiles, is_loopback
from trisa_peer.directory.client import DirectoryClient
from trisa_peer.errors import ConfigurationError, UsageError
from trisa_peer.network.handler import Pending, Reject
from trisa_peer.network.node import TrisaNode
from trisa_peer.network.store import TransferStore
from trisa_peer.testing.network import free_port

TOKEN = "t0ken-for-the-back-office-0001"
OTHER = "t0ken-for-the-back-office-0002"


def _token_file(path: Path, *tokens: str, mode: int = 0o600) -> Path:
    path.write_text("# API tokens\n" + "".join(f"{t}\n" for t in tokens))
    path.chmod(mode)
    return path


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Api:
    """One API server over ``node`` on 127.0.0.1 (an ephemeral port)."""

    def __init__(self, node: Any, tokens: Path, *, tls: TlsFiles | None = None,
                 recheck: float = 0.0, client_ctx: ssl.SSLContext | None = None) -> None:
        self.server = ApiServer(build_app(node, TokenFile(tokens, recheck_interval=recheck)),
                                "127.0.0.1:0", tls=tls)
        port = self.server.start()
        self.url = f"{self.server.scheme}://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, timeout=30,
                                   verify=client_ctx if client_ctx is not None else True)

    def get(self, path: str, token: str | None = TOKEN, **kw: Any) -> httpx.Response:
        return self.client.get(path, headers=_auth(token) if token else {}, **kw)

    def post(self, path: str, body: Any, token: str | None = TOKEN,
             **kw: Any) -> httpx.Response:
        return self.client.post(path, json=body, headers=_auth(token) if token else {}, **kw)

    def close(self) -> None:
        self.client.close()
        self.server.stop()


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    return _token_file(tmp_path / "api-tokens", TOKEN)


@pytest.fixture
def alice_api(net: Any, tokens: Path) -> Iterator[Api]:
    api = Api(net.alice.node, tokens)
    yield api
    api.close()


def _payload_json() -> dict[str, Any]:
    return json_format.MessageToDict(payload_for("alice.vasp.test", "bob.vasp.test"),
                                     preserving_proto_field_name=True)


# ------------------------------------------------------------------ authentication


def test_a_known_bearer_token_is_accepted_and_a_missing_or_wrong_one_is_not(
        alice_api: Api) -> None:
    assert alice_api.get("/status").status_code == 200
    for token in (None, OTHER, TOKEN[:-1], TOKEN + "x"):
        refused = alice_api.get("/status", token=token)
        assert refused.status_code == 401, token
        assert refused.headers["www-authenticate"] == "Bearer"
        assert set(refused.json()) == {"error"}
    basic = alice_api.client.get("/status", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401


def test_a_token_in_the_query_string_is_refused_even_beside_a_good_header(
        alice_api: Api) -> None:
    assert alice_api.get("/status", params={"peer": "x"}).status_code == 200
    for name in ("token", "access_token", "Access_Token"):
        refused = alice_api.get("/status", params={name: TOKEN})
        assert refused.status_code == 401
        assert "query string" in refused.json()["error"]
        assert TOKEN not in refused.text


def test_every_route_needs_the_token(alice_api: Api) -> None:
    for method, path in (("GET", "/status"), ("GET", "/transfers"), ("POST", "/transfers"),
                         ("GET", "/transfers/x"), ("POST", "/transfers/x/resolve"),
                         ("GET", "/vasps"), ("GET", "/openapi.json"), ("GET", "/nowhere")):
        assert alice_api.client.request(method, path).status_code == 401, path
    assert alice_api.get("/nowhere").status_code == 404  # the twin: past auth


def test_tokens_rotate_when_the_file_changes(net: Any, tmp_path: Path) -> None:
    path = _token_file(tmp_path / "tokens", TOKEN)
    api = Api(net.alice.node, path, recheck=0.0)
    try:
        assert api.get("/status", token=OTHER).status_code == 401
        _token_file(path, TOKEN, OTHER)  # the new one added: both work
        assert api.get("/status", token=OTHER).status_code == 200
        assert api.get("/status", token=TOKEN).status_code == 200
        _token_file(path, OTHER)  # the old one removed
        assert api.get("/status", token=TOKEN).status_code == 401
        assert api.get("/status", token=OTHER).status_code == 200
        path.chmod(0o644)  # a broken re-read keeps the tokens it had
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        assert api.get("/status", token=OTHER).status_code == 200
    finally:
        api.close()


def test_token_file_must_be_private_and_hold_real_tokens(tmp_path: Path) -> None:
    assert read_tokens(_token_file(tmp_path / "ok", TOKEN, OTHER)) == [TOKEN, OTHER]
    with pytest.raises(ConfigurationError, match="readable by others; chmod 600"):
        read_tokens(_token_file(tmp_path / "open", TOKEN, mode=0o640))
    with pytest.raises(ConfigurationError, match="shorter than 16") as short:
        read_tokens(_token_file(tmp_path / "short", "abc"))
    assert "abc" not in str(short.value)  # never a token in a message
    with pytest.raises(ConfigurationError, match="holds no token"):
        read_tokens(_token_file(tmp_path / "empty"))
    with pytest.raises(ConfigurationError, match="printable ASCII"):
        read_tokens(_token_file(tmp_path / "space", "a token with spaces in it"))
    with pytest.raises(ConfigurationError, match="cannot read"):
        read_tokens(tmp_path / "missing")


# ------------------------------------------------------------------ status


def test_status_shows_identity_expiry_and_a_reachable_directory(alice_api: Api,
                                                                net: Any) -> None:
    body = alice_api.get("/status").json()
    leaf = net.alice.identity.leaf
    assert body["common_name"] == "alice.vasp.test"
    assert body["fingerprint"] == net.alice.identity.fingerprint
    assert body["serial"] == f"{leaf.serial_number:#x}"
    assert body["days_left"] > 0 and body["certificate_problem"] is None
    assert body["directory"] == {"reachable": True, "error": None}


def test_status_shows_an_unreachable_directory(net: Any, tokens: Path) -> None:
    dead = DirectoryClient(f"127.0.0.1:{free_port()}", insecure=True, timeout=1)
    node = TrisaNode(net.alice.node.material, dead, store=TransferStore(":memory:"),
                     handler=lambda _i: Reject(50, "no"))
    api = Api(node, tokens)
    try:
        body = api.get("/status").json()
        assert body["common_name"] == "alice.vasp.test"
        assert body["directory"]["reachable"] is False and body["directory"]["error"]
    finally:
        api.close()
        node.close()
        dead.close()


# ------------------------------------------------------------------ send, list, show


def test_an_unavailable_store_is_a_503_not_a_crash(net: Any, tokens: Path,
                                                   tmp_path: Path) -> None:
    node = TrisaNode(net.alice.node.material, net.directory_client(),
                     store=TransferStore(tmp_path / "store.db"),
                     handler=lambda _i: Reject(50, "no"))
    api = Api(node, tokens)
    try:
        assert api.get("/transfers").status_code == 200
        node.store.close()
        for answer in (api.get("/transfers"), api.get("/transfers/x"),
                       api.post("/transfers/x/resolve", {"decision": "accept"})):
            assert answer.status_code == 503
            assert answer.json() == {"error": "the transfer store is unavailable; retry later"}
    finally:
        api.close()
        node.close()


def test_send_a_transfer_then_list_and_show_it(alice_api: Api, net: Any) -> None:
    sent = [alice_api.post("/transfers", {"peer": "bob.vasp.test",
                                          "payload": _payload_json()}) for _ in range(2)]
    for reply in sent:
        assert reply.status_code == 200, reply.text
        assert reply.json()["state"] == "accepted"
        assert reply.json()["payload"]["received_at"]
    ids = [r.json()["envelope_id"] for r in sent]
    first = alice_api.get("/transfers", params={"limit": 1, "peer": "bob.vasp.test"}).json()
    assert [t["envelope_id"] for t in first["transfers"]] == [ids[1]]  # newest first
    assert first["next"] == first["transfers"][0]["key"]
    second = alice_api.get("/transfers", params={"limit": 1, "peer": "bob.vasp.test",
                                                 "before": first["next"]}).json()
    assert [t["envelope_id"] for t in second["transfers"]] == [ids[0]]
    shown = alice_api.get(f"/transfers/{ids[0]}").json()
    assert [(m["direction"], m["kind"]) for m in shown["messages"]] == [
        ("outgoing", "request"), ("incoming", "reply")]
    assert "envelope" not in shown["messages"][0]  # metadata only
    assert alice_api.get("/transfers/no-such-transfer").status_code == 404


def test_list_refuses_bad_paging_parameters(alice_api: Api) -> None:
    assert alice_api.get("/transfers", params={"limit": 500}).status_code == 200
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "x"}, {"before": "-1"},
                   {"order": "asc"}):
        refused = alice_api.get("/transfers", params=params)
        assert refused.status_code == 400, params
        assert set(refused.json()) == {"error"}


def test_send_refuses_malformed_requests(alice_api: Api) -> None:
    good = {"peer": "bob.vasp.test", "payload": _payload_json()}
    cases: list[tuple[Any, int, str]] = [
        ({**good, "extra": 1}, 400, "unknown field 'extra'"),
        ({"payload": good["payload"]}, 400, "missing field 'peer'"),
        ({**good, "peer": ""}, 400, "peer:"),
        ({**good, "payload": "text"}, 400, "payload:"),
        ({**good, "payload": {"identity": {"@type": "no.such.Type"}}}, 400, "not a protojson"),
        ([good], 400, "JSON object"),
    ]
    for body, status, text in cases:
        refused = alice_api.post("/transfers", body)
        assert refused.status_code == status, body
        assert text in refused.json()["error"]
    notjson = alice_api.client.post("/transfers", content=b"{", headers={
        **_auth(), "content-type": "application/json"})
    assert notjson.status_code == 400 and "not JSON" in notjson.json()["error"]
    plain = alice_api.client.post("/transfers", content=json.dumps(good), headers={
        **_auth(), "content-type": "text/plain"})
    assert plain.status_code == 400
    big = alice_api.post("/transfers", {**good, "pad": "x" * MAX_BODY})
    assert big.status_code == 413


def test_send_to_an_unregistered_peer_is_a_bad_gateway(alice_api: Api) -> None:
    refused = alice_api.post("/transfers", {"peer": "nobody.vasp.test",
                                            "payload": _payload_json()})
    assert refused.status_code == 502
    assert "nobody.vasp.test" in refused.json()["error"]


# ------------------------------------------------------------------ resolve


@pytest.fixture
def pending_bob(net: Any, tmp_path: Path, tokens: Path) -> Iterator[tuple[TrisaNode, Api]]:
    node = _extra_node(net, tmp_path, "bob",
                       lambda _i: Pending(message="review", window=timedelta(seconds=60)))
    node.pending_interval = 0.1
    api = Api(node, tokens)
    try:
        yield node, api
    finally:
        api.close()
        _restore(net, node)


def _wait(predicate: Callable[[], bool], timeout: float = 15) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_resolve_accepts_a_pending_transfer_and_the_node_delivers_it(
        net: Any, pending_bob: tuple[TrisaNode, Api]) -> None:
    _node, api = pending_bob
    result = net.alice.send(net.bob.common_name, payload_for("alice.vasp.test",
                                                              "bob.vasp.test"))
    assert result.state == "pending"
    eid = result.envelope_id
    listed = api.get("/transfers").json()["transfers"]
    assert listed[0]["envelope_id"] == eid and listed[0]["state"] == "pending"
    ok = api.post(f"/transfers/{eid}/resolve", {"decision": "accept"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["decision"] == "accept" and ok.json()["peer"] == "alice.vasp.test"
    again = api.post(f"/transfers/{eid}/resolve", {"decision": "accept"})
    assert again.status_code == 409 and "already decided" in again.json()["error"]
    assert _wait(lambda: net.alice.node.store.initiated(eid).state == "accepted")
    shown = api.get(f"/transfers/{eid}").json()["messages"]
    assert shown[0]["decision"] == "accept"
    late = api.post(f"/transfers/{eid}/resolve", {"decision": "accept"})
    assert late.status_code == 409 and "no pending" in late.json()["error"]


def test_resolve_rejects_with_a_trisa_code_and_refuses_bad_decisions(
        net: Any, pending_bob: tuple[TrisaNode, Api]) -> None:
    _node, api = pending_bob
    eid = net.alice.send(net.bob.common_name,
                         payload_for("alice.vasp.test", "bob.vasp.test")).envelope_id
    for body, text in (
        ({"decision": "maybe"}, "accept or reject"),
        ({"decision": "reject"}, "code:"),
        ({"decision": "reject", "code": "NOT_A_CODE"}, "not a TRISA error code"),
        ({"decision": "reject", "code": 0}, "not a TRISA error code"),
        ({"decision": "reject", "code": True}, "code:"),
        ({"decision": "accept", "code": 50}, "belong to a rejection"),
        ({"decision": "accept", "why": "x"}, "unknown field"),
    ):
        refused = api.post(f"/transfers/{eid}/resolve", body)
        assert refused.status_code == 400, body
        assert text in refused.json()["error"], body
    assert api.post("/transfers/no-such-id/resolve",
                    {"decision": "accept"}).status_code == 404
    ok = api.post(f"/transfers/{eid}/resolve", {"decision": "reject",
                                                "code": "COMPLIANCE_CHECK_FAIL",
                                                "message": "sanctions hit"})
    assert ok.status_code == 200 and ok.json()["decision"].startswith("reject:")
    assert _wait(lambda: net.alice.node.store.initiated(eid).state == "rejected")


def test_resolve_refuses_an_outgoing_transfer(alice_api: Api) -> None:
    sent = alice_api.post("/transfers", {"peer": "bob.vasp.test",
                                         "payload": _payload_json()}).json()
    refused = alice_api.post(f"/transfers/{sent['envelope_id']}/resolve",
                             {"decision": "accept"})
    assert refused.status_code == 409  # known, but not a pending incoming transfer


# ------------------------------------------------------------------ directory look-up


def test_lookup_a_registered_vasp_and_not_an_unknown_one(alice_api: Api, net: Any) -> None:
    found = alice_api.get("/vasps", params={"common_name": "bob.vasp.test"})
    assert found.status_code == 200
    record = found.json()
    assert record["common_name"] == "bob.vasp.test" and record["id"]
    assert record["identity_fingerprint"] == net.bob.identity.fingerprint
    by_id = alice_api.get("/vasps", params={"vasp_id": record["id"]}).json()
    assert by_id["common_name"] == "bob.vasp.test"
    assert alice_api.get("/vasps", params={"common_name": "nobody.vasp.test"}
                         ).status_code == 404
    for params in ({}, {"common_name": "bob.vasp.test", "vasp_id": record["id"]},
                   {"name": "bob"}):
        assert alice_api.get("/vasps", params=params).status_code == 400, params


# ------------------------------------------------------------------ listener and TLS


def test_off_loopback_needs_mutual_tls(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    assert not is_loopback("localhost.example")
    with pytest.raises(UsageError, match="off loopback the API needs mutual TLS"):
        ApiServer(object(), "0.0.0.0:0")
    with pytest.raises(UsageError, match="not HOST:PORT"):
        ApiServer(object(), "nowhere")


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("api-tls")
    server_ca, client_ca, stranger_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = server_ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(tmp / "server.pem")
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(tmp / "server.pem", append=True)
    server.private_key_pem.write_to_path(tmp / "server.key")
    client_ca.cert_pem.write_to_path(tmp / "clients.pem")
    out: dict[str, Any] = {"tls": TlsFiles(str(tmp / "server.pem"), str(tmp / "server.key"),
                                           str(tmp / "clients.pem"))}
    def client_context() -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        server_ca.configure_trust(ctx)
        return ctx

    for name, ca in (("good", client_ca), ("stranger", stranger_ca)):
        ctx = client_context()
        ca.issue_cert("back-office").configure_cert(ctx)
        out[name] = ctx
    out["nocert"] = client_context()
    return out


def test_mutual_tls_accepts_the_client_ca_and_refuses_other_certificates(
        net: Any, tokens: Path, tls_material: dict[str, Any]) -> None:
    api = Api(net.alice.node, tokens, tls=tls_material["tls"],
              client_ctx=tls_material["good"])
    try:
        assert api.url.startswith("https://")
        assert api.get("/status").status_code == 200
        assert api.get("/status", token=OTHER).status_code == 401  # mTLS is not enough
        for name in ("stranger", "nocert"):
            with httpx.Client(base_url=api.url, verify=tls_material[name]) as other, \
                    pytest.raises(httpx.TransportError):
                other.get("/status", headers=_auth())
    finally:
        api.close()


def test_unloadable_tls_files_refuse_to_start(tmp_path: Path,
                                              tls_material: dict[str, Any]) -> None:
    good: TlsFiles = tls_material["tls"]
    with pytest.raises(ConfigurationError, match="--api-client-ca"):
        ApiServer(object(), "127.0.0.1:0", tls=TlsFiles(good.cert, good.key,
                                                        str(tmp_path / "none.pem")))
    with pytest.raises(ConfigurationError, match="--api-tls-cert"):
        ApiServer(object(), "127.0.0.1:0", tls=TlsFiles(good.key, good.key, good.client_ca))


def test_a_port_in_use_refuses_to_start(net: Any, tokens: Path) -> None:
    first = Api(net.alice.node, tokens)
    try:
        with pytest.raises(ConfigurationError, match="cannot listen"):
            ApiServer(build_app(net.alice.node, TokenFile(tokens)),
                      f"127.0.0.1:{first.server.port}").start()
    finally:
        first.close()


# ------------------------------------------------------------------ the serve command


def test_serve_refuses_bad_api_settings_in_one_line(
        trisa_peer_cli: Callable[..., CliResult], tmp_path: Path, tokens: Path) -> None:
    base = ["serve", "--listen", "127.0.0.1:0", "--cert", "c.pem", "--trust", "t.pem",
            "--directory", "127.0.0.1:1", "--directory-insecure"]
    cases = [
        (["--api-listen", "127.0.0.1:0"], 2, "needs --api-token-file"),
        (["--api-listen", "0.0.0.0:0", "--api-token-file", str(tokens)], 2,
         "off loopback the API needs mutual TLS"),
        (["--api-listen", "127.0.0.1:0", "--api-token-file", str(tokens), "--workers", "2",
          "--db", str(tmp_path / "x.db")], 2, "needs --workers 1"),
        (["--api-token-file", str(tokens)], 2, "needs --api-listen"),
        (["--api-listen", "127.0.0.1:0", "--api-token-file", str(tokens),
          "--api-tls-cert", "a.pem"], 2, "go together"),
        (["--api-listen", "127.0.0.1:0", "--api-token-file",
          str(_token_file(tmp_path / "open", TOKEN, mode=0o644))], 1, "chmod 600"),
    ]
    for extra, code, text in cases:
        out = trisa_peer_cli(*base, *extra)
        assert out.returncode == code, (extra, out.stderr)
        lines = out.stderr.strip().splitlines()  # usage errors: argparse's usage line first
        assert len(lines) == (2 if code == 2 else 1) and text in lines[-1], out.stderr
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "x.db").exists()


@pytest.mark.slow
def test_serve_runs_the_api_and_stops_it_with_the_node(tokens: Path) -> None:
    pki = ROOT / "certs" / "fixtures"
    argv = [sys.executable, "-m", "trisa_peer", "serve", "--listen", "127.0.0.1:0",
            "--cert", str(pki / "bob.pem"), "--key", str(pki / "bob.key"),
            "--trust", str(pki / "trust.pem"), "--directory", f"127.0.0.1:{free_port()}",
            "--directory-insecure", "--api-listen", "127.0.0.1:0",
            "--api-token-file", str(tokens)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("trisa-peer: API on http://127.0.0.1:"), line
        url = line.split(" on ", 1)[1].strip()
        assert "serving on port" in proc.stdout.readline()
        status = httpx.get(f"{url}/status", headers=_auth(), timeout=30)
        assert status.status_code == 200 and status.json()["common_name"] == "bob.vasp.test"
        assert httpx.get(f"{url}/status", timeout=30).status_code == 401
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert TOKEN not in err
    with pytest.raises(httpx.TransportError):  # stopped with the node
        httpx.get(f"{url}/status", headers=_auth(), timeout=5)


def _fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@pytest.mark.slow
def test_without_the_api_extra_api_listen_names_the_install_command(
        tmp_path: Path, tokens: Path) -> None:
    argv = ["serve", "--listen", "127.0.0.1:0", "--cert", "c.pem", "--trust", "t.pem",
            "--directory", "127.0.0.1:1", "--directory-insecure", "--api-listen",
            "127.0.0.1:0", "--api-token-file", str(tokens)]
    template = ("import sys\n{block}from trisa_peer.cli.main import main\n"
                f"sys.exit(main({argv!r}))\n")
    blocked = _fresh_python(template.format(block="sys.modules['starlette'] = None\n"))
    assert blocked.returncode == 1
    assert blocked.stderr.strip().endswith("--api-listen needs the api extra: "
                                           "pip install 'trisa-peer[api]'")
    assert blocked.stderr.count("\n") == 1
    # the twin, with the extra: past that check (it fails later, on the missing files)
    installed = _fresh_python(template.format(block=""))
    assert "api extra" not in installed.stderr and installed.returncode == 1


@pytest.mark.slow
def test_a_plain_node_does_not_import_the_web_framework() -> None:
    probe = ("import sys, argparse\nfrom trisa_peer.cli import main, node, api_args\n"
             "{extra}"
             "print(sorted(m for m in ('starlette', 'uvicorn', 'anyio', 'h11') "
             "if m in sys.modules))\n")
    plain = _fresh_python(probe.format(extra=""))
    assert plain.stdout.strip() == "[]", plain.stderr
    loaded = _fresh_python(probe.format(extra="import trisa_peer.api.server, "
                                        "trisa_peer.api.app\nimport uvicorn\n"))
    assert "starlette" in loaded.stdout and "uvicorn" in loaded.stdout, loaded.stderr


def test_off_loopback_with_all_three_tls_files_passes_the_start_checks(
        tokens: Path, tls_material: dict[str, Any]) -> None:
    import argparse

    from trisa_peer.cli.api_args import check_api_args

    tls: TlsFiles = tls_material["tls"]
    args = argparse.Namespace(api_listen="0.0.0.0:0", api_token_file=str(tokens),
                              api_tls_cert=tls.cert, api_tls_key=tls.key,
                              api_client_ca=tls.client_ca, workers=1)
    check_api_args(args)  # accepted: mutual TLS configured
    args.api_client_ca = None
    with pytest.raises(UsageError, match="go together"):
        check_api_args(args)
    args.api_tls_cert = args.api_tls_key = None
    with pytest.raises(UsageError, match="off loopback the API needs mutual TLS"):
        check_api_args(args)
