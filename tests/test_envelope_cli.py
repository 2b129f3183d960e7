"""``trisa-peer envelope seal|open`` and ``transfers list|show`` as a user runs them
(in process: ``main(argv)`` with the output captured)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import PKI, UPSTREAM_TRISA, CliResult

ENV = UPSTREAM_TRISA / "pkg/trisa/envelope/testdata"


@pytest.fixture
def run(trisa_peer_cli: Callable[..., CliResult]) -> Callable[..., CliResult]:
    return trisa_peer_cli


def test_open_upstream_envelope_prints_pending_payload(run: Callable[..., CliResult]) -> None:
    out = run("envelope", "open", "--key", str(ENV / "sealing_key.pem"),
              str(ENV / "sealed_envelope.json"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads((ENV / "pending_payload.json").read_text())


def test_seal_then_open_round_trip(run: Callable[..., CliResult], tmp_path: Path) -> None:
    sealed = run("envelope", "seal", "--cert", str(PKI / "bob.pem"), str(ENV / "payload.json"))
    assert sealed.returncode == 0, sealed.stderr
    envelope = tmp_path / "envelope.json"
    envelope.write_text(sealed.stdout)
    assert json.loads(sealed.stdout)["sealed"] is True
    opened = run("envelope", "open", "--key", str(PKI / "bob.key"), str(envelope))
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout) == json.loads((ENV / "payload.json").read_text())
    # twin: Alice's key cannot open what was sealed for Bob
    wrong = run("envelope", "open", "--key", str(PKI / "alice.key"), str(envelope))
    assert wrong.returncode == 1
    assert wrong.stderr.count("\n") == 1
    assert "INVALID_KEY (106)" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_open_error_envelope_reports_the_rejection(run: Callable[..., CliResult]) -> None:
    out = run("envelope", "open", "--key", str(ENV / "sealing_key.pem"),
              str(ENV / "error_envelope.json"))
    assert out.returncode == 1
    assert json.loads(out.stdout)["code"] == "COMPLIANCE_CHECK_FAIL"
    assert "COMPLIANCE_CHECK_FAIL (90)" in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["seal", "--cert", "{pki}/bob.pem", "{missing}"], "No such file"),
        (["seal", "--cert", "{pki}/bob.pem", "{garbage}"], "not a protojson Payload"),
        (["seal", "--cert", "{garbage}", "{payload}"], "garbage.json"),
        (["open", "--key", "{pki}/bob.key", "{garbage}"], "not a protojson SecureEnvelope"),
        (["open", "--key", "{pki}/bob.key", "{unsealed}"], "VALIDATION_ERROR (155)"),
        (["open", "--key", "{pki}/bob.pem", "{unsealed}"], "no private key found"),
    ],
)
def test_bad_input_is_one_line(
    run: Callable[..., CliResult], tmp_path: Path, args: list[str], message: str
) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    values = {"pki": str(PKI), "missing": str(tmp_path / "missing.json"), "garbage": str(garbage),
              "payload": str(ENV / "payload.json"), "unsealed": str(ENV / "unsealed_envelope.json")}
    out = run("envelope", *[a.format(**values) for a in args])
    assert out.returncode == 1, out.stdout
    assert message in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_usage_error_exits_2(run: Callable[..., CliResult]) -> None:
    out = run("envelope", "open", str(ENV / "sealed_envelope.json"))
    assert out.returncode == 2


def test_transfers_cli_on_missing_store(run: Callable[..., CliResult], tmp_path: Path) -> None:
    out = run("transfers", "list", "--db", str(tmp_path / "none.db"))
    assert out.returncode == 1
    assert "no such transfer store" in out.stderr
