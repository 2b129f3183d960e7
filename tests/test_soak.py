"""Every reliability case of ``make soak`` at a small scale, with the same assertions."""

from __future__ import annotations

import subprocess
import sys

import pg
import pytest
from helpers import ROOT

SOAK = ROOT / "soak"
#: cases that need PostgreSQL (and HAProxy): left out only by TRISA_PEER_TEST_NO_POSTGRES
NEEDS_POSTGRES = {"replicas"}
CASES = sorted(c for c in (p.stem.removeprefix("case_") for p in SOAK.glob("case_*.py"))
               if not (pg.OPT_OUT and c in NEEDS_POSTGRES))
SMALL = "0.05"


def test_the_suite_has_cases() -> None:
    assert CASES, "soak/ holds no case_*.py"


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_case_holds_at_small_scale(case: str, tmp_path: object) -> None:
    out = f"{tmp_path}/results.json"
    proc = subprocess.run(
        [sys.executable, str(SOAK / "run.py"), "--only", case, "--scale", SMALL, "--out", out],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok   {case}" in proc.stdout, proc.stdout
