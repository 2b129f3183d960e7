"""The ``sectigo`` command: the Sectigo IoT Manager API from a shell, and a local
Sectigo-compatible service (``sectigo serve``).

Global options go *before* the command (``-p`` is also a command option)::

    sectigo -u USER -p PASSWORD [-e ENDPOINT] COMMAND [options]

``SECTIGO_USERNAME``, ``SECTIGO_PASSWORD`` and ``SECTIGO_ENDPOINT`` supply the
defaults (endpoint ``https://iot.sectigo.com``). Tokens are cached in
``${XDG_CACHE_HOME:-~/.cache}/trisa/sectigo/credentials.json`` (0600; keyed by
endpoint and username, never the password): tokens cached for one user are never used
for another. ``sectigo auth`` always logs in with the password when one is given (a
wrong password fails with the 401 message and forgets that user's cached tokens).
Replies are printed as JSON with a 2-space indent. The only secret ever printed is a
generated PKCS#12 password (``pkcs12 password: X``). ``-v`` logs each request
(method, path, status) on stderr; ``-vv`` logs everything at debug level.

``create -a N`` takes an authority id, or else (as the TRISA guide's ``-a 42``) the
profile id of exactly one enabled authority (``profile 42 -> authority 1`` on stderr).
A wrong id or profile is refused with the authorities and profiles that exist.

Option names follow docs/cli.md, shared with ``trisa-peer``: ``serve --listen`` (old
``--addr``/``-a``), ``download -o/--out`` (old ``--outdir``), ``find``/``revoke``
``-s/--serial`` (old ``--serial-number``), ``-e/--endpoint`` (old ``--url``); the old
spellings still work, hidden from ``--help``. Every short flag of the TRISA guide is
unchanged. ``download`` treats its folder as every output folder: created 0700 once
the archive has arrived, a path that is not a folder refused before any request.

Errors: one line ``sectigo: error: ...`` on stderr and exit status 1; usage errors
show the sub-command's usage and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import string
import sys
import threading
import zipfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from ..errors import ConfigurationError, SectigoError, UsageError
from ..sectigo.client import DEFAULT_TIMEOUT, SectigoClient, normalize_serial
from ..sectigo.models import DEFAULT_ENDPOINT
from ..sectigo.tokens import default_cache_path
from .observe import add_log_format_arg
from .options import (
    REASON_HELP,
    add_option,
    check_output_dir,
    host_port_arg,
    revocation_reason,
    spelled,
)
from .runner import run

__all__ = ["build_parser", "main"]

PROG = "sectigo"

#: upstream's character set for generated PKCS#12 passwords
_PASSWORD_CHARS = string.ascii_letters + string.digits + "#$%&*-<>~"
_PASSWORD_LENGTH = 16

#: defaults the GDS applies to subject parameters a profile may require
_SUBJECT_DEFAULTS = {
    "organizationName": ("organization", "TRISA Member VASP"),
    "localityName": ("locality", "Menlo Park"),
    "stateOrProvinceName": ("state", "California"),
    "countryName": ("country", "US"),
}


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2))


def _client(args: argparse.Namespace, *, warn_cache_errors: bool = True) -> SectigoClient:
    return SectigoClient(
        args.endpoint,
        args.username or None,
        args.password or None,
        cache_path=False if args.no_cache else None,
        timeout=args.timeout,
        warn_cache_errors=warn_cache_errors,
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _authority_text(auth: dict[str, Any]) -> str:
    state = "enabled" if auth.get("enabled", True) else "disabled"
    name = auth.get("profileName")
    label = f" {json.dumps(name)}" if isinstance(name, str) and name else ""
    return f"{auth.get('id')} (profile {auth.get('profileId')}{label}, {state})"


def _what_exists(client: SectigoClient) -> str:
    """``authorities: 1 (profile 42 "TRISA Profile", enabled); profiles: 42``.

    Best effort, for error messages: an empty string when the lists cannot be read.
    """
    try:
        authorities = [a for a in client.authorities() if isinstance(a, dict)]
        profile_ids = {p.get("profileId") for p in client.profiles() if isinstance(p, dict)}
    except SectigoError:
        return ""
    profile_ids |= {a.get("profileId") for a in authorities}
    ids = sorted(str(p) for p in profile_ids if isinstance(p, int) and not isinstance(p, bool))
    auth_text = ", ".join(_authority_text(a) for a in authorities) or "none"
    return f"authorities: {auth_text}; profiles: {', '.join(ids) or 'none'}"


def _not_found_lists_what_exists(
    func: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A 404 for a wrong id says which authorities and profiles exist."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except SectigoError as exc:
            if exc.status != 404:
                raise
            exists = _what_exists(_client(args, warn_cache_errors=False))
            if not exists:
                raise
            raise SectigoError(f"{exc}; {exists}", status=exc.status) from exc

    return wrapper


def _names_the_local_service(
    func: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """An unreachable endpoint: say how to point the CLI at the local service."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except SectigoError as exc:
            text = str(exc)
            if exc.status != 0 or not ("cannot reach endpoint" in text
                                       or "did not answer within" in text):
                raise
            raise SectigoError(
                f"{text} (for the local service started by `sectigo serve`, "
                f"set SECTIGO_ENDPOINT=http://127.0.0.1:8831 or pass -e URL)",
                status=exc.status,
            ) from exc

    return wrapper


