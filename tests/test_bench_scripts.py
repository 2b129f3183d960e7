"""Every bench/ and soak/ script still imports: a moved module broke bench/b8_workers.py
once without any test noticing (benchmarks do not run in `make test`). Each import runs
in a fresh interpreter: bench/ and tests/ both have a ``pki`` module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

SCRIPTS = sorted([*(ROOT / "bench").glob("*.py"), *(ROOT / "soak").glob("*.py")])

_IMPORT = """
import importlib.util, sys
path = sys.argv[1]
sys.path.insert(0, path.rsplit("/", 1)[0])
spec = importlib.util.spec_from_file_location("_script", path)
module = importlib.util.module_from_spec(spec)
sys.modules["_script"] = module
spec.loader.exec_module(module)  # top level only: main() is not called
"""


def _imports(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _IMPORT, str(path)], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_imports(path: Path) -> None:
    proc = _imports(path)
    assert proc.returncode == 0, proc.stderr


def test_a_script_with_a_missing_import_fails(tmp_path: Path) -> None:
    """The twin: a script importing a module that does not exist does not import."""
    bad = tmp_path / "bad.py"
    bad.write_text("from trisa_peer.network.cast import BOOK\n")
    proc = _imports(bad)
    assert proc.returncode == 1 and "ModuleNotFoundError" in proc.stderr


@pytest.mark.slow
def test_bench_only_refuses_an_unknown_key_before_writing_anything(tmp_path: Path) -> None:
    """``bench/run.py --only b1,bogus`` is a usage error (exit 2, one line naming the
    key) and writes neither the results nor the plot: a typo used to run nothing and
    overwrite both with n/a. Twin: ``--help`` with the same output paths exits 0 and
    lists the keys ``--only`` knows."""
    out, plot = tmp_path / "results.json", tmp_path / "report.png"
    run = [sys.executable, str(ROOT / "bench" / "run.py"), "--out", str(out),
           "--plot", str(plot)]
    bad = subprocess.run([*run, "--only", "b1,bogus"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("run.py: error: --only: unknown bogus")
    assert not out.exists() and not plot.exists()
    good = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert good.returncode == 0 and "b1,b2,b3" in good.stdout.replace("\n", "")
