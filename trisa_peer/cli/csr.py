"""``trisa-peer csr``: make a private key and a TRISA certificate signing request.

::

    trisa-peer csr --common-name CN [--key-out FILE] [--csr-out FILE] [--bits N]
                   [--config trisa.conf] [--organization O] [--locality L]
                   [--state ST] [--country CC] [--force]

The key (RSA, 4096 bits unless ``--bits``; fewer than 2048 is refused) is written
0600 and never leaves the machine; the CSR carries the TRISA profile's fields (the
guide's ``trisa.conf``: subject CN, O, L, ST, C; basicConstraints CA:FALSE; keyUsage;
extendedKeyUsage clientAuth, serverAuth; subjectAltName DNS = CN) and is what
``trisa-peer gds register --csr`` / ``gds reissue --csr`` / ``gds renew --csr`` send.
``--config`` reads the subject from a ``trisa.conf`` (its ``[dn_req]`` section); the
options override it. Existing files are not overwritten without ``--force``; a failure
leaves neither file behind.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import json
from pathlib import Path
from typing import Any

from ..certs import key_to_pem
from ..csr import DEFAULT_KEY_BITS, SubjectFields, build_csr, check_csr, csr_pem, new_key
from ..directory.validate import validate_common_name
from ..errors import ConfigurationError
from ..fsutil import atomic_write, write_private

__all__ = ["register"]


def _conf_subject(path: str) -> dict[str, str]:
    """The ``[dn_req]`` values of a ``trisa.conf`` (CN, O, L, ST, C)."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "not an OpenSSL config"
        raise ConfigurationError(f"{path}: not a trisa.conf: {first}") from exc
    section = "dn_req"
    if parser.has_section("req") and parser.has_option("req", "distinguished_name"):
        section = parser.get("req", "distinguished_name").strip()
    if not parser.has_section(section):
        raise ConfigurationError(f"{path}: no [{section}] section with the subject")
    return {k: v.strip() for k, v in parser.items(section)}


def _cmd_csr(args: argparse.Namespace) -> int:
    conf = _conf_subject(args.config) if args.config else {}
    cn_text = args.common_name or conf.get("CN", "")
    if not cn_text:
        raise ConfigurationError("give --common-name (or a --config with CN)")
    cn = validate_common_name(cn_text).lower()
    subject = SubjectFields(
        organization=args.organization if args.organization is not None else conf.get("O", ""),
        locality=args.locality if args.locality is not None else conf.get("L", ""),
        state=args.state if args.state is not None else conf.get("ST", ""),
        country=args.country if args.country is not None else conf.get("C", ""),
    )
    key_path = Path(args.key_out or f"{cn}.key")
    csr_path = Path(args.csr_out or f"{cn}.csr")
    if key_path.resolve() == csr_path.resolve():
        raise ConfigurationError("--key-out and --csr-out must be different files")
    for path in (key_path, csr_path):
        if path.exists() and not args.force:
            raise ConfigurationError(f"{path} already exists; use --force to overwrite it")
        if not path.parent.is_dir():
            raise ConfigurationError(f"{path}: directory {path.parent} does not exist")
    key = new_key(args.bits)
    request = build_csr(key, cn, subject)
    check_csr(request, cn)  # what the directory will check, before anything is written
    write_private(key_path, key_to_pem(key))
    try:
        atomic_write(csr_path, csr_pem(request))
    except BaseException:
        with contextlib.suppress(OSError):
            key_path.unlink()
        raise
    doc: dict[str, Any] = {
        "common_name": cn, "key": str(key_path), "csr": str(csr_path), "bits": args.bits,
        "subject": request.subject.rfc4514_string(),
    }
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(f"wrote private key {key_path} (RSA-{args.bits}, 0600: keep it here)\n"
              f"wrote CSR {csr_path} for {request.subject.rfc4514_string()}\n"
              f"send it: trisa-peer gds register --csr {csr_path} ... "
              f"(or gds renew / gds reissue --csr)")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "csr", help="make a private key and a TRISA certificate signing request",
        description="Make an RSA private key (0600, stays here) and a CSR with the TRISA "
        "profile's fields (the guide's trisa.conf) for `gds register --csr`, "
        "`gds renew --csr` or `gds reissue --csr`.",
    )
    p.add_argument("--common-name", help="the VASP's common name (also the SAN DNS name)")
    p.add_argument("--key-out", help="private key file (default CN.key)")
    p.add_argument("--csr-out", help="CSR file (default CN.csr)")
    p.add_argument("--bits", type=int, default=DEFAULT_KEY_BITS,
                   help="RSA key size (default %(default)s, at least 2048)")
    p.add_argument("--config", help="read the subject from a trisa.conf ([dn_req])")
    p.add_argument("--organization", help="subject O")
    p.add_argument("--locality", help="subject L (city)")
    p.add_argument("--state", help="subject ST (state or province, spelled out)")
    p.add_argument("--country", help="subject C (ISO 3166 alpha-2)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_csr, command_parser=p)
