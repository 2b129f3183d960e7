"""Options shared by the commands of both CLIs (``trisa-peer`` and ``sectigo``).

One name per concept (the table is docs/cli.md): :func:`add_option` adds an option
under its chosen name and its old spellings as hidden aliases; :func:`finish` (run by
:func:`.runner.run` after parsing) merges them, warns when an old and a new spelling
disagree (the new one wins) and enforces required options. :func:`env_value` does the
same for environment variables (``ENV_ALIASES``). :func:`check_output_dir` and
:func:`make_output_dir` are the one behaviour of every output folder.

Node commands (``serve``, ``check``, ``send``) precedence: command-line flags, then
environment variables (``TRISA_PEER_<OPTION>``, e.g. ``TRISA_PEER_DIRECTORY``), then
the TOML file given with ``--config``, then defaults. The config file holds the same
names as the long flags, with ``_`` for ``-``::

    listen = "0.0.0.0:4000"
    cert = "certs/bob.pem"
    key = "certs/bob.key"
    trust = ["certs/trust.pem"]
    directory = "api.testnet.directory:443"
    db = "bob-transfers.db"
    policy = "rvasp"
    resolve = ["alice.vasp.test:4000:127.0.0.1"]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, UsageError
from ..limits import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    ENV_HANDSHAKE_TIMEOUT,
    ENV_IDLE_TIMEOUT,
    check_seconds,
)
from ..netutil import split_host_port, split_resolve
from ..revocation import REASONS, parse_reason, reason_name

__all__ = [
    "ENV_ALIASES",
    "REASON_HELP",
    "add_directory_args",
    "add_identity_args",
    "add_option",
    "apply_config",
    "check_output_dir",
    "env_value",
    "finish",
    "host_port_arg",
    "load_material",
    "make_output_dir",
    "open_directory",
    "positive_float",
    "positive_int",
    "require",
    "resolve_map",
    "revocation_reason",
    "spelled",
    "warn",
]

_DEFAULT_DIRECTORY_TIMEOUT = 5.0
_LIST_OPTIONS = {"trust", "crl", "resolve"}
_BOOL_OPTIONS = {"directory_insecure"}


# --------------------------------------------------------------------------- one name

#: the chosen environment variable -> its old names, still read (the new one wins)
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "TRISA_PEER_DIRECTORY": ("TRISA_DIRECTORY",),
    "TRISA_PEER_DIRECTORY_ID": ("GDS_DIRECTORY_ID",),
}

_ALIASES = "_cli_aliases"
_REQUIRED = "_cli_required"
_DEFAULTS = "_cli_defaults"
_SPELLED = "_cli_spelled"
_PROG = "_cli_prog"


@dataclass(frozen=True)
class _Alias:
    dest: str
    new: str  # the public spelling
    old: str  # the hidden one, as the user types it
    old_dest: str


def warn(args: argparse.Namespace | None, text: str) -> None:
    """One line ``PROG: warning: TEXT`` on stderr."""
    prog = getattr(args, _PROG, None) or "trisa-peer"
    print(f"{prog}: warning: {text}", file=sys.stderr, flush=True)


def env_value(args: argparse.Namespace | None, name: str) -> str | None:
    """Environment variable ``name``, else its old names in :data:`ENV_ALIASES`.

    When the new and an old name are both set (non-empty) and disagree, the new one
    wins and one warning line says so. The values are never printed (an environment
    variable may hold a password).
    """
    value = os.environ.get(name)
    for old in ENV_ALIASES.get(name, ()):
        old_value = os.environ.get(old)
        if not old_value:
            continue
        if not value:
            value = old_value
        elif old_value != value:
            warn(args, f"${old} and ${name} disagree; using ${name} (${old} is its old name)")
    return value


def _append_default(parser: argparse.ArgumentParser, key: str, items: list[Any]) -> None:
    # One key per parser: a sub-command's defaults replace its parent's in the namespace,
    # and a copy: parsers made with parents= share their parent's default objects.
    key = f"{key}_{id(parser):x}"
    parser.set_defaults(**{key: [*(parser.get_default(key) or []), *items]})


def _registered(args: argparse.Namespace, key: str) -> list[Any]:
    """Every parser's entries under ``key`` (see :func:`_append_default`)."""
    return [item for name, items in sorted(vars(args).items())
            if name.startswith(f"{key}_") and isinstance(items, list) for item in items]