def _resolve_authority(client: SectigoClient, ident: int) -> int:
    """``-a N``: an authority id, else the profile id of exactly one enabled authority.

    The TRISA guide prints ``-a 42`` (a profile id) and says the flag "should be a
    profile id"; an authority id is tried first so that existing scripts keep working.
    """
    authorities = [a for a in client.authorities() if isinstance(a, dict)]
    if any(a.get("id") == ident for a in authorities):
        return ident
    users = [a for a in authorities
             if a.get("profileId") == ident and a.get("enabled", True)
             and isinstance(a.get("id"), int)]
    if len(users) == 1:
        aid = int(users[0]["id"])
        print(f"profile {ident} -> authority {aid}", file=sys.stderr)
        return aid
    exists = _what_exists(client)
    if users:
        raise ConfigurationError(
            f"-a {ident}: profile {ident} is used by several enabled authorities "
            f"({', '.join(str(a['id']) for a in users)}); give the authority id; {exists}"
        )
    raise ConfigurationError(
        f"-a {ident} is neither an authority id nor the profile of an enabled "
        f"authority; {exists}"
    )


# --------------------------------------------------------------------------- commands


def cmd_auth(args: argparse.Namespace) -> int:
    if args.cache:
        path = default_cache_path()
        print(path if path.is_file() else "no credentials cache file exists")
        return 0
    # the outcome of caching is reported below, in one line, instead of a log warning
    client = _client(args, warn_cache_errors=False)
    creds = client.credentials
    if args.debug:  # no network
        if creds.valid():
            print(f"credentials are valid until {_iso(creds.expires_at)}")
        elif creds.current():
            print(f"credentials are current until {_iso(creds.refresh_by)}")
        else:
            print("credentials are expired or invalid")
        return 0
    if client.has_password:
        # always check the password: cached tokens prove nothing about it
        client.authenticate()
    else:
        client.ensure_authenticated()  # cached tokens only: refresh when needed
    if client.cache_path is None:
        print("user authenticated")
    elif client.cache_error:
        print(f"user authenticated, but the credentials could not be cached: "
              f"{client.cache_error}")
    else:
        print("user authenticated and credentials cached")
    return 0


def cmd_authorities(args: argparse.Namespace) -> int:
    client = _client(args)
    authorities = client.authorities()
    _print_json(authorities)
    if args.balances:
        balances: dict[str, int] = {}
        for auth in authorities:
            aid = auth.get("id")
            if isinstance(aid, int) and not isinstance(aid, bool):
                balances[str(aid)] = client.balance(aid)
        _print_json(balances)
    return 0


def cmd_licenses(args: argparse.Namespace) -> int:
    _print_json(_client(args).licenses())
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    if args.params and args.id is None:
        raise UsageError("--params needs a profile --id")
    client = _client(args)
    if args.id is None:
        _print_json(client.profiles())
    elif args.params:
        _print_json(client.profile_params(args.id))
    else:
        _print_json(client.profile_detail(args.id))
    return 0


def cmd_organization(args: argparse.Namespace) -> int:
    _print_json(_client(args).organization())
    return 0


def _profile_param_names(client: SectigoClient, authority_id: int) -> list[str] | None:
    """The parameter names the authority's profile takes, or ``None`` if unknown."""
    try:
        for auth in client.authorities():
            if auth.get("id") == authority_id and isinstance(auth.get("profileId"), int):
                params = client.profile_params(int(auth["profileId"]))
                return [str(p.get("name")) for p in params if isinstance(p, dict)]
    except SectigoError as exc:
        if exc.status in (0, 401, 403):
            raise
    return None


