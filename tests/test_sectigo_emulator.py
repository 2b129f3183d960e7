"""The emulator's wire behaviour, spoken to with raw urllib (no client in between)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import SECTIGO_PASSWORD as PASSWORD
from helpers import SECTIGO_USER as USER

from trisa_peer.errors import ConfigurationError
from trisa_peer.sectigo.emulator import SectigoEmulator
from trisa_peer.sectigo.tokens import decode_claims

P12_PASSWORD = "Only-In-Transit-42"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def emu(make_emu: Callable[..., SectigoEmulator], tmp_path: Path) -> SectigoEmulator:
    return make_emu(state_path=tmp_path / "state.json")


def call(emu: SectigoEmulator, method: str, path: str, body: Any = None, *,
         token: str | None = None, raw: bytes | None = None) -> tuple[int, str, bytes]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json;charset=UTF-8"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(emu.base_url + path, data=data,  # noqa: S310
                                 headers=headers, method=method)
    try:
        with _OPENER.open(req, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def login(emu: SectigoEmulator) -> dict[str, str]:
    status, ctype, body = call(emu, "POST", "/auth/pwd",
                               {"username": USER, "password": PASSWORD})
    assert status == 200 and ctype.startswith("application/json")
    doc: dict[str, str] = json.loads(body)
    return doc


def test_tokens_are_hs512_with_real_shaped_claims(emu: SectigoEmulator) -> None:
    pair = login(emu)
    header = json.loads(base64.urlsafe_b64decode(pair["accessToken"].split(".")[0] + "=="))
    assert header["alg"] == "HS512"
    access = decode_claims(pair["accessToken"])
    refresh = decode_claims(pair["refreshToken"])
    assert access["exp"] - access["iat"] == 900 and access["scopes"] == ["ROLE_USER"]
    assert refresh["exp"] - refresh["iat"] == 7200
    assert refresh["scopes"] == ["ROLE_REFRESH_TOKEN"]
    assert access["sub"].startswith("/account/")


def test_auth_endpoints(emu: SectigoEmulator) -> None:
    status, _, body = call(emu, "POST", "/auth/pwd", {"username": USER, "password": "x"})
    assert status == 401 and json.loads(body)["message"] == "Bad credentials"
    assert call(emu, "POST", "/auth/pwd", raw=b"{not json")[0] == 400
    pair = login(emu)
    # the refresh body is the raw token; the refresh token is reused
    status, _, body = call(emu, "POST", "/auth/refresh", raw=pair["refreshToken"].encode())
    assert status == 200 and json.loads(body)["refreshToken"] == pair["refreshToken"]
    # an access token is not a refresh token, and vice versa
    assert call(emu, "POST", "/auth/refresh", raw=pair["accessToken"].encode())[0] == 401
    assert call(emu, "GET", "/api/v1/devices", token=pair["refreshToken"])[0] == 401
    assert call(emu, "GET", "/api/v1/devices", token=pair["accessToken"] + "x")[0] == 401
    assert call(emu, "GET", "/api/v1/devices")[0] == 401
    assert call(emu, "GET", "/api/v1/devices", token=pair["accessToken"])[0] == 200


def test_error_shapes_and_routes(emu: SectigoEmulator) -> None:
    token = login(emu)["accessToken"]
    status, ctype, body = call(emu, "GET", "/api/v1/nothing", token=token)
    assert status == 404 and ctype.startswith("application/json")
    err = json.loads(body)
    assert set(err) == {"status", "message", "errorCode", "timestamp"}
    assert call(emu, "DELETE", "/api/v1/devices", token=token)[0] == 405
    assert call(emu, "GET", "/api/v1/batches/abc", token=token)[0] == 400
    assert call(emu, "GET", "/api/v1/authorities/9/balanceavailable", token=token)[0] == 404
    status, _, body = call(emu, "GET", "/api/v1/authorities/1/balanceavailable", token=token)
    assert (status, json.loads(body)) == (200, 10)
    assert call(emu, "POST", "/api/v1/certificates/find", {}, token=token)[0] == 400
    assert call(emu, "GET", "/status")[0] == 200


def test_batch_lifecycle_on_the_wire(emu: SectigoEmulator, tmp_path: Path) -> None:
    token = login(emu)["accessToken"]
    params = {"commonName": "wire.example", "dNSName": "wire.example",
              "pkcs12Password": P12_PASSWORD}
    status, _, body = call(emu, "PUT", "/api/v1/batches/createSingleCertBatch",
                           {"authorityId": 1, "batchName": "w", "profileParams": params},
                           token=token)
    assert status == 200
    batch = json.loads(body)
    assert set(batch) == {
        "batchId", "orderNumber", "creationDate", "profile", "size", "status", "active",
        "batchName", "rejectReason", "generatorParametersValues", "userId", "downloadable",
        "rejectable"}
    # the TRISA guide's sample (spec §15): first batch 24, order number 1024
    assert (batch["batchId"], batch["orderNumber"]) == (24, 1024)
    assert batch["creationDate"].endswith("+0000")
    status, ctype, body = call(emu, "GET", "/api/v1/batches/24/status", token=token)
    assert (status, body) == (200, b"Ready for download") and ctype.startswith("text/plain")
    req = urllib.request.Request(  # noqa: S310
        emu.base_url + "/api/v1/batches/24/download",
        headers={"Authorization": f"Bearer {token}"})
    with _OPENER.open(req, timeout=30) as resp:
        assert resp.headers["Content-Disposition"] == 'attachment; filename="24.zip"'
        assert resp.read(2) == b"PK"
    # the PKCS#12 password is never persisted
    state = (tmp_path / "state.json").read_text()
    assert P12_PASSWORD not in state and PASSWORD not in state
    serial = json.loads(call(emu, "POST", "/api/v1/certificates/find",
                             {"commonName": "WIRE.example"}, token=token)[2])["items"][0][
        "serialNumber"]
    bad = call(emu, "POST", "/api/v1/certificates/42/revoke",
               {"reasonCode": 7, "serialNumber": serial}, token=token)
    assert bad[0] == 400
    assert call(emu, "POST", "/api/v1/certificates/43/revoke",
                {"reasonCode": 1, "serialNumber": serial}, token=token)[0] == 404
    assert call(emu, "POST", "/api/v1/certificates/42/revoke",
                {"reasonCode": 1, "serialNumber": serial.lower()}, token=token)[0] == 200
    again = call(emu, "POST", "/api/v1/certificates/42/revoke",
                 {"reasonCode": 1, "serialNumber": serial}, token=token)
    assert again[0] == 400 and b"already revoked" in again[2]


def test_emulator_refuses_bad_settings(sectigo_ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="username and a password"):
        SectigoEmulator(ca_dir=sectigo_ca_dir, state_path=tmp_path / "s.json",
                        username="", password="x", key_size=2048)
    (tmp_path / "junk.json").write_text("[]")
    with pytest.raises(ConfigurationError, match="not a Sectigo emulator state file"):
        SectigoEmulator(ca_dir=sectigo_ca_dir, state_path=tmp_path / "junk.json",
                        username="u", password="p", key_size=2048)


@pytest.mark.parametrize(("param", "value", "message"), [
    ("commonName", "bad name!", "profile parameter commonName: 'bad name!' is not valid"),
    ("commonName", "-lead.example", "profile parameter commonName: '-lead.example'"),
    ("dNSName", "wire.example\nbad name", "profile parameter dNSName: 'bad name' is not valid"),
    ("pkcs12Password", "two\nlines", "profile parameter pkcs12Password does not match"),
])
def test_profile_params_match_their_validation_pattern(
    emu: SectigoEmulator, param: str, value: str, message: str
) -> None:
    token = login(emu)["accessToken"]
    status, _, body = call(emu, "GET", "/api/v1/profiles/42/parameters", token=token)
    patterns = {p["name"]: p["validationPattern"] for p in json.loads(body)}
    params = {"commonName": "wire.example", "dNSName": "wire.example\n*.wire.example",
              "pkcs12Password": P12_PASSWORD}
    # accepted twin: values the listed patterns allow
    ok = call(emu, "PUT", "/api/v1/batches/createSingleCertBatch",
              {"authorityId": 1, "batchName": "ok", "profileParams": params}, token=token)
    assert ok[0] == 200
    status, _, body = call(emu, "PUT", "/api/v1/batches/createSingleCertBatch",
                           {"authorityId": 1, "batchName": "w",
                            "profileParams": {**params, param: value}}, token=token)
    err = json.loads(body)
    assert status == 400 and err["status"] == 400
    assert err["message"].startswith(message)
    assert patterns[param] in err["message"]
    assert "\n" not in err["message"]
    if param == "pkcs12Password":
        assert value not in err["message"] and "two" not in err["message"]
    assert emu.balance(1) == 9
