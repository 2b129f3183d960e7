"""What a ``trisa-peer`` process loads (issue 16 §2, b14: the memory of a default ``serve``).

- ``cli/main.py``'s table of which module registers which command agrees with the
  modules themselves, and parsing with only the command's module registered gives the
  same namespace as with every module (the twin: a command word that is not a command
  registers them all, so argparse's "invalid choice" lists every command);
- a real default ``serve`` (real sockets, a real directory server) does not load the
  PostgreSQL driver, the HTTP API's Starlette/uvicorn, prometheus-client, the directory
  server, the CA, the CSR or Sectigo code or the other commands' modules; the twin: the
  same probe run with ``--metrics-listen`` does see prometheus-client, so the probe sees
  what is loaded late, after the node started.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PKI
from pki import identity

from trisa_peer.cli import main as trisa_main
from trisa_peer.directory.server import DirectoryServer
from trisa_peer.directory.store import SQLiteStore
from trisa_peer.testing.network import free_port

#: loaded only for the options (or commands) that use them
NOT_IN_DEFAULT_SERVE = (
    "psycopg", "psycopg_pool", "starlette", "uvicorn", "prometheus_client",
    "trisa_peer.api", "trisa_peer.metrics", "trisa_peer.crlfetch", "trisa_peer.csr",
    "trisa_peer.ca", "trisa_peer.sectigo", "trisa_peer.directory.server",
    "trisa_peer.directory.store", "trisa_peer.directory.service",
    "trisa_peer.directory.issuance", "trisa_peer.network.webhook", "trisa_peer.cli.gds",
    "trisa_peer.cli.ca", "trisa_peer.cli.csr", "trisa_peer.cli.envelope",
    "trisa_peer.cli.status", "trisa_peer.cli.demo",
)

# Runs `trisa-peer serve` in its main thread; a side thread waits until the port answers
# and serve has set its SIGTERM handler (its last step before waiting), prints the loaded
# modules on one line and stops the node as a service manager would (SIGTERM).
_CHILD = """
import os, signal, socket, sys, threading, time
port = int(sys.argv[1])
def probe():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                break
        except OSError:
            pass
        time.sleep(0.05)
    print("MODULES " + " ".join(sorted(sys.modules)), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=probe, daemon=True).start()
from trisa_peer.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def _registered(module: str) -> tuple[str, ...]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    importlib.import_module(f"trisa_peer.cli.{module}").register(sub)
    return tuple(sub.choices)


@pytest.mark.parametrize("module", trisa_main._COMMAND_MODULES)
def test_command_table_matches_what_each_module_registers(module: str) -> None:
    assert sorted(_registered(module)) == sorted(trisa_main._COMMANDS[module])


def test_parse_with_the_command_module_only_is_the_full_parse() -> None:
    argv = ["-v", "serve", "--listen", "127.0.0.1:0", "--policy", "accept"]
    alone, full = trisa_main.build_parser(argv), trisa_main.build_parser()
    choices = alone._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert sorted(choices) == ["check", "send", "serve"]
    first, second = (
        {k: v for k, v in vars(parser.parse_args(argv)).items()
         if not k.startswith("_")}  # options.py's bookkeeping, named after an id()
        for parser in (alone, full))
    assert first.keys() == second.keys()
    assert first["func"].__qualname__ == second["func"].__qualname__ == "_serve"
    assert {k: v for k, v in first.items() if k not in ("func", "command_parser")} == {
        k: v for k, v in second.items() if k not in ("func", "command_parser")}


def test_an_unknown_command_word_registers_every_command(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert trisa_main.main(["sevre", "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'sevre'" in err
    for commands in trisa_main._COMMANDS.values():
        for command in commands:
            assert repr(command) in err


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[tuple[DirectoryServer, int]]:
    gds = DirectoryServer(SQLiteStore(tmp_path / "gds.db"), listen="127.0.0.1:0")
    gds.start()
    port = free_port()
    bob = identity("bob")
    gds.directory.add(common_name=bob.common_name, endpoint=f"{bob.common_name}:{port}",
                      certificates=[bob.leaf, *bob.chain])
    try:
        yield gds, port
    finally:
        gds.stop()


def _serve_modules(tmp_path: Path, gds: DirectoryServer, port: int, *extra: str) -> set[str]:
    argv = ["serve", "--listen", f"127.0.0.1:{port}", "--db", str(tmp_path / "bob.db"),
            "--cert", str(PKI / "bob.pem"), "--key", str(PKI / "bob.key"),
            "--trust", str(PKI / "trust.pem"), "--directory", gds.endpoint,
            "--directory-insecure", *extra]
    out = subprocess.run([sys.executable, "-c", _CHILD, str(port), *argv],
                         capture_output=True, text=True, timeout=120)
    lines = [line for line in out.stdout.splitlines() if line.startswith("MODULES ")]
    assert lines, out.stdout + out.stderr
    assert "serving on port" in out.stdout, out.stdout + out.stderr
    return set(lines[0].split()[1:])


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


@pytest.mark.slow
def test_default_serve_does_not_load_what_it_does_not_use(
        tmp_path: Path, directory: tuple[DirectoryServer, int]) -> None:
    modules = _serve_modules(tmp_path, *directory)
    assert "trisa_peer.network.node" in modules  # the probe ran in a serving node
    assert _loaded(modules, NOT_IN_DEFAULT_SERVE) == []


@pytest.mark.slow
def test_the_probe_sees_what_an_option_loads(
        tmp_path: Path, directory: tuple[DirectoryServer, int]) -> None:
    modules = _serve_modules(tmp_path, *directory, "--metrics-listen", "127.0.0.1:0")
    assert "prometheus_client" in _loaded(modules, NOT_IN_DEFAULT_SERVE)
