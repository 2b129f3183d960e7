"""docs/config.md is the reference of every option of both CLIs (issue 15 §5).

- the file is exactly what the parsers generate (the twins: a new option, a changed help
  text and a stale file are each caught, by the comparison and by ``--check``);
- every option ``--help`` shows is in it, with its hidden old spellings noted;
- environment variables follow one scheme (``TRISA_PEER_<OPTION>``, ``SECTIGO_*`` for
  the sectigo CLI and the Sectigo options); the twin: a variable off the scheme and a TOML
  key that is not the option's name are reported;
- every command that takes ``--config`` is one whose config options the reference knows,
  and every ``TRISA_PEER_*``/``SECTIGO_*`` name the code reads is documented (twins:
  an unknown ``--config`` command and an undocumented variable are reported).
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from helpers import ROOT

from trisa_peer.cli import main as trisa_main
from trisa_peer.cli import sectigo as sectigo_main
from trisa_peer.cli.introspect import (
    OptionDoc,
    clean_environment,
    collect,
    config_commands,
    env_scheme_violations,
    reference_text,
    render,
    walk,
)

REFERENCE = ROOT / "docs" / "config.md"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_ref",
                                                  ROOT / "scripts" / "gen_config_ref.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sections(extra: bool = False, help_text: str | None = None
              ) -> list[tuple[str, list[OptionDoc]]]:
    with clean_environment():
        trisa, sectigo = trisa_main.build_parser(), sectigo_main.build_parser()
    serve = dict(walk(trisa))[("serve",)]
    if extra:
        serve.add_argument("--brand-new", metavar="N", help="an option nobody documented")
    if help_text is not None:
        action = next(a for a in serve._actions if a.dest == "workers")
        action.help = help_text
    return [("trisa-peer", collect("trisa-peer", trisa)),
            ("sectigo", collect("sectigo", sectigo))]


def test_the_reference_is_what_the_parsers_generate() -> None:
    expected = reference_text()
    current = REFERENCE.read_text()
    if current != expected:
        diff = "".join(list(difflib.unified_diff(
            current.splitlines(True), expected.splitlines(True), "docs/config.md",
            "parsers"))[:40])
        pytest.fail(f"docs/config.md is out of date: run 'make config-ref'\n{diff}")
    assert render(_sections()) == current


def test_a_new_option_or_a_changed_help_text_makes_the_reference_stale() -> None:
    current = REFERENCE.read_text()
    assert render(_sections()) == current  # the accepted twin
    added = render(_sections(extra=True))
    assert added != current
    assert "| `--brand-new` | — | — | — | an option nobody documented |" in added
    assert "--brand-new" not in current
    changed = render(_sections(help_text="run N processes"))
    assert changed != current and "| run N processes |" in changed


def test_the_script_check_fails_on_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    fresh = tmp_path / "config.md"
    assert script.main(["--file", str(fresh)]) == 0
    assert fresh.read_text() == REFERENCE.read_text()
    assert script.main(["--check", "--file", str(fresh)]) == 0
    fresh.write_text(fresh.read_text().replace("--workers", "--worker"))
    capsys.readouterr()
    assert script.main(["--check", "--file", str(fresh)]) == 1
    assert capsys.readouterr().err == f"{fresh}: out of date; run 'make config-ref'\n"
    assert script.main(["--check", "--file", str(tmp_path / "missing.md")]) == 1


def test_every_shown_option_of_every_command_is_in_the_reference() -> None:
    text = REFERENCE.read_text()
    with clean_environment():
        parsers = [("trisa-peer", trisa_main.build_parser()),
                   ("sectigo", sectigo_main.build_parser())]
    commands = 0
    for cli, parser in parsers:
        for path, p in walk(parser):
            command = " ".join((cli, *path))
            shown = [a for a in p._actions if a.help != argparse.SUPPRESS and not isinstance(
                a, (argparse._SubParsersAction, argparse._HelpAction,
                    argparse._VersionAction))]
            if not shown:
                continue
            commands += 1
            start = text.index(f"\n## `{command}`\n")
            end = text.find("\n## ", start + 1)
            section = text[start:end if end != -1 else None]
            for action in shown:
                first = action.option_strings[0] if action.option_strings else (
                    str(action.metavar or action.dest))
                assert f"| `{first}`" in section, (command, first)
    assert commands > 40
    # hidden old spellings are noted beside their option, old variables beside theirs
    assert "| `--ca-dir` (hidden: `--dir`) |" in text
    assert "| `--peer` (hidden: `--to`) |" in text
    assert "(hidden: `positional COMMON_NAME`)" in text
    assert "`$TRISA_PEER_DIRECTORY` (old: `$TRISA_DIRECTORY`)" in text
    # environment, TOML key and default of a serve option; "—" where there is none
    assert ("| `--workers` | `$TRISA_PEER_WORKERS` | `workers` | `1` |" in text)
    assert "| `--key-size` | — | — | `4096` | RSA bits |" in text
    assert "| `-u` `--username` | `$SECTIGO_USERNAME` | — | — |" in text


def test_environment_variables_follow_one_scheme() -> None:
    for cli, build in (("trisa-peer", trisa_main.build_parser),
                       ("sectigo", sectigo_main.build_parser)):
        with clean_environment():
            docs = collect(cli, build())
        assert env_scheme_violations(cli, docs) == []
        assert any(d.env for d in docs)  # the check saw variables


def test_a_variable_off_the_scheme_is_reported() -> None:
    good = OptionDoc(command="trisa-peer serve", dest="directory", flags=("--directory",),
                     env="TRISA_PEER_DIRECTORY", toml="directory")
    sectigo = OptionDoc(command="trisa-peer gds add", dest="sectigo_endpoint",
                        flags=("--sectigo-endpoint",), env="SECTIGO_ENDPOINT")
    assert env_scheme_violations("trisa-peer", [good, sectigo]) == []  # the accepted twin
    old = OptionDoc(command="trisa-peer serve", dest="directory", flags=("--directory",),
                    env="TRISA_DIRECTORY")
    key = OptionDoc(command="trisa-peer serve", dest="db", flags=("--db",),
                    env="TRISA_PEER_DB", toml="database")
    upstream = OptionDoc(command="sectigo", dest="username", flags=("-u", "--username"),
                         env="SECTIGO_USER")
    assert env_scheme_violations("trisa-peer", [old, key]) == [
        "trisa-peer serve --directory: $TRISA_DIRECTORY (the scheme gives "
        "$TRISA_PEER_DIRECTORY)",
        "trisa-peer serve --db: TOML key database (the scheme gives db)",
    ]
    assert env_scheme_violations("sectigo", [upstream]) == [
        "sectigo -u: $SECTIGO_USER (the scheme gives $SECTIGO_USERNAME)"]


def _unlisted_config_commands(parser: argparse.ArgumentParser,
                              known: set[tuple[str, ...]]) -> list[str]:
    return [" ".join(path) for path, p in walk(parser)
            if any("--config" in a.option_strings for a in p._actions) and path not in known]


#: ``csr --config`` reads an OpenSSL trisa.conf (its [dn_req] subject), not the TOML file
_OTHER_CONFIG = {("csr",)}


def test_every_command_with_config_is_known_to_the_reference() -> None:
    known = set(config_commands()) | _OTHER_CONFIG
    assert _unlisted_config_commands(trisa_main.build_parser(), known) == []
    bad = argparse.ArgumentParser(prog="x")
    sub = bad.add_subparsers()
    sub.add_parser("serve").add_argument("--config")
    sub.add_parser("fresh").add_argument("--config")
    assert _unlisted_config_commands(bad, known) == ["fresh"]


_VARIABLE = re.compile(r"\b((?:TRISA_PEER|SECTIGO)_[A-Z][A-Z0-9_]*[A-Z0-9])\b")
#: read by the test helpers only (trisa_peer/testing), not an option of any command
_NOT_OPTIONS = {"TRISA_PEER_TEST_PG", "TRISA_PEER_TEST_NO_POSTGRES"}


def _undocumented(sources: dict[str, str], reference: str) -> list[str]:
    found = set()
    for text in sources.values():
        found |= set(_VARIABLE.findall(text))
    return sorted(v for v in found - _NOT_OPTIONS if f"${v}`" not in reference)


def test_every_variable_the_code_reads_is_documented() -> None:
    reference = REFERENCE.read_text()
    sources = {str(p): p.read_text() for p in (ROOT / "trisa_peer").rglob("*.py")
               if "_pb" not in p.parts}
    assert _undocumented(sources, reference) == []
    assert "TRISA_PEER_DIRECTORY_ID" in "".join(sources.values())  # the scan sees code
    fake = {"x.py": 'os.environ.get("TRISA_PEER_SECRET_KNOB")'}
    assert _undocumented(fake, reference) == ["TRISA_PEER_SECRET_KNOB"]
