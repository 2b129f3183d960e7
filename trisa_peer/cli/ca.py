"""``trisa-peer ca``: run a local TRISA CA from the command line.

::

    trisa-peer ca init     --ca-dir DIR [--name CN] [--key-size N]
    trisa-peer ca issue    --ca-dir DIR --common-name CN [--dns-name NAME]... [--out DIR]
                           [--key-size N] [--days N] [--force]
    trisa-peer ca sign-csr --ca-dir DIR FILE.csr [--out FILE] [--days N] [--force]
    trisa-peer ca revoke   --ca-dir DIR --serial HEX [--reason TEXT]
    trisa-peer ca crl      --ca-dir DIR --out FILE [--der] [--next-update-days N]
    trisa-peer ca list     --ca-dir DIR

Output folders (``--out DIR``, the folder of ``--out FILE``) that do not exist are
created (0700) once there is something to write; a path that is not a folder is
refused before anything is issued. Old spellings (``--dir``, a positional COMMON_NAME)
still work (docs/cli.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from .. import certs
from ..ca import CertificateAuthority
from ..certs import cert_to_pem, certs_to_pem, format_serial
from ..errors import ConfigurationError
from ..fsutil import atomic_write, write_private
from .options import (
    REASON_HELP,
    add_option,
    check_output_dir,
    make_output_dir,
    positive_int,
    revocation_reason,
)

__all__ = ["parse_serial", "register"]


def parse_serial(text: str) -> int:
    """A serial number in hex: ``0x1A2B``, ``1a2b`` or ``1A:2B`` (spaces ignored)."""
    try:
        return certs.parse_serial(text)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _open(args: argparse.Namespace) -> CertificateAuthority:
    """The CA in ``--ca-dir``; the error of a folder that is not one says how to make one."""
    try:
        return CertificateAuthority.open(args.ca_dir)
    except ConfigurationError as exc:
        if Path(args.ca_dir).is_dir() and CertificateAuthority.missing_files(args.ca_dir):
            raise ConfigurationError(f"{exc}; create one with 'trisa-peer ca init'") from exc
        raise


def _refuse_existing(paths: list[Path], force: bool) -> None:
    if force:
        return
    for path in paths:
        if path.exists():
            raise ConfigurationError(f"{path} already exists; use --force to overwrite it")


# --------------------------------------------------------------------------- commands


def _cmd_init(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.init(args.ca_dir, name=args.name, key_size=args.key_size)
    print(f"created CA in {ca.directory}")
    for label, cert in (("root:   ", ca.root), ("issuing:", ca.issuing)):
        serial = format_serial(cert.serial_number)
        print(f"  {label} {cert.subject.rfc4514_string()} (serial {serial})")
    return 0


def _cmd_issue(args: argparse.Namespace) -> int:
    ca = _open(args)
    cn = args.common_name.strip()
    if not cn or "/" in cn or cn in {".", ".."}:
        raise ConfigurationError(f"unusable common name for a file name: {args.common_name!r}")
    out = check_output_dir(args.out)  # before issuing: nothing recorded for files never written
    pem_path, key_path = out / f"{cn}.pem", out / f"{cn}.key"
    _refuse_existing([pem_path, key_path], args.force)
    identity = ca.issue(cn, dns_names=args.dns_name, key_size=args.key_size, days=args.days)
    make_output_dir(out)
    write_private(key_path, identity.key_pem())
    atomic_write(pem_path, identity.chain_pem())
    print(f"issued {cn} serial {format_serial(identity.leaf.serial_number)}")
    print(f"  certificate: {pem_path}")
    print(f"  key:         {key_path}")
    print(f"  not after:   {identity.leaf.not_valid_after_utc.isoformat()}")
    return 0


def _cmd_sign_csr(args: argparse.Namespace) -> int:
    ca = _open(args)
    csr_path = Path(args.csr)
    try:
        csr_pem = csr_path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{csr_path}: cannot read: {exc.strerror}") from exc
    if args.out:
        _refuse_existing([Path(args.out)], args.force)
        check_output_dir(Path(args.out).parent)
    cert = ca.sign_csr(csr_pem, days=args.days)
    pem = cert_to_pem(cert) + (b"" if args.leaf_only else certs_to_pem([ca.issuing]))
    if args.out:
        make_output_dir(Path(args.out).parent)
        atomic_write(args.out, pem)
        print(f"signed {csr_path} serial {format_serial(cert.serial_number)} -> {args.out}")
    else:
        sys.stdout.buffer.write(pem)
        sys.stdout.flush()
        print(f"signed {csr_path} serial {format_serial(cert.serial_number)}", file=sys.stderr)
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    reason = revocation_reason(args.reason)  # before anything is opened
    ca = _open(args)
    serial = parse_serial(args.serial)
    ca.revoke(serial, reason)
    print(f"revoked serial {format_serial(serial)} ({reason})")
    return 0


def _cmd_crl(args: argparse.Namespace) -> int:
    ca = _open(args)
    out = Path(args.out)
    check_output_dir(out.parent)
    der = args.der or out.suffix.lower() == ".der"
    crl = ca.crl(next_update_days=args.next_update_days)
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    make_output_dir(out.parent)
    atomic_write(out, crl.public_bytes(encoding))
    count = sum(1 for _ in crl)
    print(
        f"wrote CRL ({'DER' if der else 'PEM'}, {count} revoked, next update "
        f"{crl.next_update_utc.isoformat() if crl.next_update_utc else '-'}) to {out}"
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    ca = _open(args)
    for rec in ca.issued():
        state = f"revoked ({rec.reason_name})" if rec.revoked else "valid"
        print(
            f"{rec.serial_hex}  {rec.not_after.date().isoformat()}  {state:<24} {rec.common_name}"
        )
    return 0


# --------------------------------------------------------------------------- parser


def register(subparsers: Any) -> None:
    """Add ``ca`` and its sub-commands to the ``trisa-peer`` parser."""
    ca = subparsers.add_parser(
        "ca",
        help="run a local TRISA certificate authority",
        description=(__doc__ or "").replace("``", "").replace("\n::\n", "\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ca.add_subparsers(dest="ca_command", metavar="ACTION")
    sub.required = True

    def with_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_option(p, "--ca-dir", aliases=["--dir"], required=True, metavar="DIR",
                   help="the CA folder")
        p.set_defaults(command_parser=p)  # usage errors show this command's usage
        return p

    p = with_dir(sub.add_parser("init", help="create a root and an issuing CA in DIR"))
    p.add_argument("--name", default=None, help="root common name (default: 'trisa-peer "
                   "Local Root CA <folder>-<random>', unique)")
    p.add_argument("--key-size", type=positive_int, default=4096, metavar="N", help="RSA bits")
    p.set_defaults(func=_cmd_init)

    p = with_dir(sub.add_parser("issue", help="issue a TRISA identity (key + certificate)"))
    add_option(p, "--common-name", positional="COMMON_NAME", required=True, metavar="CN",
               help="common name of the identity (and first SAN DNS name)")
    add_option(p, "--dns-name", aliases=["--dns"], action="append", default=[], metavar="NAME",
               help="extra SAN DNS name (repeatable)")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="where to write CN.pem and CN.key (created 0700 when missing)")
    p.add_argument("--key-size", type=positive_int, default=4096, metavar="N", help="RSA bits")
    p.add_argument("--days", type=positive_int, default=395, metavar="N", help="validity in days")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=_cmd_issue)

    p = with_dir(sub.add_parser("sign-csr", help="sign a PEM certificate request"))
    p.add_argument("csr", metavar="FILE.csr")
    p.add_argument("--out", metavar="FILE", help="certificate chain PEM (default: stdout)")
    p.add_argument("--days", type=positive_int, default=395, metavar="N", help="validity in days")
    p.add_argument(
        "--leaf-only", action="store_true", help="write only the leaf, not leaf + issuing CA"
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.set_defaults(func=_cmd_sign_csr)

    p = with_dir(sub.add_parser("revoke", help="revoke an issued certificate"))
    p.add_argument("--serial", required=True, metavar="HEX", help="serial number in hex")
    p.add_argument("--reason", default="unspecified", metavar="TEXT",
                   help=REASON_HELP + " (default unspecified)")
    p.set_defaults(func=_cmd_revoke)

    p = with_dir(sub.add_parser("crl", help="write a fresh CRL signed by the issuing CA"))
    p.add_argument("--out", required=True, metavar="FILE", help="PEM, or DER if FILE.der")
    p.add_argument("--der", action="store_true", help="write DER whatever the file name")
    p.add_argument(
        "--next-update-days", type=positive_int, default=7, metavar="N", help="CRL lifetime"
    )
    p.set_defaults(func=_cmd_crl)

    p = with_dir(sub.add_parser("list", help="list issued certificates"))
    p.set_defaults(func=_cmd_list)
