"""Every bench/ and soak/ script still imports: a moved module broke bench/b8_workers.py
once without any test noticing (benchmarks do not run in `make test`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from helpers import ROOT

SCRIPTS = sorted([*(ROOT / "bench").glob("*.py"), *(ROOT / "soak").glob("*.py")])


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_imports(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(path.parent))
    # tests/pki.py (or soak/run.py) may already be imported under the same name as the
    # script's sibling module: drop those for this import, restored afterwards
    for sibling in path.parent.glob("*.py"):
        monkeypatch.delitem(sys.modules, sibling.stem, raising=False)
    spec = importlib.util.spec_from_file_location(f"_check_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)  # top level only: main() is not called
    finally:
        sys.modules.pop(spec.name, None)


def test_a_script_with_a_missing_import_fails(tmp_path: Path) -> None:
    """The twin: a script importing a module that does not exist does not import."""
    bad = tmp_path / "bad.py"
    bad.write_text("from trisa_peer.network.cast import BOOK\n")
    spec = importlib.util.spec_from_file_location("_check_bad", bad)
    assert spec is not None and spec.loader is not None
    with pytest.raises(ModuleNotFoundError):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