def cmd_create(args: argparse.Namespace) -> int:
    domain = args.domain.strip()
    if not domain:
        raise UsageError("--domain must not be empty")
    client = _client(args)
    authority = _resolve_authority(client, args.authority)
    generated = not args.pkcs12_password
    password = args.pkcs12_password or "".join(
        secrets.choice(_PASSWORD_CHARS) for _ in range(_PASSWORD_LENGTH)
    )
    dns = [domain, *(d.strip() for d in args.dns_name or () if d.strip())]
    params: dict[str, str] = {
        "commonName": domain,
        "dNSName": "\n".join(dict.fromkeys(dns)),
        "pkcs12Password": password,
    }
    names = _profile_param_names(client, authority)
    for param, (attr, default) in _SUBJECT_DEFAULTS.items():
        given = getattr(args, attr)
        if names is None:
            if given:
                params[param] = given
        elif param in names:
            params[param] = given or default
        elif given:
            raise ConfigurationError(
                f"the profile of authority {authority} does not take {param}"
            )
    batch_name = args.batch_name or f"new certs for {domain}"
    batch = client.create_single_cert_batch(authority, batch_name, params)
    if generated:
        print(f"pkcs12 password: {password}")
    _print_json(batch)
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
    if not data.strip():
        raise ConfigurationError(f"{path} is empty")
    _print_json(_client(args).upload_csr(args.profile, path.name, data))
    return 0


