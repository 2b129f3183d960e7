"""One name per concept across ``trisa-peer`` and ``sectigo`` (issue 12 §5, docs/cli.md).

- every parser of both CLIs is walked: a concept under a second public name fails
  (and the checker's failing twin: parsers that show ``--dir`` or a positional ID are
  reported);
- each renamed option: the new name works, the old one still works and is hidden from
  ``--help``; both given and disagreeing: the new one wins with one warning line (the
  twin: both agreeing, no warning);
- environment: ``TRISA_PEER_DIRECTORY`` beats ``TRISA_DIRECTORY`` against a real
  directory server, ``TRISA_PEER_DIRECTORY_ID`` beats ``GDS_DIRECTORY_ID``;
- output folders: created 0700 once there is something to write, a file in the way
  refused before any work, a failed command leaves no folder.
"""

from __future__ import annotations

import argparse
import json
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import PKI, CliResult

from trisa_peer.ca import CertificateAuthority
from trisa_peer.cli import main as trisa_main
from trisa_peer.cli import sectigo as sectigo_main
from trisa_peer.cli.introspect import walk
from trisa_peer.cli.options import apply_config, env_value, finish
from trisa_peer.directory.server import DirectoryServer
from trisa_peer.directory.store import SQLiteStore

# --------------------------------------------------------------------------- the walk

#: public spellings that are another name of a chosen one: spelling -> chosen name
FORBIDDEN = {
    "--dir": "--ca-dir", "--ca": "--ca-dir", "--addr": "--listen", "--address": "--listen",
    "--bind": "--listen", "--to": "--peer", "--timeout": "--directory-timeout",
    "--outdir": "--out", "--output": "--out", "--out-dir": "--out", "--url": "--endpoint",
    "--vasp-id": "--id", "--envelope-id": "--id", "--cn": "--common-name",
    "--name-of-peer": "--peer", "--gds": "--directory", "--serial-number": "--serial",
    "--dns": "--dns-name", "--san": "--dns-name",
}
#: a concept (argparse dest) -> its only public spellings
CONCEPTS = {
    "ca_dir": {"--ca-dir"},
    "listen": {"--listen"},
    "peer": {"--peer"},
    "directory": {"--directory"},
    "directory_timeout": {"--directory-timeout"},
    "out": {"--out", "-o"},
    "reason": {"--reason", "-r"},
    "id": {"--id", "-i"},
    "envelope_id": {"--id"},
    "common_name": {"--common-name", "-n"},
    "payload": {"--payload"},
    "serial": {"--serial", "-s"},
    "dns_name": {"--dns-name", "-n"},
    "envelope": {"--envelope"},
    "message": {"--message"},
    "sectigo_endpoint": {"--sectigo-endpoint", "-e"},
    "sectigo_timeout": {"--sectigo-timeout"},
}
#: positionals whose concept has an option of its own (their old forms are hidden)
FORBIDDEN_POSITIONALS = {"ID", "COMMON_NAME", "PAYLOAD.json", "ENVELOPE.json", "DIR"}


def public_names(cli: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, str]]:
    """``(command, dest, spelling)`` of every option and positional ``--help`` shows."""
    for path, p in walk(parser):
        where = " ".join((cli, *path))
        for action in p._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            if not action.option_strings:
                yield where, action.dest, f"positional {action.metavar or action.dest}"
            for spelling in action.option_strings:
                dest = action.dest
                # in `sectigo` every option is about Sectigo: --endpoint is --sectigo-endpoint
                if cli == "sectigo" and not path and dest in ("endpoint", "timeout"):
                    dest = f"sectigo_{dest}"
                    spelling = spelling if len(spelling) == 2 else f"--sectigo-{spelling[2:]}"
                yield where, dest, spelling


def violations(cli: str, parser: argparse.ArgumentParser) -> list[str]:
    found = []
    for where, dest, spelling in public_names(cli, parser):
        if spelling in FORBIDDEN:
            found.append(f"{where}: {spelling} (the chosen name is {FORBIDDEN[spelling]})")
        elif spelling.startswith("positional "):
            if spelling.split(" ", 1)[1] in FORBIDDEN_POSITIONALS:
                found.append(f"{where}: {spelling} (an option names this concept)")
        elif dest in CONCEPTS and spelling not in CONCEPTS[dest]:
            found.append(f"{where}: {spelling} for {dest} (chosen: {sorted(CONCEPTS[dest])})")
    return found


