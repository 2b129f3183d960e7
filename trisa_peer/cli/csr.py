"""``trisa-peer csr``: make a private key and a TRISA certificate signing request.

::

    trisa-peer csr --common-name CN [--key-out FILE] [--csr-out FILE] [--bits N]
                   [--config trisa.conf] [--organization O] [--locality L]
                   [--state ST] [--country CC] [--force]

Two ``gds`` sub-commands live here too (registered by one hook in :mod:`.gds`)::

    trisa-peer gds members --db FILE --tls-cert F --tls-key F --client-ca FILE
                           [--listen HOST:PORT]
    trisa-peer gds renew   --members HOST:PORT --cert CURRENT.pem --key CURRENT.key
                           --csr NEW.csr --chain-out NEW.pem [--members-ca FILE]
                           [--server-name NAME]

``members`` serves the directory's mTLS members endpoint (renewal by CSR,
:mod:`trisa_peer.directory.members`) on the directory database, beside ``gds serve``;
``renew`` is the VASP's side: its current certificate and key authenticate it, the new
chain is written only after it is checked to carry the CSR's key and name.

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
import os
from pathlib import Path
from typing import Any

from ..certs import certs_to_pem, key_to_pem, load_identity, parse_certificates, spki_der
from ..csr import (
    DEFAULT_KEY_BITS,
    SubjectFields,
    build_csr,
    check_csr,
    csr_der,
    csr_pem,
    load_csr,
    new_key,
)
from ..directory.validate import validate_common_name
from ..errors import CertificateError, ConfigurationError
from ..fsutil import atomic_write, write_private
from .options import add_option, host_port_arg, positive_float
from .runner import stop_event, wait_until_set

__all__ = ["register", "register_gds"]


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
    # the CSR first: if the key cannot be written, the CSR (public, useless without its
    # key) is removed again, and an existing key is only ever replaced as the last step
    atomic_write(csr_path, csr_pem(request))
    try:
        write_private(key_path, key_to_pem(key))
    except BaseException:
        with contextlib.suppress(OSError):
            csr_path.unlink()
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


# --------------------------------------------------------------------------- gds members / renew


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc


def _cmd_members(args: argparse.Namespace) -> int:
    from ..directory.members import MembersServer
    from ..sectigo.client import SectigoClient
    from .gds import _directory  # the same database opening as every gds command

    host_port_arg("--listen", args.listen)
    identity = load_identity(args.tls_cert, key_path=args.tls_key)
    client_ca = certs_to_pem(parse_certificates(_read(args.client_ca, "client CA"),
                                                source=args.client_ca))

    def sectigo() -> SectigoClient:
        return SectigoClient(args.sectigo_endpoint or None,
                             os.environ.get("SECTIGO_USERNAME") or None,
                             os.environ.get("SECTIGO_PASSWORD") or None,
                             cache_path=False, timeout=args.sectigo_timeout)

    with _directory(args) as directory:
        server = MembersServer(directory, listen=args.listen,
                               tls=(identity.chain_pem(), identity.key_pem()),
                               client_ca=client_ca, sectigo=sectigo,
                               poll_interval=args.poll_interval, issue_timeout=args.poll_timeout)
        port = server.start()
        stop = stop_event()
        print(f"members endpoint (mTLS) listening on port {port}", flush=True)
        try:
            wait_until_set(stop)
        finally:
            server.stop(1.0)
    return 0


def _cmd_renew(args: argparse.Namespace) -> int:
    from ..directory.members import renew_over_mtls

    current = load_identity(args.cert, key_path=args.key)
    request = load_csr(_read(args.csr, "CSR"), source=args.csr)
    ca_pem = _read(args.members_ca, "members CA") if args.members_ca else None
    out = Path(args.chain_out)
    if not out.parent.is_dir():
        raise ConfigurationError(f"{out}: directory {out.parent} does not exist")
    reply = renew_over_mtls(args.members, csr_der(request),
                            client_chain_pem=current.chain_pem(),
                            client_key_pem=current.key_pem(), ca_pem=ca_pem,
                            server_name=args.server_name, timeout=args.directory_timeout)
    chain = parse_certificates(reply, source="the directory's reply")
    leaf = chain[0]
    if spki_der(leaf.public_key()) != spki_der(request.public_key()):
        raise CertificateError("the directory returned a certificate for another key than "
                               "the CSR's; nothing written")
    path = atomic_write(out, certs_to_pem(chain))
    doc = {"chain": str(path), "serial": format(leaf.serial_number, "X"),
           "not_after": leaf.not_valid_after_utc.isoformat()}
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(f"renewed: serial {doc['serial']} until {doc['not_after']}; chain written to "
              f"{path} (install it with the CSR's key)")
    return 0


def register_gds(sub: Any, *, common: argparse.ArgumentParser, db: argparse.ArgumentParser,
                 sectigo: argparse.ArgumentParser) -> None:
    """Add ``gds members`` and ``gds renew`` to the ``gds`` sub-parsers ``sub``."""
    p = sub.add_parser(
        "members", parents=[common, db, sectigo],
        help="serve the members mTLS endpoint (renewal by CSR)",
        description="Serve the directory's members endpoint: mutual TLS, where a VASP "
        "presenting its current, unrevoked identity certificate renews it with a CSR.",
    )
    p.add_argument("--listen", default="127.0.0.1:4435", help="HOST:PORT (default %(default)s)")
    p.add_argument("--tls-cert", required=True, help="the endpoint's certificate chain (PEM)")
    p.add_argument("--tls-key", required=True, help="its private key (PEM)")
    p.add_argument("--client-ca", required=True,
                   help="CA certificates the VASPs' identity certificates chain to")
    p.set_defaults(func=_cmd_members, command_parser=p)

    p = sub.add_parser(
        "renew", parents=[common],
        help="renew this VASP's certificate with a CSR (authenticated by the current one)",
    )
    p.add_argument("--members", required=True, metavar="HOST:PORT",
                   help="the directory's members endpoint")
    p.add_argument("--cert", required=True, help="current identity certificate (+ chain)")
    p.add_argument("--key", required=True, help="current private key")
    p.add_argument("--csr", required=True, help="CSR of the new key (trisa-peer csr)")
    p.add_argument("--chain-out", required=True, help="where to write the new chain (PEM)")
    p.add_argument("--members-ca", help="CA of the members endpoint's TLS certificate "
                   "(default: system roots)")
    p.add_argument("--server-name", help="TLS name to expect from the endpoint")
    add_option(p, "--directory-timeout", aliases=("--timeout",), type=positive_float,
               default=90.0, metavar="SECONDS",
               help="seconds to wait for the new certificate (default %(default)s)")
    p.set_defaults(func=_cmd_renew, command_parser=p)