def add_option(
    parser: argparse.ArgumentParser | Any,
    name: str,
    *,
    aliases: Sequence[str] = (),
    positional: str | None = None,
    short: str | None = None,
    required: bool = False,
    default: Any = None,
    **kwargs: Any,
) -> argparse.Action:
    """Add option ``name`` (its one public spelling) and its old spellings.

    ``aliases`` are old option strings, ``positional`` the metavar of an old positional
    form; both are accepted and hidden from ``--help``. :func:`finish` merges them after
    parsing (the new spelling wins over a disagreeing old one, with a warning), applies
    ``default`` and enforces ``required`` (so that an alias can satisfy it). ``short``
    is a public one-letter form (``-o``). ``parser`` may be an argument group; then
    ``owner=`` names the parser that records the aliases. Not checked: that an alias
    does not collide with another option (argparse refuses exact duplicates itself).
    """
    owner = kwargs.pop("owner", parser)
    dest = kwargs.pop("dest", None) or name.lstrip("-").replace("-", "_")
    if default is not None and kwargs.get("help"):
        kwargs["help"] = kwargs["help"].replace("%(default)s", str(default))
    if required and kwargs.get("help"):  # argparse's usage shows it in brackets
        kwargs["help"] = f"{kwargs['help']} (required)"
    flags = [short, name] if short else [name]
    action = parser.add_argument(*flags, dest=dest, default=None, **kwargs)
    same = {k: v for k, v in kwargs.items() if k in ("type", "action", "nargs", "choices")}
    entries: list[_Alias] = []
    for old in aliases:
        old_dest = f"_old_{dest}_{old.lstrip('-').replace('-', '_')}"
        parser.add_argument(old, dest=old_dest, default=None, help=argparse.SUPPRESS, **same)
        entries.append(_Alias(dest, name, old, old_dest))
    if positional is not None:
        old_dest = f"_old_{dest}_positional"
        parser.add_argument(old_dest, nargs="?", default=None, metavar=positional,
                            help=argparse.SUPPRESS, **{k: v for k, v in same.items()
                                                       if k == "type"})
        entries.append(_Alias(dest, name, positional, old_dest))
    _append_default(owner, _ALIASES, entries)
    if required:
        _append_default(owner, _REQUIRED, [(dest, name)])
    if default is not None:
        _append_default(owner, _DEFAULTS, [(dest, default)])
    return action


def _unset(value: Any) -> bool:
    return value is None or value == [] or value is False


def finish(args: argparse.Namespace, prog: str | None = None) -> None:
    """After parsing: take old spellings into their new option, then defaults, then
    check required options (a :class:`UsageError` naming the public spelling)."""
    if prog:
        setattr(args, _PROG, prog)
    spelled: dict[str, str] = getattr(args, _SPELLED, None) or {}
    for alias in _registered(args, _ALIASES):
        old_value = getattr(args, alias.old_dest, None)
        if _unset(old_value):
            continue
        new_value = getattr(args, alias.dest, None)
        if _unset(new_value):
            setattr(args, alias.dest, old_value)
            spelled[alias.dest] = alias.old
        elif new_value != old_value:
            warn(args, f"{alias.old} and {alias.new} disagree; using {alias.new} "
                 f"({alias.old} is its old spelling)")
    setattr(args, _SPELLED, spelled)
    for dest, value in _registered(args, _DEFAULTS):
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)
    missing = [name for dest, name in _registered(args, _REQUIRED)
               if _unset(getattr(args, dest, None)) or getattr(args, dest) == ""]
    if missing:
        raise UsageError(f"the following arguments are required: {', '.join(missing)}")


