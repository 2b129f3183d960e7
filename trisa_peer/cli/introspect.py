"""Walk the argparse parsers of both CLIs: every command and every option, with the
environment variable and config-file (TOML) key that also set it.

Used by ``tests/test_cli_names.py`` (one name per concept) and by
``scripts/gen_config_ref.py`` (docs/config.md, checked by
``tests/test_config_reference.py``).

Where the environment and ``--config`` come from (the one place that says so):

* commands that call :func:`.options.apply_config` (:data:`CONFIG_COMMANDS`, built from
  the option lists of cli/node.py): each listed option is also ``TRISA_PEER_<DEST>`` and
  the TOML key ``<dest>``;
* a few options read one variable only (:data:`ENV_ONLY`): ``--directory``, the
  server timeouts, ``--directory-id``, ``gds --sectigo-endpoint``;
* the ``sectigo`` CLI keeps upstream's ``SECTIGO_*`` variables (:data:`UPSTREAM_ENV`).

Not checked here: that the code behind a command really reads what this module says
(the tests of each command do that); this module only reports it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .options import ENV_ALIASES

__all__ = [
    "CONFIG_COMMANDS",
    "ENV_ONLY",
    "UPSTREAM_ENV",
    "OptionDoc",
    "clean_environment",
    "collect",
    "config_commands",
    "env_scheme_violations",
    "reference_text",
    "render",
    "walk",
]

#: trisa-peer options that read one environment variable but no config-file key
ENV_ONLY: dict[str, str] = {
    "directory": "TRISA_PEER_DIRECTORY",
    "directory_id": "TRISA_PEER_DIRECTORY_ID",
    "handshake_timeout": "TRISA_PEER_HANDSHAKE_TIMEOUT",
    "idle_timeout": "TRISA_PEER_IDLE_TIMEOUT",
    "sectigo_endpoint": "SECTIGO_ENDPOINT",
}
#: options of the ``sectigo`` CLI's top level that read upstream's variables
UPSTREAM_ENV: dict[str, str] = {
    "username": "SECTIGO_USERNAME",
    "password": "SECTIGO_PASSWORD",
    "endpoint": "SECTIGO_ENDPOINT",
}
#: defaults applied by the code after parsing (argparse sees None): dest -> value
def _runtime_defaults() -> dict[str, Any]:
    from ..limits import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT
    from . import node, options

    return {"directory_timeout": options._DEFAULT_DIRECTORY_TIMEOUT,
            "handshake_timeout": DEFAULT_HANDSHAKE_TIMEOUT,
            "idle_timeout": DEFAULT_IDLE_TIMEOUT, "policy": node.DEFAULT_POLICY,
            "retention_days": "keep everything"}


#: environment prefixes the parsers read while they are built (defaults); cleared by
#: :func:`clean_environment` so that the reference does not depend on who runs it
_PREFIXES = ("TRISA_PEER_", "SECTIGO_", "TRISA_DIRECTORY", "GDS_DIRECTORY_ID")

#: what ``--config`` sets, per command path: filled lazily by :func:`config_commands`
CONFIG_COMMANDS: dict[tuple[str, ...], tuple[list[str], dict[str, Any]]] = {}


def config_commands() -> dict[tuple[str, ...], tuple[list[str], dict[str, Any]]]:
    """``{command path: (option dests, defaults)}`` of the trisa-peer commands that call
    ``apply_config`` (the lists cli/node.py and cli/status.py pass to it)."""
    if not CONFIG_COMMANDS:
        from . import node

        serve = [*node._NODE_OPTIONS, *node._SERVE_OPTIONS]
        CONFIG_COMMANDS.update({
            ("serve",): (serve, dict(node._SERVE_DEFAULTS)),
            ("status",): (serve, dict(node._SERVE_DEFAULTS)),
            ("check",): (list(node._NODE_OPTIONS), {}),
            ("send",): (list(node._NODE_OPTIONS), {}),
            ("transfers", "resend"): (list(node._NODE_OPTIONS), {}),
        })
    return CONFIG_COMMANDS


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
         ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under ``parser`` (sub-commands, recursively), once each."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # an alias (profile/profiles) is the same parser
                    seen.add(id(sub))
                    yield from walk(sub, (*path, name))


@contextmanager
def clean_environment() -> Iterator[None]:
    """Without the variables the parsers read while being built (restored after)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(_PREFIXES)}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