def test_every_parser_of_both_clis_uses_one_name_per_concept() -> None:
    trisa, sectigo = trisa_main.build_parser(), sectigo_main.build_parser()
    assert violations("trisa-peer", trisa) == []
    assert violations("sectigo", sectigo) == []
    # the walk reaches the nested commands (it cannot pass by seeing nothing)
    paths = {" ".join(path) for path, _ in walk(trisa)} | {
        "sectigo " + " ".join(path) for path, _ in walk(sectigo)}
    for command in ("ca issue", "gds certs", "gds lookup", "transfers resolve", "check",
                    "send", "envelope seal", "sectigo download", "sectigo serve"):
        assert command in paths
    seen = {(where, spelling) for where, _, spelling in public_names("trisa-peer", trisa)}
    assert ("trisa-peer ca issue", "--ca-dir") in seen
    assert ("trisa-peer send", "--peer") in seen


def test_the_names_check_reports_a_second_public_name() -> None:
    clean = argparse.ArgumentParser(prog="x")
    sub = clean.add_subparsers()
    sub.add_parser("issue").add_argument("--ca-dir")
    sub.add_parser("serve").add_argument("--listen")
    assert violations("x", clean) == []  # the accepted twin

    bad = argparse.ArgumentParser(prog="x")
    sub = bad.add_subparsers()
    sub.add_parser("issue").add_argument("--dir")
    sub.add_parser("serve").add_argument("--bind-to", dest="listen")
    sub.add_parser("show").add_argument("id", metavar="ID")
    hidden = sub.add_parser("ok")
    hidden.add_argument("--dir", help=argparse.SUPPRESS)  # a hidden alias is fine
    assert violations("x", bad) == [
        "x issue: --dir (the chosen name is --ca-dir)",
        "x serve: --bind-to for listen (chosen: ['--listen'])",
        "x show: positional ID (an option names this concept)",
    ]


# --------------------------------------------------------------------------- renames

#: (cli, command words, other tokens, new form, old form, dest); ``{v}`` is the value
RENAMES: list[tuple[str, list[str], list[str], list[str], list[str], str]] = [
    ("trisa-peer", ["ca", "list"], [], ["--ca-dir", "{v}"], ["--dir", "{v}"], "ca_dir"),
    ("trisa-peer", ["ca", "issue"], ["--ca-dir", "c"], ["--common-name", "{v}"], ["{v}"],
     "common_name"),
    ("trisa-peer", ["gds", "status"], [], ["--directory-timeout", "{v}"],
     ["--timeout", "{v}"], "directory_timeout"),
    ("trisa-peer", ["gds", "lookup"], [], ["--common-name", "{v}"], ["{v}"], "common_name"),
    *[("trisa-peer", ["gds", command], ["--db", "d", *extra], ["--id", "{v}"], ["{v}"], "id")
      for command, extra in (("update-cert", ["--cert", "c"]), ("revoke", ["--reason", "1"]),
                             ("certs", ["--out", "o"]), ("reissue", []), ("review", []))],
    ("trisa-peer", ["check"], [], ["--peer", "{v}"], ["{v}"], "peer"),
    ("trisa-peer", ["send"], ["--payload", "p.json"], ["--peer", "{v}"], ["--to", "{v}"],
     "peer"),
    *[("trisa-peer", ["transfers", command], ["--db", "d"], ["--id", "{v}"], ["{v}"],
       "envelope_id") for command in ("show", "resend", "resolve")],
    ("trisa-peer", ["envelope", "seal"], ["--cert", "c"], ["--payload", "{v}"], ["{v}"],
     "payload"),
    ("trisa-peer", ["envelope", "open"], ["--key", "k"], ["--envelope", "{v}"], ["{v}"],
     "envelope"),
    ("sectigo", ["serve"], ["--ca-dir", "c", "--state", "s"], ["--listen", "{v}"],
     ["--addr", "{v}"], "listen"),
    ("sectigo", ["serve"], ["--ca-dir", "c", "--state", "s"], ["--listen", "{v}"],
     ["-a", "{v}"], "listen"),
    ("sectigo", ["download"], ["-i", "24"], ["--out", "{v}"], ["--outdir", "{v}"], "out"),
    ("sectigo", ["find"], [], ["--serial", "{v}"], ["--serial-number", "{v}"], "serial"),
    ("sectigo", ["revoke"], ["-p", "42"], ["--serial", "{v}"], ["--serial-number", "{v}"],
     "serial"),
    ("trisa-peer", ["ca", "issue"], ["--ca-dir", "c", "--common-name", "n"],
     ["--dns-name", "{v}"], ["--dns", "{v}"], "dns_name"),
    ("sectigo", [], ["licenses"], ["--endpoint", "{v}"], ["--url", "{v}"], "endpoint"),
    ("trisa-peer", ["gds", "review"], ["--db", "d", "--id", "v"], ["--message", "{v}"],
     ["--reason", "{v}"], "message"),
]
_VALUES = {"directory_timeout": ("7", "9"), "listen": ("127.0.0.1:1", "127.0.0.1:2")}