def spelled(args: argparse.Namespace, dest: str, name: str) -> str:
    """How the user spelled option ``dest`` (an old alias, else ``name``): for messages."""
    return str((getattr(args, _SPELLED, None) or {}).get(dest, name))


# --------------------------------------------------------------------------- outputs


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Before any work: ``path`` can serve as an output folder.

    Every output folder behaves the same way: an existing folder is used as it is; a
    missing one is created later by :func:`make_output_dir` (mode 0700, as
    ``mkdir -p -m 700``) once there is something to write; a path (or a parent) that
    exists and is not a folder is refused here, as is a nearest existing folder that
    cannot be written. Not checked: free space, and races with other processes.
    """
    out = Path(path)
    probe = out
    while not probe.exists() and not probe.is_symlink():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigurationError(f"output path {out} exists and is not a directory"
                                 if probe == out else
                                 f"output path {out}: {probe} exists and is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigurationError(f"{out}: cannot write in {probe}: {exc.strerror}") from exc
    return out


def make_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create the output folder ``path`` with mode 0700 (missing parents with the default
    mode, as ``mkdir -p -m 700``); an existing folder is left as it is (see
    :func:`check_output_dir`)."""
    out = Path(path)
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        pass  # a file in the way: reported below
    except OSError as exc:
        raise ConfigurationError(f"output path {out}: cannot create: {exc.strerror}") from exc
    if not out.is_dir():
        raise ConfigurationError(f"output path {out} exists and is not a directory")
    return out


# --------------------------------------------------------------------------- reasons

#: the one help text of every revocation reason option
REASON_HELP = ("RFC 5280 reason, e.g. \"key compromise\" (case and spaces do not matter; "
               "a code works too): " + ", ".join(f'"{n}"' for n in REASONS.values()))


def revocation_reason(text: str) -> str:
    """The canonical name of a revocation reason typed in any case and spacing (or its
    code); :class:`ConfigurationError` listing the valid names otherwise."""
    return reason_name(parse_reason(text))


def add_identity_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    group = parser.add_argument_group("identity")
    group.add_argument("--config", metavar="FILE", help="TOML file with defaults for these options")
    group.add_argument("--cert", metavar="FILE", help="own certificate chain (PEM, PKCS#12, zip)")
    group.add_argument("--key", metavar="FILE", help="own private key (if not inside --cert)")
    group.add_argument("--password", metavar="TEXT", help="password of a PKCS#12 --cert")
    group.add_argument("--password-file", metavar="FILE",
                       help="file (mode 0600) whose first line is the password of a PKCS#12 "
                       "--cert; re-read at every reload, so a reissue can change it")
    group.add_argument("--trust", metavar="FILE", action="append",
                       help="TRISA trust pool: roots and intermediates (repeatable)")
    group.add_argument("--crl", metavar="FILE", action="append",
                       help="CRL of a TRISA issuing CA to enforce (repeatable)")
    group.add_argument("--resolve", metavar="HOST:PORT:ADDRESS", action="append",
                       help="dial HOST:PORT at ADDRESS instead (curl syntax, repeatable)")
    parser.set_defaults(_identity_required=required)


def add_directory_args(
    parser: argparse.ArgumentParser,
    *,
    timeout_default: float | None = None,
    timeout_aliases: Sequence[str] = (),
) -> None:
    """The options of every command that talks to a directory (GDS) as a client.

    ``--directory`` defaults to ``$TRISA_PEER_DIRECTORY`` (old name
    ``$TRISA_DIRECTORY``), see :func:`open_directory`. ``timeout_aliases`` are old
    spellings of ``--directory-timeout`` (hidden).
    """
    group = parser.add_argument_group("directory")
    group.add_argument("--directory", metavar="HOST:PORT",
                       help="the TRISA directory (GDS) (default: $TRISA_PEER_DIRECTORY)")
    group.add_argument("--directory-insecure", action="store_true", default=None,
                       help="plaintext connection to a loopback development directory")
    group.add_argument("--directory-ca", metavar="FILE",
                       help="CA certificate of a private directory's TLS server")
    shown = timeout_default if timeout_default is not None else _DEFAULT_DIRECTORY_TIMEOUT
    add_option(group, "--directory-timeout", aliases=timeout_aliases, owner=parser,
               metavar="SECONDS", type=positive_float, default=timeout_default,
               help=f"deadline of each directory call (default {shown:g})")


