"""Architecture rules: the verification core is pure, nothing imports the CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

PURE = [
    "trisa_peer.errors", "trisa_peer.steps", "trisa_peer.certs", "trisa_peer.trust",
    "trisa_peer.verify", "trisa_peer.records", "trisa_peer.matching", "trisa_peer.handshake",
    "trisa_peer.revocation", "trisa_peer.ca", "trisa_peer.envelope",
]


@pytest.mark.slow
@pytest.mark.parametrize("module", PURE)
def test_pure_core_does_not_import_grpc(module: str) -> None:
    code = (f"import sys, {module}; "
            "bad = [m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"


def test_verification_core_does_not_import_generated_code() -> None:
    for module in ("verify", "trust", "records", "matching", "handshake", "certs"):
        tree = ast.parse((ROOT / "trisa_peer" / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert "_pb" not in (node.module or ""), f"{module} imports {node.module}"


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *(node.module.split(".") if node.module else [])])


def test_nothing_imports_the_cli() -> None:
    for path in (ROOT / "trisa_peer").rglob("*.py"):
        if "cli" in path.parts or "_pb" in path.parts or path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = _absolute(path, node)
                assert not (target == "trisa_peer.cli" or target.startswith("trisa_peer.cli.")), (
                    f"{path} imports {target}")
