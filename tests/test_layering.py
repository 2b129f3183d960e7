"""Architecture rules: the verification core is pure, nothing imports the CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

CORE = ["verify", "trust", "records", "binding", "lookup", "trace", "authenticate",
        "resolve", "handshake", "certs", "steps", "errors", "clock", "netutil", "logtext",
        "controls", "denylist", "peerlimits", "limits", "events", "logsetup"]

PURE = [
    *(f"trisa_peer.{module}" for module in CORE),
    "trisa_peer.revocation", "trisa_peer.ca", "trisa_peer.envelope", "trisa_peer.reload",
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
    for module in CORE:
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


def test_core_has_no_transport_knowledge() -> None:
    """TLS text and status codes are read in trisa_peer.transport.status only."""
    for module in CORE:
        path = ROOT / "trisa_peer" / f"{module}.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = _absolute(path, node)
                assert not target.startswith("trisa_peer.transport"), f"{module} imports {target}"


def _reason_literals(tree: ast.AST) -> list[str]:
    """String literals used as a handshake reason: ``reason="..."`` keywords,
    ``default_reason = "..."`` and comparisons of ``.reason`` with a string."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "reason":
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.append(value.value)
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            value = node.value
            if "default_reason" in names and isinstance(value, ast.Constant):
                found.append(str(value.value))
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "reason" for s in sides):
                found.extend(s.value for s in sides
                             if isinstance(s, ast.Constant) and isinstance(s.value, str))
    return found


def test_handshake_reasons_are_never_string_literals() -> None:
    offenders = []
    for path in (ROOT / "trisa_peer").rglob("*.py"):
        if "_pb" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        # Sectigo's and the directory's ``reason`` keywords are revocation / rejection
        # texts, not handshake reasons: only modules that raise handshake errors count.
        if "HandshakeError" not in path.read_text() and "Reason" not in path.read_text():
            continue
        offenders += [f"{path.name}: {value!r}" for value in _reason_literals(tree)]
    assert offenders == []


def test_reason_literal_check_has_a_failing_twin() -> None:
    bad = ast.parse('raise ChainVerificationError("x", step=s, reason="chain-expired")\n'
                    'if exc.reason == "directory-unavailable": pass\n'
                    'class E(HandshakeError):\n    default_reason = "tls-failed"\n')
    expected = ["chain-expired", "directory-unavailable", "tls-failed"]
    assert sorted(_reason_literals(bad)) == expected
    good = ast.parse('raise ChainVerificationError("x", step=s, reason=Reason.EXPIRED)')
    assert _reason_literals(good) == []


def test_the_pytest_plugin_is_declared_for_users() -> None:
    """The suite loads the plugin by name (-p); users get it through the entry point."""
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="pytest11") if ep.name == "trisa_peer"]
    assert [ep.value for ep in found] == ["trisa_peer.testing.plugin"]
    assert hasattr(found[0].load(), "trisa_network")


# -- the production node does not load the test material ------------------------------

#: the production node: what `trisa-peer serve` runs. The demo's cast and wallet rules
#: (trisa_peer.testing) may be imported only inside a function (serve --policy rvasp).
PRODUCTION_NODE = [*sorted((ROOT / "trisa_peer" / "network").glob("*.py")),
                   ROOT / "trisa_peer" / "cli" / "node.py"]


def _import_time_targets(path: Path, tree: ast.Module) -> list[str]:
    """Modules imported when ``path`` is imported: every import statement outside a
    function body (class bodies, ``if`` and ``try`` blocks run at import too)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(path, node)
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _imports_testing(path: Path, source: str) -> list[str]:
    targets = _import_time_targets(path, ast.parse(source))
    return [t for t in targets if t == "trisa_peer.testing" or t.startswith("trisa_peer.testing.")]


def test_production_node_does_not_import_the_test_material() -> None:
    assert len(PRODUCTION_NODE) > 5
    offenders = {str(p.relative_to(ROOT)): _imports_testing(p, p.read_text())
                 for p in PRODUCTION_NODE}
    assert {p: t for p, t in offenders.items() if t} == {}


def test_test_material_check_has_a_failing_twin() -> None:
    node_py = ROOT / "trisa_peer" / "cli" / "node.py"
    at_import = ("from ..testing.policies import rvasp_handler\n"
                 "import trisa_peer.testing.cast\n"
                 "try:\n    from .. import testing\nexcept ImportError:\n    pass\n")
    assert _imports_testing(node_py, at_import) == [
        "trisa_peer.testing.policies", "trisa_peer.testing.policies.rvasp_handler",
        "trisa_peer.testing.cast", "trisa_peer.testing"]
    deferred = ("def _handler(policy):\n"
                "    from ..testing.policies import rvasp_handler\n"
                "    return rvasp_handler(policy)\n")
    assert _imports_testing(node_py, deferred) == []


@pytest.mark.slow
def test_serve_loads_the_test_material_only_for_policy_rvasp() -> None:
    """Run time, in a fresh interpreter: importing the node and its CLI loads nothing of
    trisa_peer.testing; asking for the rvasp handler does (the check can see it)."""
    code = ("import sys, trisa_peer.cli.node as cli, trisa_peer.network.node, "
            "trisa_peer.network.service\n"
            "loaded = lambda: sorted(m for m in sys.modules\n"
            "                        if m.startswith('trisa_peer.testing'))\n"
            "print(loaded())\n"
            "cli._handler('review', 'carol.vasp.test')\n"
            "print(loaded())\n"
            "cli._handler('rvasp', 'bob.vasp.test')\n"
            "print(loaded())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "[]", "[]", "['trisa_peer.testing', 'trisa_peer.testing.cast', "
        "'trisa_peer.testing.policies']"]
