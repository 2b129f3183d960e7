"""The small concepts written once (issue 10 §3): HOST:PORT, serials, common names,
the Sectigo REST paths, the clock, and the one CLI runner both console scripts share."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest
from cryptography import x509

from trisa_peer.certs import clean_serial, common_name, format_serial, parse_serial
from trisa_peer.clock import utcnow
from trisa_peer.netutil import split_host_port, split_resolve
from trisa_peer.sectigo import paths


@pytest.mark.parametrize(("text", "expected"), [
    ("example.com:443", ("example.com", 443)),
    (" [::1]:4000 ", ("::1", 4000)),
    ("127.0.0.1:65535", ("127.0.0.1", 65535)),
])
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize("text", ["example.com", "example.com:", "example.com:x",
                                  "example.com:0", "example.com:65536", ":443", "[]:443"])
def test_split_host_port_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(text)


def test_an_empty_host_is_never_widened_silently() -> None:
    with pytest.raises(ValueError, match="host is missing"):
        split_host_port(":8831", allow_port_zero=True)
    assert split_host_port(":0", allow_port_zero=True, default_host="127.0.0.1") == (
        "127.0.0.1", 0)


def test_split_resolve() -> None:
    assert split_resolve("Alice.VASP.test:4000:127.0.0.1") == ("alice.vasp.test:4000",
                                                               "127.0.0.1:4000")
    for bad in ("alice:4000", "alice:port:127.0.0.1", "alice:4000:"):
        with pytest.raises(ValueError):
            split_resolve(bad)


def test_serials() -> None:
    assert format_serial(0x0A1B) == "A1B"
    assert clean_serial(" 0x0a:1b ") == "0A1B"  # leading zeros kept as typed
    assert parse_serial("0A:1B") == 0x0A1B
    for bad in ("", "0x", "12G4", "-1A"):
        with pytest.raises(ValueError, match="not a hexadecimal serial number"):
            parse_serial(bad)


def test_common_name_of_a_name_a_certificate_and_none() -> None:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "alice.vasp.test")])
    assert common_name(name) == "alice.vasp.test"
    assert common_name(x509.Name([])) == ""


def test_clock_is_aware_utc() -> None:
    assert utcnow().tzinfo is UTC


def test_sectigo_routes_build_and_match_the_same_paths() -> None:
    assert paths.BATCH_STATUS.path(42) == "/api/v1/batches/42/status"
    match = paths.BATCH_STATUS.pattern.fullmatch("/api/v1/batches/42/status")
    assert match is not None and match.groups() == ("42",)
    assert paths.BATCH.pattern.fullmatch("/api/v1/batches/42/status") is None
    assert len({(r.method, r.template) for r in paths.ROUTES}) == len(paths.ROUTES)
    assert not paths.AUTH_PWD.auth and paths.AUTHORITIES.auth


def test_sectigo_serve_refuses_an_empty_host(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from trisa_peer.cli.sectigo import main

    monkeypatch.setenv("SECTIGO_USERNAME", "user")
    monkeypatch.setenv("SECTIGO_PASSWORD", "secret")
    code = main(["serve", "--addr", ":8831", "--ca-dir", str(tmp_path / "ca"),
                 "--state", str(tmp_path / "state.json")])
    _, err = capsys.readouterr()
    assert code == 1
    assert err == ("sectigo: error: --addr ':8831' is not HOST:PORT: the host is missing "
                   "(give 0.0.0.0:PORT to listen on every interface)\n")
    assert not (tmp_path / "ca").exists()


@pytest.mark.parametrize(("argv", "status", "first"), [
    (["--timeout", "0", "licenses"], 2, "usage: sectigo "),
    (["profiles", "--params"], 2, "usage: sectigo profiles"),
    (["--help"], 0, ""),
])
def test_sectigo_usage_errors_share_the_runner(
        capsys: pytest.CaptureFixture[str], argv: list[str], status: int, first: str) -> None:
    from trisa_peer.cli.sectigo import main

    assert main(argv) == status
    out, err = capsys.readouterr()
    if status == 2:
        assert err.startswith(first) and err.count("error:") == 1
        assert "Traceback" not in err
    else:
        assert out.startswith("usage: sectigo")