def _parse(cli: str, argv: list[str]) -> argparse.Namespace:
    build = trisa_main.build_parser if cli == "trisa-peer" else sectigo_main.build_parser
    parser = build()
    args = parser.parse_args(argv)
    finish(args, parser.prog)
    return args


def _argv(words: list[str], other: list[str], *forms: tuple[list[str], str]) -> list[str]:
    argv = [*words, *other]
    if words == ["gds", "review"]:
        argv.append("--accept")
    if words == ["transfers", "resolve"]:
        argv.append("--accept")
    given = [token.replace("{v}", value) for form, value in forms for token in form]
    # global options (no command words) go before the command, which is in ``other``
    return [*given, *argv] if not words else [*argv, *given]


@pytest.mark.parametrize(("cli", "words", "other", "new", "old", "dest"), RENAMES,
                         ids=[f"{r[0]} {' '.join(r[1])} {r[4][0]}" for r in RENAMES])
def test_renamed_option_new_and_old_spelling(
    capsys: pytest.CaptureFixture[str], cli: str, words: list[str], other: list[str],
    new: list[str], old: list[str], dest: str,
) -> None:
    a, b = _VALUES.get(dest, ("first", "second"))
    via_new = _parse(cli, _argv(words, other, (new, a)))
    via_old = _parse(cli, _argv(words, other, (old, a)))
    assert getattr(via_new, dest) == getattr(via_old, dest)
    assert a in str(getattr(via_new, dest))
    assert capsys.readouterr().err == ""
    # both spellings agreeing: no warning; disagreeing: the new one wins, one warning
    _parse(cli, _argv(words, other, (new, a), (old, a)))
    assert capsys.readouterr().err == ""
    both = _parse(cli, _argv(words, other, (new, a), (old, b)))
    assert getattr(both, dest) == getattr(via_new, dest)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"{cli}: warning: ")
    assert f"using {new[0]}" in err[0]


@pytest.mark.parametrize(("cli", "words", "other", "new", "old", "dest"), RENAMES,
                         ids=[f"{r[0]} {' '.join(r[1])} {r[4][0]}" for r in RENAMES])
def test_old_spelling_is_hidden_from_help(
    capsys: pytest.CaptureFixture[str], cli: str, words: list[str], other: list[str],
    new: list[str], old: list[str], dest: str,
) -> None:
    run = trisa_main.main if cli == "trisa-peer" else sectigo_main.main
    assert run([*words, "--help"]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"(?<![\w-]){re.escape(new[0])}(?![\w-])", text)  # the accepted twin
    if old[0].startswith("-"):
        assert not re.search(rf"(?<![\w-]){re.escape(old[0])}(?![\w-])", text), text
    else:
        assert "positional arguments" not in text, text


