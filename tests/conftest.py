"""Shared fixtures. Constants and plain helpers live in ``pki.py`` (import it);
this file is for pytest only and is never imported by the tests.

- ``ca``: a 2048-bit :class:`CertificateAuthority`, one per test module.
- ``sectigo_ca_dir`` / ``emu``: the local Sectigo service's CA is made once per module
  and copied into each test's directory, so every test starts from a fresh CA and
  state without paying for new RSA keys.
- ``trisa_peer_cli`` / ``sectigo_cli``: run a console script's ``main(argv)`` in
  process and return a :class:`CliResult` shaped like ``subprocess.CompletedProcess``
  (exit status from the return value or from argparse's ``SystemExit``). Logging
  handlers the command installs are removed afterwards; tests change the
  environment and the working directory through ``monkeypatch`` only.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pg
import pytest
from helpers import SECTIGO_PASSWORD, SECTIGO_USER, CliResult

import trisa_peer.ca
from trisa_peer.ca import CertificateAuthority
from trisa_peer.sectigo.emulator import SectigoEmulator

# The gRPC C core logs INFO lines (handshake failures the tests provoke on purpose).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


# --------------------------------------------------------------------------- CAs


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("ca") / "ca", key_size=2048)


@pytest.fixture(scope="module")
def _sectigo_ca_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sectigo-ca") / "ca"
    CertificateAuthority.init(path, key_size=2048)
    return path


_original_load_key = trisa_peer.ca._load_key
_loaded_keys: dict[bytes, Any] = {}


def _load_key_once(path: Path) -> Any:
    """``ca._load_key`` that parses each key file's bytes once per session: loading an
    RSA key checks it (~0.1 s), and every Sectigo test opens the same template CA."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return _original_load_key(path)  # its own error message
    if data not in _loaded_keys:
        _loaded_keys[data] = _original_load_key(path)
    return _loaded_keys[data]


@pytest.fixture
def sectigo_ca_dir(_sectigo_ca_template: Path, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of this module's Sectigo CA in ``tmp_path / "ca"`` (keys parsed once)."""
    dest = tmp_path / "ca"
    shutil.copytree(_sectigo_ca_template, dest)
    monkeypatch.setattr(trisa_peer.ca, "_load_key", _load_key_once)
    return dest


@pytest.fixture
def make_emu(sectigo_ca_dir: Path, tmp_path: Path) -> Iterator[Callable[..., SectigoEmulator]]:
    """Start a local Sectigo service on loopback over this test's CA copy."""
    started: list[SectigoEmulator] = []

    def make(**kw: Any) -> SectigoEmulator:
        kw.setdefault("username", SECTIGO_USER)
        kw.setdefault("password", SECTIGO_PASSWORD)
        kw.setdefault("state_path", tmp_path / "sectigo.json")
        emulator = SectigoEmulator(ca_dir=sectigo_ca_dir, key_size=2048, **kw)
        emulator.start("127.0.0.1", 0)
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emu(make_emu: Callable[..., SectigoEmulator]) -> SectigoEmulator:
    return make_emu()


# --------------------------------------------------------------------------- CLIs


def _invoke(main: Callable[[Sequence[str]], int], argv: Sequence[str],
            capture: pytest.CaptureFixture[str]) -> CliResult:
    capture.readouterr()  # drop anything printed before
    # ``logging.basicConfig`` in main() only acts on a root logger without handlers
    # (pytest's capture handlers are there): clear them for the call, restore after.
    root, ours = logging.getLogger(), logging.getLogger("trisa_peer")
    saved = root.handlers[:], root.level, ours.level
    root.handlers.clear()
    try:
        try:
            code: Any = main(list(argv))
        except SystemExit as exc:  # argparse: usage errors (2), --help/--version (0)
            code = exc.code
        if code is None:
            code = 0
        elif not isinstance(code, int):  # sys.exit("message")
            code = 1
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        ours.setLevel(saved[2])
    out, err = capture.readouterr()
    return CliResult(code, out, err)


@pytest.fixture
def trisa_peer_cli(capfd: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``trisa_peer_cli("gds", "list", ...)`` runs ``trisa-peer gds list ...`` in process.

    File descriptors 1 and 2 are captured too (``capfd``), so a line the gRPC C core
    writes there shows up in ``stderr`` as it would for a user."""
    from trisa_peer.cli.main import main

    return lambda *argv: _invoke(main, [str(a) for a in argv], capfd)


@pytest.fixture
def sectigo_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``sectigo_cli("auth")`` runs ``sectigo auth`` in process."""
    from trisa_peer.cli.sectigo import main

    return lambda *argv: _invoke(main, [str(a) for a in argv], capsys)


@pytest.fixture
def net(trisa_network: Any) -> Any:
    """The simulated network (Alice, Bob, Charlie, ...) under a short name; modules that
    build their own network define their own ``net``."""
    return trisa_network


# --------------------------------------------------------------------------- databases


@pytest.fixture(params=pg.BACKENDS)
def db_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database location for a store: a SQLite file path, or a
    PostgreSQL URL with its own schema (see ``tests/pg.py``)."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return pg.fresh_schema_url()


def pytest_report_header(config: pytest.Config) -> str:
    if pg.OPT_OUT:
        return "PostgreSQL cases LEFT OUT (TRISA_PEER_TEST_NO_POSTGRES is set)"
    return f"store tests on: {', '.join(pg.BACKENDS)} ({pg.ADMIN_URL})"
