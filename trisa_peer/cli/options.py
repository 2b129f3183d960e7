"""Options shared by the node commands (``serve``, ``check``, ``send``).

Precedence: command-line flags, then environment variables (``TRISA_PEER_<OPTION>``,
e.g. ``TRISA_PEER_DIRECTORY``), then the TOML file given with ``--config``, then defaults.
The config file holds the same names as the long flags, with ``_`` for ``-``::

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
import tomllib
from collections.abc import Callable
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

__all__ = [
    "add_directory_args",
    "add_identity_args",
    "apply_config",
    "host_port_arg",
    "load_material",
    "open_directory",
    "positive_float",
    "positive_int",
    "require",
    "resolve_map",
]

_DEFAULT_DIRECTORY_TIMEOUT = 5.0
_LIST_OPTIONS = {"trust", "crl", "resolve"}
_BOOL_OPTIONS = {"directory_insecure"}


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
    env: str | None = None,
    timeout_flag: str = "--directory-timeout",
    timeout_type: Callable[[str], float] = float,
    timeout_default: float | None = None,
) -> None:
    """The options of every command that talks to a directory (GDS) as a client.

    ``env`` names an environment variable that supplies ``--directory``;
    ``timeout_flag`` is how the command spells the per-call deadline (stored as
    ``directory_timeout`` whatever its spelling). See :func:`open_directory`.
    """
    group = parser.add_argument_group("directory")
    default = f" (default: ${env})" if env else ""
    group.add_argument("--directory", metavar="HOST:PORT",
                       help=f"the TRISA directory (GDS){default}")
    group.add_argument("--directory-insecure", action="store_true", default=None,
                       help="plaintext connection to a loopback development directory")
    group.add_argument("--directory-ca", metavar="FILE",
                       help="CA certificate of a private directory's TLS server")
    shown = timeout_default if timeout_default is not None else _DEFAULT_DIRECTORY_TIMEOUT
    group.add_argument(timeout_flag, dest="directory_timeout", metavar="SECONDS",
                       type=timeout_type, default=timeout_default,
                       help=f"deadline of each directory call (default {shown:g})")
    parser.set_defaults(directory_env=env)


_STRING_OPTIONS = {"listen", "cert", "key", "password", "password_file", "directory",
                   "directory_ca", "db", "policy"}
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
        env = os.environ.get(env_name)
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

    env = getattr(args, "directory_env", None)
    if not getattr(args, "directory", None) and env:
        args.directory = os.environ.get(env) or None
        if not args.directory:
            raise UsageError(f"--directory HOST:PORT (or ${env}) is required")
    require(args, "directory")
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
    return FileMaterial(args.cert, args.key, args.trust, crl=args.crl or (),
                        password=args.password, password_file=password_file)


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