_STRING_OPTIONS = {"listen", "cert", "key", "password", "password_file", "directory",
                   "directory_ca", "db", "db_password_file", "policy"}
_FLOAT_OPTIONS = {"directory_timeout"}
_CHOICES = {"policy": ("review", "rvasp", "accept", "reject")}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _coerce(
    name: str, value: Any, source: str, types: dict[str, Callable[[str], Any]]
) -> Any:
    """Check a config-file or environment value the way argparse checks a flag."""
    where = f"{source}: {name}"
    if name in types:  # the very function argparse checks the flag with
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigurationError(f"{where} must be a number, not {value!r}")
        try:
            return types[name](str(value))
        except argparse.ArgumentTypeError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
    if name in _LIST_OPTIONS:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) and v for v in items):
            raise ConfigurationError(f"{where} must be a list of non-empty strings")
        return items
    if name in _BOOL_OPTIONS:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, str) else None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigurationError(f"{where} must be true or false, not {value!r}")
    if name in _FLOAT_OPTIONS:
        try:
            number = float(value)
        except (TypeError, ValueError):
            message = f"{where} must be a number of seconds, not {value!r}"
            raise ConfigurationError(message) from None
        if number <= 0 or isinstance(value, bool):
            raise ConfigurationError(f"{where} must be a positive number of seconds")
        return number
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where} must be a non-empty string, not {value!r}")
    if name in _CHOICES and value not in _CHOICES[name]:
        choices = ", ".join(_CHOICES[name])
        raise ConfigurationError(f"{where}: invalid choice {value!r} (choose from {choices})")
    return value


def apply_config(
    args: argparse.Namespace,
    names: list[str],
    *,
    types: dict[str, Callable[[str], Any]] | None = None,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Fill unset options from the environment, then from ``--config``, then from
    ``defaults``; check each value (options in ``types`` with their argparse type).

    Config keys may use the flag spelling (``directory-insecure``) or ``_``.
    """
    types = types or {}
    config: dict[str, Any] = {}
    path = Path(args.config) if getattr(args, "config", None) else None
    if path is not None:
        import tomllib  # --config only

        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot read config: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{path}: invalid TOML: {exc}") from exc
        config = {key.replace("-", "_"): value for key, value in raw.items()}
        unknown = sorted(set(config) - set(names))
        if unknown:
            raise ConfigurationError(
                f"{path}: unknown option(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(names))})"
            )
    for name in names:
        if getattr(args, name, None) not in (None, []):
            continue
        env_name = f"TRISA_PEER_{name.upper()}"
        env = env_value(args, env_name)
        if env is not None:
            value: Any = [v for v in env.split(",") if v] if name in _LIST_OPTIONS else env
            setattr(args, name, _coerce(name, value, env_name, types))
        elif name in config:
            setattr(args, name, _coerce(name, config[name], str(path), types))
        elif defaults and name in defaults:
            setattr(args, name, defaults[name])


def _number(
    text: str, convert: Callable[[str], Any], kind: str, *, zero: bool = False
) -> Any:
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise argparse.ArgumentTypeError(
            f"must be {'zero or ' if zero else ''}positive: {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse ``type`` for a positive integer option."""
    return int(_number(text, int, "an integer"))


def positive_float(text: str) -> float:
    """An argparse ``type`` for a positive number option."""
    return float(_number(text, float, "a number"))


def count(text: str) -> int:
    """An argparse ``type`` for a whole number >= 0."""
    return int(_number(text, int, "an integer", zero=True))


def non_negative_float(text: str) -> float:
    """An argparse ``type`` for a number >= 0 (0 usually means "off")."""
    return float(_number(text, float, "a number", zero=True))


def require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n, None)]
    if missing:
        raise UsageError(f"missing required option(s): {', '.join(missing)}")


