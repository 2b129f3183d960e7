"""``trisa-peer status``: what a node started with these options would be working with.

Reads the same flags, ``TRISA_PEER_*`` variables and ``--config`` file as ``serve`` and
prints one line each for:

* identity -- the certificate's common name, serial and SHA-256 fingerprint, and
  whether the node would load it (key matches, chains to the trust pool; see
  :func:`trisa_peer.reload.check_own_identity`);
* expiry -- the end of validity and the days left (a warning within 30 days);
* directory -- whether the directory answers its Status call (one call, the
  ``--directory-timeout`` deadline);
* store -- the transfer store (a URL is shown redacted) and its row count, opened
  without creating anything; without ``--db``: in memory.

Exit 0 when everything is usable; otherwise the report is still printed and one
``error:`` line names the problems (exit 1). Not checked: the running process itself
(this command does not talk to it), the listen address, peers.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..clock import utcnow
from ..errors import ConfigurationError, TrisaPeerError
from ..reload import check_own_identity, days_left, expiry_notice, expiry_problem
from .node import _NODE_OPTIONS, _SERVE_DEFAULTS, _SERVE_OPTIONS, _SERVE_TYPES
from .options import add_directory_args, add_identity_args, apply_config, open_directory, require

__all__ = ["register"]


def register(sub: Any) -> None:
    status = sub.add_parser(
        "status",
        help="show the node's identity, expiry, directory and store (serve's options)",
        description="Show what 'serve' with the same options would work with: its "
        "certificate (CN, serial, fingerprint, days to expiry), whether the directory "
        "answers, and the transfer store. Exit 1 if any of them is not usable.",
    )
    status.add_argument("--listen", metavar="HOST:PORT", help="(accepted, as for serve)")
    add_identity_args(status)
    add_directory_args(status)
    status.add_argument("--db", metavar="FILE", help="transfer store (default in-memory)")
    status.set_defaults(func=_status)


def _identity(args: argparse.Namespace, problems: list[str]) -> None:
    from ..certs import load_identity
    from ..storage.database import read_password_file
    from ..trust import TrustPool

    require(args, "cert", "trust")
    password_file = getattr(args, "password_file", None)
    if args.password is not None and password_file:
        raise ConfigurationError("give either --password or --password-file, not both")
    try:
        password = read_password_file(password_file) if password_file else args.password
        identity = load_identity(args.cert, key_path=args.key, password=password)
        trust = TrustPool.load(*args.trust)
    except TrisaPeerError as exc:
        print(f"identity:  NOT USABLE: {exc}")
        problems.append("identity")
        return
    leaf, now = identity.leaf, utcnow()
    print(f"identity:  {identity.common_name} serial {leaf.serial_number:#x} "
          f"fingerprint {identity.fingerprint}")
    end = f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    expired = expiry_problem(leaf, now)
    if expired is not None:
        print(f"expiry:    NOT USABLE: {expired}")
        problems.append("expiry")
        return
    notice = expiry_notice(leaf, now)
    left = int(days_left(leaf, now))
    print(f"expiry:    {end} ({left} days left)" + (f"; WARNING: {notice}" if notice else ""))
    try:
        check_own_identity(identity, trust, now)
    except TrisaPeerError as exc:
        print(f"trust:     NOT USABLE: {exc}")
        problems.append("trust")


def _directory(args: argparse.Namespace, problems: list[str]) -> None:
    try:
        directory = open_directory(args)
    except ConfigurationError as exc:
        if not getattr(args, "directory", None):
            raise
        print(f"directory: {args.directory} NOT USABLE: {exc}")
        problems.append("directory")
        return
    try:
        directory.status()
    except TrisaPeerError as exc:
        print(f"directory: {args.directory} UNREACHABLE: {exc}")
        problems.append("directory")
    else:
        print(f"directory: {args.directory} reachable")
    finally:
        close = getattr(directory, "close", None)
        if close is not None:
            close()


def _store(args: argparse.Namespace, problems: list[str]) -> None:
    from ..storage.database import open_database
    from ..storage.url import parse_url, redact

    if not args.db:
        print("store:     in memory (no --db): transfers are lost at restart")
        return
    try:
        url = parse_url(args.db)
    except ConfigurationError as exc:
        print(f"store:     NOT USABLE: {redact(str(exc))}")
        problems.append("store")
        return
    if url.in_memory:
        print("store:     in memory: transfers are lost at restart")
        return
    try:
        db = open_database(url, purpose="transfer store", create=False)
        try:
            row = db.read_one("SELECT COUNT(*) FROM envelopes")
        finally:
            db.close()
    except TrisaPeerError as exc:
        print(f"store:     {url.display} NOT USABLE: {redact(str(exc))}")
        problems.append("store")
        return
    count = int(row[0]) if row is not None else 0
    print(f"store:     {url.display} ({url.backend}): {count} envelope rows")


def _status(args: argparse.Namespace) -> int:
    apply_config(args, [*_NODE_OPTIONS, *_SERVE_OPTIONS], types=_SERVE_TYPES,
                 defaults=_SERVE_DEFAULTS)
    require(args, "cert", "trust", "directory")
    problems: list[str] = []
    _identity(args, problems)
    _directory(args, problems)
    _store(args, problems)
    if problems:
        raise ConfigurationError(f"status: not usable: {', '.join(problems)}")
    return 0