def test_a_required_option_is_named_by_its_public_spelling(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    missing = trisa_peer_cli("ca", "list")
    assert missing.returncode == 2
    assert missing.stderr.splitlines()[-1] == (
        "trisa-peer ca list: error: the following arguments are required: --ca-dir")
    empty = trisa_peer_cli("ca", "list", "--dir", str(tmp_path / "none"))  # the alias counts
    assert empty.returncode == 1 and "arguments are required" not in empty.stderr
    assert empty.stderr.startswith("trisa-peer: error: ")


def test_the_sectigo_listen_error_names_the_spelling_used(
    sectigo_cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SECTIGO_USERNAME", "u")
    monkeypatch.setenv("SECTIGO_PASSWORD", "p")
    for flag in ("--listen", "--addr"):
        out = sectigo_cli("serve", flag, ":8831", "--ca-dir", tmp_path / "ca",
                          "--state", tmp_path / "s.json")
        assert out.returncode == 1
        assert out.stderr.startswith(f"sectigo: error: {flag} ':8831' is not HOST:PORT")


# --------------------------------------------------------------------------- environment


def test_env_value_new_name_wins_with_a_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRISA_PEER_DIRECTORY", raising=False)
    monkeypatch.setenv("TRISA_DIRECTORY", "old.example:443")
    assert env_value(None, "TRISA_PEER_DIRECTORY") == "old.example:443"  # the old name alone
    monkeypatch.setenv("TRISA_PEER_DIRECTORY", "old.example:443")
    assert env_value(None, "TRISA_PEER_DIRECTORY") == "old.example:443"
    assert capsys.readouterr().err == ""  # agreeing: quiet
    monkeypatch.setenv("TRISA_PEER_DIRECTORY", "new.example:443")
    assert env_value(None, "TRISA_PEER_DIRECTORY") == "new.example:443"
    err = capsys.readouterr().err
    assert err == ("trisa-peer: warning: $TRISA_DIRECTORY and $TRISA_PEER_DIRECTORY "
                   "disagree; using $TRISA_PEER_DIRECTORY ($TRISA_DIRECTORY is its old "
                   "name)\n")
    assert "example" not in err  # values are never printed


def test_node_options_read_the_old_directory_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRISA_PEER_DIRECTORY", raising=False)
    monkeypatch.setenv("TRISA_DIRECTORY", "old.example:443")
    args = argparse.Namespace(directory=None)
    apply_config(args, ["directory"])
    assert args.directory == "old.example:443"
    monkeypatch.setenv("TRISA_PEER_DIRECTORY", "new.example:443")
    args = argparse.Namespace(directory=None)
    apply_config(args, ["directory"])
    assert args.directory == "new.example:443"
    assert "disagree; using $TRISA_PEER_DIRECTORY" in capsys.readouterr().err


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[str]:
    server = DirectoryServer(SQLiteStore(tmp_path / "gds.db"), listen="127.0.0.1:0")
    server.start()
    try:
        yield server.endpoint
    finally:
        server.stop(0)
        server.directory.close()


def test_directory_client_env_new_name_wins_against_a_real_directory(
    trisa_peer_cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, directory: str
) -> None:
    dead = "127.0.0.1:1"  # nothing listens there
    monkeypatch.delenv("TRISA_PEER_DIRECTORY", raising=False)
    monkeypatch.setenv("TRISA_DIRECTORY", directory)
    old_only = trisa_peer_cli("gds", "status", "--directory-insecure")
    assert old_only.returncode == 0 and old_only.stderr == "", old_only.stderr
    # the new name wins: the live directory through the new one, a warning
    monkeypatch.setenv("TRISA_DIRECTORY", dead)
    monkeypatch.setenv("TRISA_PEER_DIRECTORY", directory)
    wins = trisa_peer_cli("gds", "status", "--directory-insecure")
    assert wins.returncode == 0, wins.stderr
    assert wins.stderr.count("warning") == 1 and "using $TRISA_PEER_DIRECTORY" in wins.stderr
    # the failing twin: the dead endpoint in the new name is the one used
    monkeypatch.setenv("TRISA_DIRECTORY", directory)
    monkeypatch.setenv("TRISA_PEER_DIRECTORY", dead)
    loses = trisa_peer_cli("gds", "status", "--directory-insecure", "--directory-timeout", "2")
    assert loses.returncode == 1
    assert "using $TRISA_PEER_DIRECTORY" in loses.stderr
    assert loses.stderr.splitlines()[-1].startswith("trisa-peer: error: ")


def test_directory_id_env_new_name_wins(
    trisa_peer_cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def add(name: str) -> tuple[str, str]:
        out = trisa_peer_cli("gds", "add", "--db", tmp_path / "gds.db", "--json",
                             "--common-name", f"{name}.vasp.test", "--endpoint",
                             f"{name}.vasp.test:443", "--cert", PKI / f"{name}.pem")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["registered_directory"], out.stderr

    monkeypatch.delenv("TRISA_PEER_DIRECTORY_ID", raising=False)
    monkeypatch.setenv("GDS_DIRECTORY_ID", "old.directory")
    assert add("alice") == ("old.directory", "")
    monkeypatch.setenv("TRISA_PEER_DIRECTORY_ID", "new.directory")
    registered, err = add("bob")
    assert registered == "new.directory"
    assert "$GDS_DIRECTORY_ID and $TRISA_PEER_DIRECTORY_ID disagree" in err


# --------------------------------------------------------------------------- outputs


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-names") / "ca"
    CertificateAuthority.init(path, key_size=2048)
    return path


def test_ca_issue_creates_a_missing_output_folder_0700(
    trisa_peer_cli: Callable[..., CliResult], ca_dir: Path, tmp_path: Path
) -> None:
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    out = trisa_peer_cli("ca", "issue", "--ca-dir", ca_dir, "--common-name", "a.example",
                         "--out", existing, "--key-size", "2048")
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # an existing folder is kept as is
    deep = tmp_path / "new" / "keys"
    out = trisa_peer_cli("ca", "issue", "--dir", ca_dir, "b.example", "--out", deep,
                         "--key-size", "2048")
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(deep.stat().st_mode) == 0o700
    assert stat.S_IMODE((deep / "b.example.key").stat().st_mode) == 0o600
    assert (deep / "b.example.pem").is_file()


def test_output_folder_refusals_happen_before_any_work(
    trisa_peer_cli: Callable[..., CliResult], ca_dir: Path, tmp_path: Path
) -> None:
    before = len(CertificateAuthority.open(ca_dir).issued())
    (tmp_path / "afile").write_text("x")
    for out_path, message in (
        (tmp_path / "afile", f"output path {tmp_path / 'afile'} exists and is not a directory"),
        (tmp_path / "afile" / "sub", f"{tmp_path / 'afile'} exists and is not a directory"),
    ):
        out = trisa_peer_cli("ca", "issue", "--ca-dir", ca_dir, "--common-name", "c.example",
                             "--out", out_path, "--key-size", "2048")
        assert out.returncode == 1 and message in out.stderr, out.stderr
        assert len(out.stderr.splitlines()) == 1
    assert len(CertificateAuthority.open(ca_dir).issued()) == before
    # a command that fails for another reason leaves no new folder behind
    never = tmp_path / "never"
    out = trisa_peer_cli("ca", "issue", "--ca-dir", ca_dir, "--common-name", "bad name",
                         "--out", never, "--key-size", "2048")
    assert out.returncode == 1 and not never.exists()


def test_crl_out_file_in_a_missing_folder(
    trisa_peer_cli: Callable[..., CliResult], ca_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "crls" / "ca.crl"
    out = trisa_peer_cli("ca", "crl", "--ca-dir", ca_dir, "--out", target)
    assert out.returncode == 0, out.stderr
    assert target.is_file() and stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    (tmp_path / "plain").write_text("x")
    refused = trisa_peer_cli("ca", "crl", "--ca-dir", ca_dir, "--out", tmp_path / "plain" / "x")
    assert refused.returncode == 1
    assert "exists and is not a directory" in refused.stderr


# --------------------------------------------------------------------------- revocation


@pytest.mark.parametrize("spelling", ["key compromise", "keyCompromise", "KEY COMPROMISE", "1"])
def test_one_reason_spelling_everywhere(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path, spelling: str
) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", key_size=2048)
    serial = format(ca.issue("r.example", key_size=2048).leaf.serial_number, "x")
    out = trisa_peer_cli("ca", "revoke", "--ca-dir", ca.directory, "--serial", serial,
                         "--reason", spelling)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("(key compromise)")


_UNKNOWN_REASON = "unknown revocation reason 'bogus'; valid reasons: \"unspecified\""


def test_an_unknown_reason_is_refused_before_any_work(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    ca = tmp_path / "missing-ca"  # the reason is checked before anything is opened
    ours = trisa_peer_cli("ca", "revoke", "--ca-dir", ca, "--serial", "01", "--reason", "bogus")
    gds = trisa_peer_cli("gds", "revoke", "--db", tmp_path / "none.db", "--id", "x",
                         "--reason", "bogus")
    for out in (ours, gds):
        assert out.returncode == 1 and _UNKNOWN_REASON in out.stderr, out.stderr
    assert not (tmp_path / "none.db").exists()
    # the twin: a known reason goes on to the (missing) CA and fails there instead
    known = trisa_peer_cli("ca", "revoke", "--ca-dir", ca, "--serial", "01", "--reason",
                           "superseded")
    assert known.returncode == 1 and "no such CA directory" in known.stderr


def test_sectigo_refuses_an_unknown_reason_the_same_way(
    sectigo_cli: Callable[..., CliResult]
) -> None:
    out = sectigo_cli("-e", "http://127.0.0.1:1", "--no-cache", "revoke", "-p", "42",
                      "-r", "bogus", "-s", "01")
    assert out.returncode == 1 and _UNKNOWN_REASON in out.stderr, out.stderr