def host_port_arg(flag: str, text: str) -> tuple[str, int]:
    """A listener's ``HOST:PORT`` option (port 0: any free port); the error names ``flag``."""
    try:
        return split_host_port(text, allow_port_zero=True)
    except ValueError as exc:
        hint = " (give 0.0.0.0:PORT to listen on every interface)" if text.strip().startswith(
            ":") else ""
        raise ConfigurationError(f"{flag} {text!r} is not HOST:PORT: {exc}{hint}") from None


def resolve_map(specs: list[str] | None) -> dict[str, str]:
    resolved: dict[str, str] = {}
    for spec in specs or []:
        try:
            name, address = split_resolve(spec)
        except ValueError:
            raise UsageError(f"--resolve {spec!r} must be HOST:PORT:ADDRESS") from None
        resolved[name] = address
    return resolved


def open_directory(args: argparse.Namespace, **client_options: Any) -> Any:
    """A DirectoryClient from the options of :func:`add_directory_args`; keyword
    arguments go to :class:`~trisa_peer.directory.client.DirectoryClient`."""
    from ..directory.client import DirectoryClient

    if not getattr(args, "directory", None):
        args.directory = env_value(args, "TRISA_PEER_DIRECTORY") or None
    if not args.directory:
        raise UsageError("--directory HOST:PORT (or $TRISA_PEER_DIRECTORY) is required")
    ca_pem = None
    if getattr(args, "directory_ca", None):
        try:
            ca_pem = Path(args.directory_ca).read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"{args.directory_ca}: cannot read directory CA: {exc.strerror or exc}"
            ) from exc
    return DirectoryClient(
        args.directory,
        insecure=bool(args.directory_insecure),
        ca_pem=ca_pem,
        timeout=float(getattr(args, "directory_timeout", None) or _DEFAULT_DIRECTORY_TIMEOUT),
        **client_options,
    )


def load_material(args: argparse.Namespace) -> Any:
    from ..transport.identity import FileMaterial

    require(args, "cert", "trust")
    password_file = getattr(args, "password_file", None)
    if args.password is not None and password_file:
        raise UsageError("give either --password or --password-file, not both")
    crl_source = None
    if getattr(args, "crl_fetch", False):  # node serve --crl-fetch
        from ..crlfetch import CrlFetcher

        crl_source = CrlFetcher(interval=args.crl_fetch_interval)
    return FileMaterial(args.cert, args.key, args.trust, crl=args.crl or (),
                        password=args.password, password_file=password_file,
                        crl_source=crl_source)


def seconds_flag(what: str, *, allow_zero: bool) -> Callable[[str], float]:
    """An argparse ``type`` for a server timeout in seconds (:func:`limits.check_seconds`)."""
    def parse(text: str) -> float:
        try:
            return check_seconds(text, what, allow_zero=allow_zero)
        except ConfigurationError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def add_limit_args(parser: argparse.ArgumentParser) -> None:
    """``--handshake-timeout`` and ``--idle-timeout`` for a server command."""
    parser.add_argument(
        "--handshake-timeout", type=seconds_flag("handshake timeout", allow_zero=False),
        metavar="SECONDS",
        help=f"close connections that have not finished TLS within this time (default "
        f"${ENV_HANDSHAKE_TIMEOUT} or {DEFAULT_HANDSHAKE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--idle-timeout", type=seconds_flag("idle timeout", allow_zero=True), metavar="SECONDS",
        help=f"close connections with no call for this long, 0 for never (default "
        f"${ENV_IDLE_TIMEOUT} or {DEFAULT_IDLE_TIMEOUT:g})",
    )
