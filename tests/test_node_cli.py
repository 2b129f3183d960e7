"""``trisa-peer serve | check | send | transfers`` as an operator runs them.

``serve`` runs in a subprocess (it runs until SIGTERM); the other commands run in
process (``main(argv)``) except where the real process is the point (a closed pipe;
the gRPC C core's own stderr lines, which only a fresh process shows)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.protobuf import json_format
from helpers import PKI, UPSTREAM_TRISA, CliResult
from serve_proc import directory_with_bob_and_alice

from trisa_peer.ca import CertificateAuthority
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.network import free_port
from trisa_peer.testing.policies import originator_payload


def subprocess_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # as in a user's shell: without the test suite's GRPC_VERBOSITY setting
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    return subprocess.run([_console_script("trisa-peer"), *args], capture_output=True,
                          text=True, timeout=timeout, env={**env, "PYTHONUNBUFFERED": "1"})


def _console_script(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"console script {name} is not installed (make install)"
    return found


@pytest.fixture
def cli(trisa_peer_cli: Callable[..., CliResult]) -> Callable[..., CliResult]:
    return trisa_peer_cli


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.gds, self.bob_port = directory_with_bob_and_alice(tmp)
        self.procs: list[subprocess.Popen[str]] = []

    def identity_args(self, name: str) -> list[str]:
        return ["--cert", str(PKI / f"{name}.pem"), "--key", str(PKI / f"{name}.key"),
                "--trust", str(PKI / "trust.pem"), "--directory", self.gds.endpoint,
                "--directory-insecure", "--resolve", f"bob.vasp.test:{self.bob_port}:127.0.0.1"]

    def serve(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "trisa_peer", "serve", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving on port" in line, proc.stderr.read() if proc.stderr else line
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=10)
        self.gds.stop()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.close()


@pytest.mark.slow
def test_serve_check_send_transfers(setup: Setup, cli: Callable[..., CliResult]) -> None:
    db = setup.tmp / "bob.db"
    bob = setup.serve("--listen", f"127.0.0.1:{setup.bob_port}", "--db", str(db),
                      "--policy", "rvasp", *setup.identity_args("bob"))

    ok = cli("check", "bob.vasp.test", *setup.identity_args("alice"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("[ ok ]") == 8
    assert "all eight steps passed (steps 3 and 4 as the peer claims them)" in ok.stdout
    assert "claimed by the peer: our certificate bound to directory record" in ok.stdout

    # a real process: the refusal is one line, with no line from the gRPC C core
    refused = subprocess_cli("check", "bob.vasp.test", *setup.identity_args("mallory"))
    assert refused.returncode == 1
    assert "[FAIL] 4" in refused.stdout
    assert refused.stderr.count("\n") == 1 and "step 4" in refused.stderr

    payload = originator_payload(BOOK.wallets_of("alice.vasp.test")[1],
                                 BOOK.wallets_of("bob.vasp.test")[0], sent_at=datetime.now(UTC))
    path = setup.tmp / "payload.json"
    path.write_text(json_format.MessageToJson(payload, preserving_proto_field_name=True))
    sent = cli("send", "--to", "bob.vasp.test", "--payload", str(path),
               *setup.identity_args("alice"))
    assert sent.returncode == 0, sent.stderr
    reply = json.loads(sent.stdout)
    assert reply["state"] == "accepted"
    assert reply["payload"]["received_at"]

    listed = cli("transfers", "list", "--db", str(db), "--json")
    rows = json.loads(listed.stdout)
    assert [r["envelope_id"] for r in rows] == [reply["envelope_id"]]
    shown = cli("transfers", "show", reply["envelope_id"], "--db", str(db),
                "--key", str(PKI / "bob.key"))
    items = json.loads(shown.stdout)
    assert items[0]["payload"]["identity"]["@type"].endswith("IdentityPayload")
    sealed = cli("transfers", "show", reply["envelope_id"], "--db", str(db))
    assert "pass --key to open" in sealed.stdout  # nothing opened without the key

    bob.terminate()
    _, log = bob.communicate(timeout=10)
    assert "peer=alice.vasp.test" in log and "outcome=accept" in log
    assert "peer=mallory.vasp.test" in log and "outcome=reject" in log and "step=4" in log
    assert "PRIVATE KEY" not in log and "BEGIN CERTIFICATE" not in log


@pytest.mark.slow
def test_serve_from_toml_config_flags_override(setup: Setup,
                                               cli: Callable[..., CliResult]) -> None:
    config = setup.tmp / "bob.toml"
    config.write_text(
        f'listen = "127.0.0.1:1"\n'  # overridden by --listen below
        f'cert = "{PKI / "bob.pem"}"\nkey = "{PKI / "bob.key"}"\n'
        f'trust = ["{PKI / "trust.pem"}"]\ndirectory = "{setup.gds.endpoint}"\n'
        f'directory_insecure = true\npolicy = "accept"\n')
    setup.serve("--config", str(config), "--listen", f"127.0.0.1:{setup.bob_port}")
    ok = cli("check", "bob.vasp.test", *setup.identity_args("alice"))
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["serve", "--listen", "127.0.0.1:0", "--cert", "{pki}/bob.pem"],
         "missing required option(s): --trust", 2),
        (["check", "bob.vasp.test", "--cert", "{pki}/alice.pem", "--key", "{pki}/alice.key",
          "--trust", "{pki}/trust.pem", "--directory", "127.0.0.1:1", "--directory-insecure",
          "--resolve", "nonsense"], "must be HOST:PORT:ADDRESS", 2),
        (["serve", "--config", "{tmp}/bad.toml"], "unknown option(s): colour", 1),
        (["serve", "--config", "{tmp}/types.toml"], "trust must be a list of non-empty", 1),
        (["serve", "--config", "{tmp}/bool.toml"], "must be true or false", 1),
        (["serve", "--config", "{tmp}/policy.toml"], "invalid choice 'bogus'", 1),
        (["serve", "--config", "{tmp}/grace.toml"], "grace: must be zero or positive", 1),
        (["serve", "--config", "{tmp}/rate.toml"], "peer_rate must be a number", 1),
        (["serve", "--listen", "127.0.0.1:0", "--cert", "{pki}/bob.pem", "--key",
          "{pki}/alice.key", "--trust", "{pki}/trust.pem", "--directory", "127.0.0.1:1"],
         "does not match", 1),
    ],
)
def test_bad_input_one_line(cli: Callable[..., CliResult], tmp_path: Path, args: list[str],
                            message: str, code: int) -> None:
    (tmp_path / "bad.toml").write_text('colour = "blue"\n')
    (tmp_path / "types.toml").write_text("trust = 5\n")
    (tmp_path / "bool.toml").write_text('directory-insecure = "maybe"\n')
    (tmp_path / "policy.toml").write_text('policy = "bogus"\n')
    (tmp_path / "grace.toml").write_text("grace = -1\n")
    (tmp_path / "rate.toml").write_text("peer-rate = true\n")
    out = cli(*[a.format(pki=PKI, tmp=tmp_path) for a in args])
    assert out.returncode == code, out
    assert message in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == (2 if code == 2 else 1)  # usage errors add the usage line
    assert "Traceback" not in out.stderr


def test_serve_options_from_config_environment_and_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The serve-only options (limits, grace, retention) can live in the TOML file: a
    flag beats the environment, which beats the file, which beats the default."""
    import argparse

    from trisa_peer.cli.options import apply_config, count, non_negative_float

    config = tmp_path / "node.toml"
    config.write_text('grace = 10\npeer-burst = "7"\n')
    types = {"grace": non_negative_float, "peer_burst": count, "max_rejections": count}
    defaults = {"grace": 300.0, "peer_burst": 0, "max_rejections": 10_000}
    args = argparse.Namespace(config=str(config), grace=None, peer_burst=None,
                              max_rejections=None)
    apply_config(args, list(types), types=types, defaults=defaults)
    assert (args.grace, args.peer_burst, args.max_rejections) == (10.0, 7, 10_000)
    monkeypatch.setenv("TRISA_PEER_GRACE", "20")
    args = argparse.Namespace(config=str(config), grace=None, peer_burst=3,
                              max_rejections=None)
    apply_config(args, list(types), types=types, defaults=defaults)
    assert (args.grace, args.peer_burst) == (20.0, 3)  # the twin: env and flag win