@dataclass(frozen=True)
class OptionDoc:
    """One option (or positional) of one command as the reference shows it."""

    command: str  # "trisa-peer serve"
    dest: str
    flags: tuple[str, ...]  # public spellings; a positional: its metavar
    aliases: tuple[str, ...] = ()  # hidden old spellings (still accepted)
    env: str | None = None
    env_old: tuple[str, ...] = ()
    toml: str | None = None
    default: str = "—"
    help: str = ""
    hidden: bool = False  # accepted but not shown by --help (and not an alias)
    positional: bool = False


def _spelling(action: argparse.Action) -> str:
    if action.option_strings:
        return ", ".join(action.option_strings)
    return f"positional {action.metavar or action.dest}"


def _registered_defaults(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Defaults :func:`.options.add_option` applies after parsing (argparse sees None)."""
    found: dict[str, Any] = {}
    for key, items in parser._defaults.items():
        if key.startswith("_cli_defaults_") and isinstance(items, list):
            found.update(dict(items))
    return found


def _shown_default(value: Any) -> str:
    if value is None or value is argparse.SUPPRESS or value == [] or value == "":
        return "—"
    if value is False:
        return "off"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)


def _env_for(cli: str, path: tuple[str, ...], dest: str,
             config: list[str]) -> tuple[str | None, str | None]:
    """(environment variable, TOML key) of option ``dest`` of command ``path``."""
    if cli == "sectigo":
        return (UPSTREAM_ENV.get(dest) if not path else None), None
    if dest in config:
        return f"TRISA_PEER_{dest.upper()}", dest
    return ENV_ONLY.get(dest), None


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help:
        return ""
    text = parser._get_formatter()._expand_help(action)
    return " ".join(text.split())


def collect(cli: str, parser: argparse.ArgumentParser) -> list[OptionDoc]:
    """Every option of every command of ``parser`` (the CLI named ``cli``), in parser
    order; ``--help`` and ``--version`` are left out."""
    docs: list[OptionDoc] = []
    commands = config_commands() if cli == "trisa-peer" else {}
    runtime = _runtime_defaults() if cli == "trisa-peer" else {}
    for path, p in walk(parser):
        where = " ".join((cli, *path))
        config, config_defaults = commands.get(path, ([], {}))
        later = _registered_defaults(p)
        public = [a for a in p._actions
                  if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction,
                                        argparse._VersionAction))]
        aliases: dict[str, list[str]] = {}
        hidden: list[argparse.Action] = []
        shown: list[argparse.Action] = []
        for action in public:
            if action.help != argparse.SUPPRESS:
                shown.append(action)
            elif action.dest.startswith("_old_"):
                owner = max((a.dest for a in public if action.dest.startswith(
                    f"_old_{a.dest}_") and a.help != argparse.SUPPRESS), key=len, default="")
                if owner:
                    aliases.setdefault(owner, []).append(_spelling(action))
                else:
                    hidden.append(action)
            else:
                hidden.append(action)
        for action in [*shown, *hidden]:
            dest = action.dest
            env, toml = _env_for(cli, path, dest, config)
            default = action.default
            if default is None:
                default = later.get(dest, config_defaults.get(dest, runtime.get(dest)))
            if isinstance(action, argparse._StoreTrueAction) and default is None:
                default = False
            docs.append(OptionDoc(
                command=where, dest=dest,
                flags=tuple(action.option_strings) or (str(action.metavar or dest),),
                aliases=tuple(aliases.get(dest, ())), env=env,
                env_old=ENV_ALIASES.get(env, ()) if env else (), toml=toml,
                default=_shown_default(default), help=_help(p, action),
                hidden=action in hidden, positional=not action.option_strings,
            ))
    return docs


def env_scheme_violations(cli: str, docs: list[OptionDoc]) -> list[str]:
    """Environment variables that break the one scheme: ``TRISA_PEER_<DEST>`` for
    trisa-peer (``SECTIGO_<NAME>`` for its ``--sectigo-*`` options, upstream's
    variables), ``SECTIGO_<DEST>`` for the sectigo CLI."""
    found = []
    for doc in docs:
        if doc.env is None:
            continue
        if cli == "sectigo":
            expected = f"SECTIGO_{doc.dest.upper()}"
        elif doc.dest.startswith("sectigo_"):
            expected = f"SECTIGO_{doc.dest.removeprefix('sectigo_').upper()}"
        else:
            expected = f"TRISA_PEER_{doc.dest.upper()}"
        if doc.env != expected:
            found.append(f"{doc.command} {doc.flags[0]}: ${doc.env} (the scheme gives "
                         f"${expected})")
        if doc.toml is not None and doc.toml != doc.dest:
            found.append(f"{doc.command} {doc.flags[0]}: TOML key {doc.toml} (the scheme "
                         f"gives {doc.dest})")
    return found


# --------------------------------------------------------------------------- docs/config.md

_HEADER = """\
# Configuration reference

Generated by `make config-ref` (`scripts/gen_config_ref.py`) from the parsers of both
commands; `tests/test_config_reference.py` fails when this file and the parsers disagree.
Do not edit by hand: change the option's help text and regenerate.

Precedence (`trisa-peer serve`, `status`, `check`, `send`, `transfers resend`): the
command-line flag, then the environment variable, then the key of the TOML file given
with `--config`, then the default. The TOML keys are the long flags with `_` for `-`
(`directory_timeout = 10`; `directory-timeout` works too); list options take a TOML
list or a comma-separated variable. One scheme for variables: `TRISA_PEER_<OPTION>`;
old names still read (the new one wins, with a warning) are given as "old:". The
`sectigo` command keeps upstream's `SECTIGO_*` variables. "—": none. Hidden spellings
are old names still accepted but not shown by `--help` (docs/cli.md). Variables
without a flag: `$SECTIGO_USERNAME` and `$SECTIGO_PASSWORD` are also the Sectigo
credentials of `trisa-peer gds` (issuing) and `trisa-peer csr`.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "—"


def _code(text: str) -> str:
    return f"`{text}`"


def render(sections: list[tuple[str, list[OptionDoc]]]) -> str:
    """docs/config.md from the options of each CLI: one table per command (commands
    without options are listed with "no options of their own")."""
    out = [_HEADER]
    for _cli, docs in sections:
        commands: dict[str, list[OptionDoc]] = {}
        for doc in docs:
            commands.setdefault(doc.command, []).append(doc)
        for command, options in commands.items():
            out.append(f"\n## `{command}`\n")
            out.append("| Option | Environment | TOML key | Default | Meaning |")
            out.append("|---|---|---|---|---|")
            for doc in options:
                flag = " ".join(_code(f) for f in doc.flags)
                if doc.positional:
                    flag += " (positional)"
                if doc.aliases:
                    flag += " (hidden: " + ", ".join(_code(a) for a in doc.aliases) + ")"
                if doc.hidden:
                    flag += " (hidden)"
                env = _code(f"${doc.env}") if doc.env else "—"
                if doc.env_old:
                    env += " (old: " + ", ".join(_code(f"${o}") for o in doc.env_old) + ")"
                toml = _code(doc.toml) if doc.toml else "—"
                default = _code(doc.default) if doc.default != "—" else "—"
                out.append(f"| {flag} | {env} | {toml} | {_cell(default)} | "
                           f"{_cell(doc.help)} |")
    return "\n".join(out) + "\n"


def reference_text() -> str:
    """The text docs/config.md must hold: both CLIs, built without the environment
    variables their defaults read."""
    from . import main as trisa_main
    from . import sectigo as sectigo_main

    with clean_environment():
        trisa, sectigo = trisa_main.build_parser(), sectigo_main.build_parser()
        sections = [("trisa-peer", collect("trisa-peer", trisa)),
                    ("sectigo", collect("sectigo", sectigo))]
    return render(sections)