def cmd_batches(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.status:
        print(client.batch_status(args.id))
    elif args.info:
        _print_json(client.processing_info(args.id))
    else:
        _print_json(client.batch_detail(args.id))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    outdir = check_output_dir(args.out)  # before any network traffic
    # a missing folder is created (0700) once the archive has arrived
    path = _client(args).download(args.id, outdir, make_dirs=True)
    print(f"downloaded batch {args.id} to {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.lower().endswith(".p12")]
    except (OSError, zipfile.BadZipFile):
        members = []
    for member in members:
        stem = member[: -len(".p12")]
        print(f"unzip it, then: openssl pkcs12 -in {member} -out {stem}.pem -nodes")
    return 0


def cmd_find(args: argparse.Namespace) -> int:
    if not (args.common_name or args.serial):
        raise UsageError("find needs --common-name or --serial")
    _print_json(_client(args).find(common_name=args.common_name, serial=args.serial))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    reason = revocation_reason(args.reason)  # before any network traffic
    serial = normalize_serial(args.serial)
    _client(args).revoke(args.profile, reason, serial)
    print(f"revoked certificate {serial} (reason: {reason})")
    return 0


#: ``sectigo serve`` options passed to the local service unchanged
_SERVE_OPTIONS = ("issue_delay", "key_size", "legacy_pkcs12", "access_ttl", "refresh_ttl")


def cmd_serve(args: argparse.Namespace) -> int:
    from ..sectigo.emulator import SectigoEmulator

    if not args.username or not args.password:
        raise ConfigurationError(
            "sectigo serve needs credentials: set SECTIGO_USERNAME and SECTIGO_PASSWORD"
        )
    host, port = host_port_arg(spelled(args, "listen", "--listen"), args.listen)
    emulator = SectigoEmulator(
        ca_dir=args.ca_dir,
        state_path=args.state,
        username=args.username,
        password=args.password,
        **{option: getattr(args, option) for option in _SERVE_OPTIONS},
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, _on_signal)
    url = emulator.start(host, port)
    print(f"sectigo emulator listening on {url} (CA {args.ca_dir}, state {args.state})",
          file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        signal.signal(signal.SIGTERM, previous)
    return 0


# --------------------------------------------------------------------------- parser

#: commands whose "not found" errors list the authorities and profiles that exist
_NOT_FOUND_LISTS = frozenset({"profiles", "upload", "revoke", "create"})



def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Sectigo IoT Manager API client and local Sectigo-compatible service. "
        "Global options go before the command.",
    )
    parser.add_argument("-u", "--username", default=env.get("SECTIGO_USERNAME", ""),
                        help="API user ($SECTIGO_USERNAME)")
    parser.add_argument("-p", "--password", default=env.get("SECTIGO_PASSWORD", ""),
                        help="API password ($SECTIGO_PASSWORD)")
    add_option(parser, "--endpoint", short="-e", aliases=["--url"],
               default=env.get("SECTIGO_ENDPOINT") or DEFAULT_ENDPOINT,
               help=f"API base URL ($SECTIGO_ENDPOINT, default {DEFAULT_ENDPOINT})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds per request (default %(default)s)")
    parser.add_argument("--no-cache", action="store_true",
                        help="do not read or write the token cache")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log requests")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str,
            aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, aliases=list(aliases))
        if name in _NOT_FOUND_LISTS:
            func = _not_found_lists_what_exists(func)
        # usage errors found after parsing are reported with this parser's usage
        p.set_defaults(func=_names_the_local_service(func), command_parser=p)
        return p

    p = add("auth", cmd_auth, "log in (or refresh) and cache the tokens")
    p.add_argument("-C", "--cache", action="store_true", help="print the cache file path")
    p.add_argument("-d", "--debug", action="store_true",
                   help="show the cached tokens' validity (no network)")

    p = add("authorities", cmd_authorities, "list the authorities of the user")
    p.add_argument("-b", "--balances", action="store_true", help="also print balances")

    add("licenses", cmd_licenses, "ordered and issued licenses")

    p = add("profiles", cmd_profiles, "list profiles, or show one", aliases=["profile"])
    p.add_argument("-i", "--id", type=int, help="profile id")
    p.add_argument("-p", "--params", action="store_true", help="the profile's parameters")

    add("organization", cmd_organization, "the user's organization")

    p = add("create", cmd_create, "create a single-certificate batch")
    p.add_argument("-a", "--authority", type=int, required=True,
                   help="authority id, or the profile id of one enabled authority "
                   "(as in the TRISA guide: -a 42)")
    p.add_argument("-d", "--domain", required=True, help="common name and first DNS name")
    p.add_argument("-p", "--password", dest="pkcs12_password", default="",
                   help="PKCS#12 password (generated and printed when omitted)")
    p.add_argument("-b", "--batch-name", default="", help="default: 'new certs for DOMAIN'")
    p.add_argument("-n", "--dns-name", action="append", metavar="NAME",
                   help="extra SAN DNS name (repeatable)")
    p.add_argument("-c", "--country", default="", help="countryName, if the profile takes it")
    p.add_argument("-s", "--state", default="", help="stateOrProvinceName, if taken")
    p.add_argument("-l", "--locality", default="", help="localityName, if taken")
    p.add_argument("-O", "--organization", default="", help="organizationName, if taken")

    p = add("upload", cmd_upload, "upload a file of PEM CSRs as a batch")
    p.add_argument("-p", "--profile", type=int, required=True, help="profile id")
    p.add_argument("file", help="CSR file (one or more PEM CSRs, or a zip)")

    p = add("batches", cmd_batches, "show a batch")
    p.add_argument("-i", "--id", type=int, required=True, help="batch id")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-s", "--status", action="store_true", help="the normalised status")
    g.add_argument("-I", "--info", action="store_true", help="processing info")

    p = add("download", cmd_download, "download a batch's zip")
    p.add_argument("-i", "--id", type=int, required=True, help="batch id")
    add_option(p, "--out", short="-o", aliases=["--outdir"], required=True, metavar="DIR",
               help="output folder (created 0700 when missing)")

    p = add("find", cmd_find, "find certificates by common name and/or serial")
    p.add_argument("-n", "--common-name", default="", help="common name")
    add_option(p, "--serial", short="-s", aliases=["--serial-number"], default="",
               metavar="HEX", help="serial number (hex)")

    p = add("revoke", cmd_revoke, "revoke a certificate")
    p.add_argument("-p", "--profile", type=int, required=True, help="profile id")
    p.add_argument("-r", "--reason", default="unspecified", metavar="TEXT",
                   help=REASON_HELP + " (default unspecified)")
    add_option(p, "--serial", short="-s", aliases=["--serial-number"], required=True,
               metavar="HEX", help="serial number (hex)")

    p = add("serve", cmd_serve, "run a local Sectigo-compatible service "
            "(credentials from SECTIGO_USERNAME / SECTIGO_PASSWORD)")
    add_option(p, "--listen", aliases=["-a", "--addr"], default="127.0.0.1:8831",
               metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:8831)")
    p.add_argument("--ca-dir", required=True, metavar="DIR",
                   help="CA folder (created when empty)")
    p.add_argument("--state", required=True, metavar="FILE", help="state file (JSON)")
    p.add_argument("--issue-delay", type=float, default=0.0,
                   help="seconds a batch stays PROCESSING (default 0)")
    p.add_argument("--legacy-pkcs12", action="store_true",
                   help="legacy (3DES/SHA-1) PKCS#12 downloads, as real Sectigo")
    p.add_argument("--key-size", type=int, default=4096, help="RSA key size (%(default)s)")
    p.add_argument("--access-ttl", type=int, default=900, help="access token seconds")
    add_log_format_arg(p)
    p.add_argument("--refresh-ttl", type=int, default=7200, help="refresh token seconds")
    return parser


def _check_globals(args: argparse.Namespace) -> None:
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")


def main(argv: Sequence[str] | None = None) -> int:
    # -v: requests (INFO: method, path, status); -vv: everything (DEBUG)
    return run(build_parser(), argv, check=_check_globals)


if __name__ == "__main__":
    sys.exit(main())