def test_environment_values_are_checked(cli: Callable[..., CliResult],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRISA_PEER_DIRECTORY_TIMEOUT", "abc")
    out = cli("check", "bob.vasp.test", "--cert", str(PKI / "alice.pem"), "--key",
              str(PKI / "alice.key"), "--trust", str(PKI / "trust.pem"), "--directory",
              "127.0.0.1:1")
    assert out.returncode == 1
    assert "TRISA_PEER_DIRECTORY_TIMEOUT: directory_timeout must be a number" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_closed_pipe_is_not_a_traceback() -> None:
    """The ``trisa-peer`` console script's subprocess smoke test."""
    env_dir = UPSTREAM_TRISA / "pkg/trisa/envelope/testdata"
    proc = subprocess.Popen(
        [_console_script("trisa-peer"), "envelope", "open", "--key",
         str(env_dir / "sealing_key.pem"), str(env_dir / "sealed_envelope.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes (like `| head`)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_check_against_unreachable_directory_fails_in_bounded_time(
        cli: Callable[..., CliResult], tmp_path: Path) -> None:
    start = time.monotonic()
    out = cli("check", "bob.vasp.test", "--cert", str(PKI / "alice.pem"), "--key",
              str(PKI / "alice.key"), "--trust", str(PKI / "trust.pem"), "--directory",
              f"127.0.0.1:{free_port()}", "--directory-insecure", "--directory-timeout", "1")
    assert out.returncode == 1
    assert "[FAIL] 1" in out.stdout
    assert time.monotonic() - start < 30




def test_serve_on_a_port_in_use_fails_in_one_line_and_leaves_no_store(
        cli: Callable[..., CliResult], tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = cli("serve", "--listen", f"127.0.0.1:{port}", "--cert", str(PKI / "bob.pem"),
                  "--key", str(PKI / "bob.key"), "--trust", str(PKI / "trust.pem"),
                  "--directory", "127.0.0.1:1", "--directory-insecure",
                  "--db", str(tmp_path / "bob.db"))
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "address already in use" in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_transfers_resend_the_same_bytes(setup: Setup, cli: Callable[..., CliResult],
                                        db_location: str) -> None:
    bob_db = db_location  # serve --db: a file or a PostgreSQL URL
    alice_db = setup.tmp / "alice.db"
    setup.serve("--listen", f"127.0.0.1:{setup.bob_port}", "--db", str(bob_db),
                "--policy", "accept", *setup.identity_args("bob"))
    payload = originator_payload(BOOK.wallets_of("alice.vasp.test")[1],
                                 BOOK.wallets_of("bob.vasp.test")[0], sent_at=datetime.now(UTC))
    path = setup.tmp / "payload.json"
    path.write_text(json_format.MessageToJson(payload, preserving_proto_field_name=True))
    sent = cli("send", "--to", "bob.vasp.test", "--payload", str(path), "--db", str(alice_db),
               *setup.identity_args("alice"))
    assert sent.returncode == 0, sent.stderr
    eid = json.loads(sent.stdout)["envelope_id"]
    again = cli("transfers", "resend", eid, "--db", str(alice_db), *setup.identity_args("alice"))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["state"] == "accepted"
    listed = json.loads(cli("transfers", "list", "--db", str(bob_db), "--json").stdout)
    assert [(r["envelope_id"], r["messages"]) for r in listed] == [(eid, 2)]  # answered once
    unknown = cli("transfers", "resend", "0" * 8, "--db", str(alice_db),
                  *setup.identity_args("alice"))
    assert unknown.returncode == 1 and "no stored outgoing envelope" in unknown.stderr
    assert unknown.stderr.count("\n") == 1


@pytest.mark.slow
def test_serve_warns_once_when_the_directory_does_not_answer(setup: Setup) -> None:
    """The node starts either way; with nothing listening at the directory's address it
    says so in one line at start. The twin: a directory that answers, no warning."""
    base = ["--cert", str(PKI / "bob.pem"), "--key", str(PKI / "bob.key"),
            "--trust", str(PKI / "trust.pem"), "--directory-insecure",
            "--directory-timeout", "2"]
    down = setup.serve("--listen", "127.0.0.1:0", *base,
                       "--directory", f"127.0.0.1:{free_port()}")
    up = setup.serve("--listen", "127.0.0.1:0", *base, "--directory", setup.gds.endpoint)
    assert down.stderr is not None and up.stderr is not None
    time.sleep(4)  # longer than the 2 s directory timeout the probe may take
    for proc in (down, up):
        proc.terminate()
        proc.wait(timeout=10)
    warnings = [line for line in down.stderr.read().splitlines() if "warning:" in line]
    assert len(warnings) == 1, warnings
    assert "warning: the directory 127.0.0.1:" in warnings[0]
    assert "does not answer" in warnings[0]
    assert "peers are refused until it does" in warnings[0]
    assert "does not answer" not in up.stderr.read()


@pytest.mark.slow
def test_serve_without_a_policy_holds_transfers_for_review(
        setup: Setup, cli: Callable[..., CliResult]) -> None:
    """No decision hook: the node accepts nothing on its own; the transfer is pending
    until an operator decides (and the start says so once). The twin: --policy accept."""
    payload = originator_payload(BOOK.wallets_of("alice.vasp.test")[1],
                                 BOOK.wallets_of("bob.vasp.test")[0], sent_at=datetime.now(UTC))
    payload_path = setup.tmp / "payload.json"
    payload_path.write_text(json_format.MessageToJson(payload, preserving_proto_field_name=True))
    db = setup.tmp / "bob.db"
    bob = setup.serve("--listen", f"127.0.0.1:{setup.bob_port}", "--db", str(db),
                      *setup.identity_args("bob"))
    held = cli("send", "--to", "bob.vasp.test", "--payload", str(payload_path),
               *setup.identity_args("alice"))
    assert held.returncode == 0, held.stderr
    assert json.loads(held.stdout)["state"] == "pending", held.stdout
    listed = cli("transfers", "list", "--db", str(db))
    assert "pending: 1" in listed.stdout
    bob.terminate()
    bob.wait(timeout=10)
    assert bob.stderr is not None
    log = bob.stderr.read()
    assert log.count("no decision hook configured") == 1
    assert "Traceback" not in log
    setup.serve("--listen", f"127.0.0.1:{setup.bob_port}", "--db", str(setup.tmp / "b2.db"),
                "--policy", "accept", *setup.identity_args("bob"))
    accepted = cli("send", "--to", "bob.vasp.test", "--payload", str(payload_path),
                   *setup.identity_args("alice"))
    assert json.loads(accepted.stdout)["state"] == "accepted", accepted.stdout


def test_rvasp_policy_for_a_name_outside_the_demo_is_one_line(
        cli: Callable[..., CliResult], ca: CertificateAuthority, tmp_path: Path) -> None:
    from trisa_peer.certs import write_identity

    carol = ca.issue("carol.vasp.test", key_size=2048)
    write_identity(carol, tmp_path / "carol.pem", tmp_path / "carol.key")
    (tmp_path / "trust.pem").write_bytes(ca.trust_pem())
    args = ["serve", "--listen", "127.0.0.1:0", "--cert", str(tmp_path / "carol.pem"),
            "--key", str(tmp_path / "carol.key"), "--trust", str(tmp_path / "trust.pem"),
            "--directory", "127.0.0.1:1", "--directory-insecure"]
    out = cli(*args, "--policy", "rvasp")
    assert out.returncode == 1
    assert "--policy rvasp answers only for the demo's robot VASPs" in out.stderr
    assert "'carol.vasp.test'" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
