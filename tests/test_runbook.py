"""The README's "Rotating a certificate" runbook runs as written (issue 14 section 4).

The runbook's ``sh`` blocks (annotated ``runbook`` in the README) are one operator's
session: they run in order in *one*
shell (the setup's servers and ``$BOB``/``$ALICE`` carry over), typed command by
command with the README's harness (tests/test_readme.py: ``Run``, ``Terminal``, port
substitution, background servers waited for), in a fresh folder. Every command must
exit 0 (a refusal the runbook expects is written ``! command``); then what each
procedure must have shown is checked from the outputs: the expiring listing before and
after the planned reissue, the compromised certificate refused for its revocation, and
a peer passing all eight steps after every rotation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import test_readme as harness
from helpers import ROOT

BLOCKS = harness.RUNBOOK
PROCEDURES = ("(a) Planned reissue", "(b) Key compromise: revoke, publish the CRL, reissue",
              "(c) Trust-root change")


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[harness.Run]:
    folder = tmp_path / "ops"
    folder.mkdir()
    yield harness.Run(folder, harness._env(tmp_path), harness._free_ports())


def _outputs(run: harness.Run, prefix: str) -> list[str]:
    return [out for cmd, out in run.outputs if cmd.lstrip("! ").startswith(prefix)]


def test_runbook_has_the_three_procedures_and_nothing_skipped() -> None:
    assert all(b.lang == "sh" and b.annotation == "runbook" for b in BLOCKS)
    assert [b.section for b in BLOCKS][1:] == list(PROCEDURES)
    assert "\n## Rotating a certificate\n" in (ROOT / "README.md").read_text()


def test_a_failing_runbook_command_fails_the_run(reader: harness.Run) -> None:
    """The twin of the session test: a command that exits non-zero (a database that
    does not exist) stops the run with the command named."""
    block = harness.Block(1, "twin", "sh", "",
                          "trisa-peer gds certs --db missing.db --expiring 30d\n")
    terminal = harness.Terminal(reader.folder, reader.env)
    try:
        with pytest.raises(AssertionError, match=r"missing\.db"):
            reader.shell(terminal, block)
    finally:
        terminal.close()


@pytest.mark.slow
def test_runbook_runs_as_written(reader: harness.Run) -> None:
    terminal = harness.Terminal(reader.folder, reader.env)
    try:
        for block in BLOCKS:
            reader.shell(terminal, block)
    finally:
        terminal.close()
    # (a): the 20-day certificate is listed, then no longer after the reissue
    before, after = _outputs(reader, "trisa-peer gds certs")
    assert "bob.vasp.test" in before and "days left" in before, before
    assert after.strip() == "no certificates expiring", after
    # every check that must pass passed all eight steps (setup, a, b after, c twice)
    checks = _outputs(reader, "trisa-peer check")
    assert len(checks) == 6, checks
    refused = checks[2]
    assert "is on the CRL" in refused and "REFUSED: step 6" in refused, refused
    for out in (checks[0], checks[1], *checks[3:]):
        assert "all eight steps" in out, out
    # the node never restarted: each installed set was reloaded in place
    log = "".join(terminal.transcript)
    assert log.count("reloaded TLS material") >= 3, log
