"""``trisa-peer gds``: run and use a TRISA Global Directory Service.

Server and operator commands (work on the directory database ``--db``: a SQLite file,
``sqlite:///path`` or ``postgresql://user@host/dbname``; replicas and operators share a
PostgreSQL database by giving the same URL, its password in ``--db-password-file``,
``PGPASSFILE`` or ``PGPASSWORD``, never in the URL)::

    trisa-peer gds serve   --db FILE [--listen HOST:PORT] (--tls-cert F --tls-key F |
                           --ca-dir DIR | --insecure) [--outbox DIR] [--directory-id ID]
                           [--reminder-interval SECONDS]   (reissue reminders, 30/7/1 days)
                           [--lookup-cache N]   (Lookup reply cache entries; 0: off)
    trisa-peer gds review  --id ID --accept|--reject [--message TEXT] --db FILE
    trisa-peer gds list    --db FILE [--status STATE]
    trisa-peer gds add     --db FILE --common-name CN --endpoint HOST:PORT --cert FILE
                           [--name NAME] [--country CC] [--signing-cert FILE]
    trisa-peer gds update-cert --id ID --cert FILE --db FILE
    trisa-peer gds revoke  --id ID --reason TEXT --db FILE [--ca-dir DIR]
    trisa-peer gds certs   --id ID --out DIR --db FILE
    trisa-peer gds certs   --expiring 30d --db FILE   (also 7d, 12h)
    trisa-peer gds reissue --id ID --db FILE [--csr FILE [--chain-out FILE]] [--contact-token T]
    trisa-peer gds outbox  --db FILE [--id ID]
    trisa-peer gds members --db FILE --tls-cert F --tls-key F --client-ca FILE  (see .csr)

Only ``serve`` and ``add`` create a missing database file; the other operator commands
refuse a ``--db`` file that does not exist ("no such directory database"). A PostgreSQL
database must exist (no command creates one); its tables are created or migrated by
the first command that opens it.

``review --accept``, ``revoke`` and ``reissue`` reach Sectigo at ``--sectigo-endpoint``
(default ``$SECTIGO_ENDPOINT``) with ``$SECTIGO_USERNAME`` / ``$SECTIGO_PASSWORD``.

Client commands (talk to ``--directory HOST:PORT``; TLS with system roots by default,
``--directory-ca FILE`` for a private CA, ``--directory-insecure`` for plaintext
loopback)::

    trisa-peer gds register [--file vasp.json] [--common-name CN] [--endpoint HOST:PORT]
                            [--name NAME] [--email ADDR] [--country CC] [--csr FILE]
    trisa-peer gds verify-contact --id ID --token TOKEN
    trisa-peer gds lookup --common-name CN | --id ID
    trisa-peer gds search [--name N]... [--website W]... [--country CC]...
    trisa-peer gds status
    trisa-peer gds renew --members HOST:PORT --cert F --key F --csr F --chain-out F

Without ``--directory`` (or ``$TRISA_PEER_DIRECTORY``) a client command is a usage error.

Every command takes ``--json``. Old spellings (a positional ID or COMMON_NAME,
``--timeout``, ``$TRISA_DIRECTORY``, ``$GDS_DIRECTORY_ID``) still work (docs/cli.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from .._pb.ivms101 import enum_pb2, ivms101_pb2
from .._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from .._pb.trisa.gds.models.v1beta1 import models_pb2
from ..certs import fingerprint, format_serial, load_certificates, load_identity
from ..directory.convert import enum_name
from ..directory.grace import DEFAULT_REISSUE_GRACE, parse_grace
from ..directory.grace import history as grace_history
from ..errors import ConfigurationError, DirectoryError, UsageError
from ..fsutil import write_private
from ..limits import raise_open_files_limit
from ..records import PeerRecord
from .db import add_db_args
from .observe import add_metrics_args, directory_sources, metrics_for_workers, start_metrics
from .options import (
    REASON_HELP,
    add_directory_args,
    add_limit_args,
    add_option,
    check_output_dir,
    count,
    env_value,
    host_port_arg,
    make_output_dir,
    open_directory,
    positive_float,
    positive_int,
    revocation_reason,
)
from .runner import stop_event, wait_until_set

__all__ = ["register"]


def _emit(args: argparse.Namespace, doc: dict[str, Any], text: str) -> int:
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(text)
    return 0


def _read_text(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------- plumbing


def _directory(args: argparse.Namespace, *, create: bool = False) -> Any:
    """The directory on ``--db`` (a context manager that closes it); only ``serve`` and
    ``add`` may create the file."""
    from ..directory.service import DEFAULT_DIRECTORY_ID, Directory
    from ..directory.store import SQLStore

    directory_id = (args.directory_id or env_value(args, "TRISA_PEER_DIRECTORY_ID")
                    or DEFAULT_DIRECTORY_ID)
    store = SQLStore(args.db, create=create, password_file=args.db_password_file)
    return Directory(
        store,
        directory_id=directory_id,
        outbox_dir=getattr(args, "outbox", None),
    )


@contextlib.contextmanager
def _new_database_removed_on_error(location: str) -> Iterator[None]:
    """Remove the SQLite database file ``location`` names (and its side files) when the
    block fails and the file did not exist before it: a failed ``serve`` or ``add``
    leaves nothing behind. The block must close the directory before raising. (A
    PostgreSQL database is never created or dropped here.)"""
    from ..storage import parse_url

    url = parse_url(location)
    if url.backend != "sqlite" or url.in_memory:
        yield
        return
    path = url.path
    existed = Path(path).exists()
    try:
        yield
    except BaseException:
        if not existed:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(OSError):
                    Path(f"{path}{suffix}").unlink()
        raise


def _client(args: argparse.Namespace) -> Any:
    return open_directory(args, cache_ttl=0)  # an operator wants fresh answers


def _sectigo(args: argparse.Namespace) -> Any:
    from ..sectigo.client import SectigoClient

    username = os.environ.get("SECTIGO_USERNAME") or None
    password = os.environ.get("SECTIGO_PASSWORD") or None
    return SectigoClient(
        args.sectigo_endpoint or None,
        username,
        password,
        cache_path=False,
        timeout=args.sectigo_timeout,
    )


def _vasp_doc(directory: Any, vasp: Any) -> dict[str, Any]:
    from ..directory.convert import display_name, serial_hex
    from ..directory.service import state_name

    doc: dict[str, Any] = {
        "id": vasp.id,
        "common_name": vasp.common_name,
        "endpoint": vasp.trisa_endpoint,
        "name": display_name(vasp),
        "country": vasp.entity.country_of_registration,
        # open enum: a category this build does not know shows as UNKNOWN(99)
        "business_category": (
            enum_name(models_pb2.BusinessCategory, vasp.business_category)
            if vasp.business_category else ""
        ),
        "vasp_categories": list(vasp.vasp_categories),
        "registered_directory": vasp.registered_directory,
        "status": state_name(vasp.verification_status),
        "verified_on": vasp.verified_on,
        "origin": directory.store.get_origin(vasp.id),
    }
    if vasp.HasField("identity_certificate") and vasp.identity_certificate.data:
        cert = vasp.identity_certificate
        doc["certificate"] = {
            "serial": serial_hex(bytes(cert.serial_number)),
            "not_before": cert.not_before,
            "not_after": cert.not_after,
            "revoked": cert.revoked,
        }
        doc["superseded"] = directory.superseded(vasp.id)
        doc["certificates"] = [
            {"serial": rec.id, "not_after": rec.details.not_after, "status": status}
            for rec, status in grace_history(
                directory, vasp.id, serial_hex(bytes(cert.serial_number)))
        ]
    reqs = directory.store.certreqs_for(vasp.id)
    if reqs:
        from .._pb.gds.models.v1 import models_pb2 as gds_models_pb2

        last = reqs[-1]
        doc["certificate_request"] = {
            "id": last.id,
            "status": enum_name(gds_models_pb2.CertificateRequestState, last.status),
            "batch_id": last.batch_id,
            "reject_reason": last.reject_reason,
        }
    return doc


def _vasp_text(doc: dict[str, Any]) -> str:
    lines = [
        f"{doc['id']}  {doc['common_name']}  {doc['status']}",
        f"  endpoint: {doc['endpoint']}  name: {doc['name'] or '-'}  "
        f"country: {doc['country'] or '-'}",
    ]
    categories = [c for c in (doc.get("business_category"), *doc.get("vasp_categories", ()))
                  if c]
    if categories:
        lines.append(f"  categories: {', '.join(categories)}")
    cert = doc.get("certificate")
    if cert:
        revoked = "  REVOKED" if cert["revoked"] else ""
        lines.append(f"  certificate: serial {cert['serial']}, until {cert['not_after']}{revoked}")
    for row in doc.get("certificates", ()) if len(doc.get("certificates", ())) > 1 else ():
        lines.append(f"    {row['serial']}  until {row['not_after']}  {row['status']}")
    req = doc.get("certificate_request")
    if req:
        reason = f" ({req['reject_reason']})" if req["reject_reason"] else ""
        lines.append(f"  certificate request: {req['status']}{reason}")
    return "\n".join(lines)


def _record_doc(record: PeerRecord) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": record.id,
        "common_name": record.common_name,
        "endpoint": record.endpoint,
        "registered_directory": record.registered_directory,
        "name": record.name,
        "country": record.country,
        "verified_on": record.verified_on,
        "revoked": record.identity_revoked,
        "certificate": None,
        "signing_certificate": None,
    }
    if record.identity_certificate is not None:
        leaf = record.identity_certificate
        doc["certificate"] = {
            "serial": format_serial(leaf.serial_number),
            "subject": leaf.subject.rfc4514_string(),
            "issuer": leaf.issuer.rfc4514_string(),
            "not_after": leaf.not_valid_after_utc.isoformat(),
            "sha256": fingerprint(leaf),
            "chain": len(record.identity_chain),
        }
    if record.signing_certificate is not None:
        doc["signing_certificate"] = {"sha256": fingerprint(record.signing_certificate)}
    old = record.superseded
    doc["superseded"] = None if old is None else {
        "serial": format_serial(old.certificate.serial_number),
        "sha256": fingerprint(old.certificate),
        "grace_until": old.grace_until.isoformat(),
    }
    return doc


# --------------------------------------------------------------------------- server


def _client_flags(args: argparse.Namespace, host: str, port: int, tls_name: str) -> str:
    """The options a client needs to reach this directory (for the verification
    email's command): its address and TLS choice. A wildcard listener is named by this
    machine's host name."""
    if tls_name:
        name = tls_name
    elif host in ("", "0.0.0.0", "::"):  # a wildcard listener has no name of its own
        name = socket.getfqdn()
    else:
        name = host
    endpoint = f"[{name}]:{port}" if ":" in name else f"{name}:{port}"
    if args.insecure:
        return f"--directory {endpoint} --directory-insecure"
    if tls_name:
        return f"--directory {endpoint} --directory-ca {Path(args.ca_dir).resolve() / 'root.pem'}"
    return f"--directory {endpoint}"


def _grace_arg(text: str) -> timedelta:
    try:
        return parse_grace(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..directory.server import is_loopback

    host, _ = host_port_arg("--listen", args.listen)
    tls: tuple[bytes, bytes] | None = None
    tls_name = ""
    if args.insecure:
        if args.tls_cert or args.ca_dir:
            raise ConfigurationError("--insecure cannot be combined with TLS options")
        if not is_loopback(host):
            raise ConfigurationError(
                f"--insecure is only allowed on a loopback address, not {host}"
            )
    elif args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ConfigurationError("--tls-cert and --tls-key go together")
        if args.ca_dir:
            raise ConfigurationError("--ca-dir cannot be combined with --tls-cert/--tls-key")
        # Checked here (a key that does not match the certificate is named as such),
        # not left to gRPC's C core, which only fails to bind.
        identity = load_identity(args.tls_cert, key_path=args.tls_key)
        tls = (identity.chain_pem(), identity.key_pem())
    elif args.ca_dir:
        from ..ca import CertificateAuthority

        ca = CertificateAuthority.open_or_init(args.ca_dir, key_size=args.key_size)
        tls_name = host if not _is_ip(host) else "localhost"
        identity = ca.issue(tls_name, key_size=args.key_size)
        tls = (identity.chain_pem(), identity.key_pem())
    else:
        raise ConfigurationError("choose --tls-cert/--tls-key, --ca-dir or --insecure")
    files = raise_open_files_limit()  # what an attacker's idle connections would exhaust
    if args.workers > 1:  # N forked workers on one port and one --db (supervisor.py)
        from ..supervisor import WorkerContext, supervise

        def run(worker: WorkerContext) -> int:
            return _serve_directory(args, worker.listen, host, tls, tls_name, files, worker)

        with metrics_for_workers(args):  # --metrics-listen: one scrape sees every worker
            return supervise(workers=args.workers, listen=args.listen, run=run)
    return _serve_directory(args, args.listen, host, tls, tls_name, files, None)


def _serve_directory(args: argparse.Namespace, listen: str, host: str,
                     tls: tuple[bytes, bytes] | None, tls_name: str, files: str,
                     worker: Any) -> int:
    from ..directory.server import DirectoryServer

    # TLS material is valid: now open (maybe create) the database and bind. A start
    # that fails removes a database file it has just created.
    with _new_database_removed_on_error(args.db):
        directory = _directory(args, create=True)
        try:
            server = DirectoryServer(directory, listen=listen, tls=tls,
                                     handshake_timeout=args.handshake_timeout,
                                     idle_timeout=args.idle_timeout,
                                     lookup_cache=args.lookup_cache)
            port = server.start()
        except BaseException:
            directory.close()
            raise
    server.directory.client_flags = _client_flags(args, host, port, tls_name)
    server.directory.reissue_grace = args.reissue_grace
    try:
        stop_metrics = start_metrics(args, **directory_sources(args.db, tls), worker=worker)
    except BaseException:  # e.g. its port taken: stop what started
        server.stop(1.0)
        directory.close()
        raise
    stop = stop_event()
    from ..directory.reminders import ReminderLoop

    # reissue reminders: one pass now, then every --reminder-interval seconds (once
    # per threshold and certificate even with --workers N or replicas: reminders.py)
    reminders = ReminderLoop(directory, interval=args.reminder_interval)
    reminders.start()
    print(f"directory listening on {host}:{port} ({'TLS' if tls else 'plaintext'})", flush=True)
    limits_log = logging.getLogger("trisa_peer.limits")
    limits_log.setLevel(min(limits_log.getEffectiveLevel(), logging.INFO))
    limits_log.info("%s", files)  # one line on stderr
    if tls_name and tls_name != host:
        # the local CA's certificate names no IP address: clients must use the name
        print(f"TLS certificate names {tls_name}: connect as {tls_name}:{port} "
              f"(--directory {tls_name}:{port} --directory-ca "
              f"{Path(args.ca_dir) / 'root.pem'})", flush=True)
    if worker is not None:
        worker.ready(port)
    with directory:
        try:
            wait_until_set(stop)
        finally:
            reminders.stop()
            server.stop(1.0)
            stop_metrics()
    return 0


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- operator


def _show(args: argparse.Namespace, directory: Any, vasp: Any) -> int:
    """Print one VASP record (``--json`` or text)."""
    doc = _vasp_doc(directory, vasp)
    return _emit(args, doc, _vasp_text(doc))


def _cmd_review(args: argparse.Namespace) -> int:
    if args.accept == args.reject:  # argparse enforces it; kept for direct callers
        raise UsageError("choose exactly one of --accept and --reject")
    with _directory(args) as directory:
        if args.reject:
            vasp = directory.reject(args.id, args.message or "")
        else:
            from ..directory.issuance import accept

            vasp = accept(
                directory, args.id, _sectigo(args),
                poll_interval=args.poll_interval, timeout=args.poll_timeout,
            ).vasp
        return _show(args, directory, vasp)


def _print_docs(args: argparse.Namespace, docs: list[dict[str, Any]], text: str) -> int:
    """Print a list of records: JSON with ``--json``, else ``text``."""
    print(json.dumps(docs, indent=2, sort_keys=True) if args.json else text)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    status = None
    if args.status:
        try:
            status = models_pb2.VerificationState.Value(args.status.upper())
        except ValueError:
            raise ConfigurationError(f"unknown verification state {args.status!r}") from None
    with _directory(args) as directory:
        docs = [_vasp_doc(directory, v) for v in directory.list_vasps(status=status)]
    return _print_docs(args, docs, "\n".join(_vasp_text(d) for d in docs) or "no VASPs")


def _load_certs(path: str) -> list[Any]:
    return list(load_certificates(path))


def _cmd_add(args: argparse.Namespace) -> int:
    from ..directory.validate import validate_country

    if args.country:
        args.country = validate_country(args.country)
    certs = _load_certs(args.cert)
    signing = _load_certs(args.signing_cert)[:1] if args.signing_cert else []
    with _new_database_removed_on_error(args.db), _directory(args, create=True) as directory:
        vasp = directory.add(
            common_name=args.common_name,
            endpoint=args.endpoint,
            certificates=certs,
            name=args.name or "",
            country=args.country or "",
            website=args.website or "",
            signing_certificates=signing,
        )
        return _show(args, directory, vasp)


def _cmd_update_cert(args: argparse.Namespace) -> int:
    certs = _load_certs(args.cert)
    with _directory(args) as directory:
        return _show(args, directory, directory.update_certificate(args.id, certs,
                                                                   grace=args.grace))


def _cmd_revoke(args: argparse.Namespace) -> int:
    from ..directory.issuance import revoke

    args.reason = revocation_reason(args.reason)  # before the database is opened
    with _directory(args) as directory:
        # the directory picks the authority (Sectigo, or the local CA of an imported
        # record); each is opened only if it is the one needed
        vasp = revoke(
            directory, args.id, args.reason,
            sectigo=lambda: _sectigo(args),
            ca_dir=args.ca_dir,
        )
        return _show(args, directory, vasp)


def _window(text: str) -> Any:
    """argparse type of ``--expiring``: a bad duration is a usage error (exit 2)."""
    from ..directory.reminders import parse_window

    try:
        return parse_window(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_expiring(args: argparse.Namespace) -> int:
    from ..clock import utcnow
    from ..directory.convert import rfc3339
    from ..directory.reminders import expiring

    with _directory(args) as directory:
        found = expiring(directory, args.expiring, utcnow())
    docs = [
        {
            "id": e.vasp_id,
            "common_name": e.common_name,
            "serial": e.serial,
            "not_after": rfc3339(e.not_after),
            "days_left": round(e.days_left, 2),
        }
        for e in found
    ]
    lines = [
        f"{e.vasp_id}  {e.common_name}  serial {e.serial}  not_after {rfc3339(e.not_after)}  "
        + (f"{e.days_left:.1f} days left" if e.days_left > 0 else "EXPIRED")
        for e in found
    ]
    return _print_docs(args, docs, "\n".join(lines) or "no certificates expiring")


def _cmd_certs(args: argparse.Namespace) -> int:
    from ..directory.issuance import certificate_zip

    if args.expiring is not None:
        if args.id or args.out:
            raise UsageError("--expiring lists certificates; it takes no --id or --out")
        return _cmd_expiring(args)
    if not args.id or not args.out:
        raise UsageError("give --id ID and --out DIR (or --expiring WINDOW)")
    out = check_output_dir(args.out)
    with _directory(args) as directory:
        name, data = certificate_zip(directory, args.id)
    make_output_dir(out)  # 0700 when created: the bundle holds the (wrapped) private key
    path = write_private(out / name, data)
    return _emit(args, {"id": args.id, "path": str(path)}, f"wrote {path}")


def _cmd_reissue(args: argparse.Namespace) -> int:
    from ..directory.issuance import check_reissuable, reissue

    with _directory(args) as directory:
        try:
            check_reissuable(directory, args.id)  # before Sectigo is even configured
        except DirectoryError as exc:
            if directory.store.get_origin(args.id.strip()) == "import":
                raise DirectoryError(
                    f"{exc}: use `trisa-peer gds update-cert --id {args.id.strip()} "
                    "--cert FILE`"
                ) from exc
            raise
        csr = _read_csr(args.csr) if args.csr else None
        if args.chain_out and csr is None:
            raise UsageError("--chain-out goes with --csr")
        if args.chain_out and not Path(args.chain_out).parent.is_dir():
            raise ConfigurationError(  # before anything is issued
                f"{args.chain_out}: directory {Path(args.chain_out).parent} does not exist")
        if args.reason == "compromise" and args.grace:
            raise UsageError("--reason compromise leaves no grace: drop --grace")
        result = reissue(
            directory, args.id, _sectigo(args), csr=csr, contact_token=args.contact_token,
            poll_interval=args.poll_interval, timeout=args.poll_timeout,
            grace=args.grace, compromise=args.reason == "compromise",
        )
        doc = _vasp_doc(directory, result.vasp)
    if result.identity is None:  # CSR path: the chain only, no password
        text = _vasp_text(doc)
        if args.chain_out:
            path = write_private(args.chain_out, result.chain_pem())
            doc["chain"] = str(path)
            text += f"\n  certificate chain written to {path}"
        else:
            text += f"\n  certificate chain: trisa-peer gds certs {result.vasp.id} --out DIR"
        return _emit(args, doc, text)
    doc["pkcs12password"] = result.pkcs12password
    text = (
        _vasp_text(doc)
        + f"\n  PKCS#12 password (shown only once): {result.pkcs12password}"
    )
    return _emit(args, doc, text)


def _read_csr(path: str) -> bytes:
    """A CSR file's DER (PEM or DER on disk); CertificateError if it is not a CSR."""
    from ..csr import csr_der, load_csr

    return csr_der(load_csr(_read_text(path, "CSR"), source=path))


def _cmd_outbox(args: argparse.Namespace) -> int:
    with _directory(args) as directory:
        vasp_id = directory.get(args.id).id if args.id else None
        mails = directory.store.emails(vasp_id=vasp_id)
    docs = [
        {
            "vasp_id": m.vasp_id,
            "created": m.created,
            "recipient": m.recipient,
            "subject": m.subject,
            "reason": m.reason,
            "body": m.body,
        }
        for m in mails
    ]
    blocks = []
    for m in mails:
        body = "\n".join(f"    {line}" if line else "" for line in m.body.splitlines())
        blocks.append(
            f"{m.created}  to {m.recipient}  (VASP {m.vasp_id}, {m.reason})\n"
            f"  subject: {m.subject}\n{body}"
        )
    return _print_docs(args, docs, "\n\n".join(blocks) or "no emails")


# --------------------------------------------------------------------------- client


def _register_request(args: argparse.Namespace) -> Any:
    request = gds_pb2.RegisterRequest()
    if args.file:
        text = _read_text(args.file, "registration file").decode("utf-8", "replace")
        try:
            json_format.Parse(text, request)
        except json_format.ParseError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "invalid JSON"
            raise ConfigurationError(f"{args.file}: not a RegisterRequest: {first}") from exc
    if args.endpoint:
        request.trisa_endpoint = args.endpoint
    if args.common_name:
        request.common_name = args.common_name
    if args.website:
        request.website = args.website
    if args.name:
        del request.entity.name.name_identifiers[:]
        request.entity.name.name_identifiers.append(
            ivms101_pb2.LegalPersonNameId(
                legal_person_name=args.name,
                legal_person_name_identifier_type=enum_pb2.LEGAL_PERSON_NAME_TYPE_CODE_LEGL,
            )
        )
    if args.country:
        request.entity.country_of_registration = args.country.upper()
    if args.email:
        contact = request.contacts.technical
        contact.email = args.email
        contact.name = args.contact_name or args.email.split("@", 1)[0]
    return request


def _cmd_register(args: argparse.Namespace) -> int:
    request = _register_request(args)
    csr = _read_csr(args.csr) if args.csr else None
    with _client(args) as client:
        reply = client.register(request, csr_der=csr)
    doc = {
        "id": reply.id,
        "registered_directory": reply.registered_directory,
        "common_name": reply.common_name,
        "status": enum_name(models_pb2.VerificationState, reply.status),
        "message": reply.message,
        "pkcs12password": reply.pkcs12password,
    }
    contacts = list(dict.fromkeys(
        getattr(request.contacts, kind).email.strip()
        for kind in ("technical", "administrative", "legal", "billing")
        if getattr(request.contacts, kind).email.strip()
    ))
    doc["contacts"] = contacts
    if csr is not None and reply.pkcs12password:
        # an upstream directory ignores the CSR metadata and makes a PKCS#12 instead
        print("warning: the directory ignored the CSR (it does not take CSR "
              "registrations): it will issue a PKCS#12 with the password below instead",
              file=sys.stderr)
    secret = (
        f"PKCS#12 password (shown only once, keep it): {reply.pkcs12password}\n"
        if reply.pkcs12password else
        "no PKCS#12 password: the certificate is issued for your CSR; keep its key\n"
    )
    text = (
        f"registered {reply.common_name} as {reply.id} ({doc['status']})\n"
        + secret
        + (f"{reply.message}\n" if reply.message else "")
        + f"the verification token was sent to {', '.join(contacts) or 'the contacts'}; "
        "a local directory's operator can read it with "
        f"`trisa-peer gds outbox --db FILE --id {reply.id}`"
    )
    return _emit(args, doc, text)


def _cmd_verify_contact(args: argparse.Namespace) -> int:
    with _client(args) as client:
        reply = client.verify_contact(args.id, args.token)
    state = enum_name(models_pb2.VerificationState, reply.status)
    return _emit(args, {"status": state, "message": reply.message}, f"{state}: {reply.message}")


def _cmd_lookup(args: argparse.Namespace) -> int:
    if not args.common_name and not args.id:
        raise UsageError("give --common-name CN or --id ID")
    with _client(args) as client:
        record = client.lookup(common_name=args.common_name, vasp_id=args.id, fresh=True)
    doc = _record_doc(record)
    cert = doc["certificate"]
    text = (
        f"{record.id}  {record.common_name}  {record.endpoint}\n"
        f"  name: {record.name or '-'}  country: {record.country or '-'}  "
        f"verified on: {record.verified_on or '-'}\n"
        + (
            f"  certificate: serial {cert['serial']}, until {cert['not_after']}"
            + ("  REVOKED" if record.identity_revoked else "")
            if cert
            else "  certificate: none"
        )
        + (f"\n  superseded certificate: serial {doc['superseded']['serial']}, acceptable "
           f"until {doc['superseded']['grace_until']} (reissue grace)"
           if doc["superseded"] else "")
    )
    return _emit(args, doc, text)


def _cmd_search(args: argparse.Namespace) -> int:
    with _client(args) as client:
        results = client.search(
            name=args.name, website=args.website, country=args.country, category=args.category
        )
    text = "\n".join(f"{r.id}  {r.common_name}  {r.endpoint}" for r in results)
    return _print_docs(args, [r.__dict__ for r in results], text or "no results")


def _cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        state = client.status()
    doc = {
        "status": enum_name(gds_pb2.ServiceState.Status, state.status),
        "not_before": state.not_before,
        "not_after": state.not_after,
    }
    return _emit(args, doc, f"{doc['status']} (check again between {state.not_before} and "
                            f"{state.not_after})")


# --------------------------------------------------------------------------- parser


def register(subparsers: Any) -> None:
    from ..directory.service import DEFAULT_DIRECTORY_ID

    parser = subparsers.add_parser(
        "gds", help="run and use a TRISA Global Directory Service",
        description="Run and use a TRISA Global Directory Service (GDS).",
    )
    sub = parser.add_subparsers(dest="gds_command", metavar="COMMAND")
    sub.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")

    db = argparse.ArgumentParser(add_help=False)
    add_db_args(db, required=True, help="directory database: a SQLite file (must exist, "
                "except for serve and add, which create it), sqlite:///PATH or "
                "postgresql://USER@HOST/DB")
    db.add_argument(
        "--directory-id",
        help="registered_directory of new records (default: $TRISA_PEER_DIRECTORY_ID or "
        f"{DEFAULT_DIRECTORY_ID})",
    )
    db.add_argument("--outbox", help="also write emails as .eml files into this directory")

    sectigo = argparse.ArgumentParser(add_help=False)
    sectigo.add_argument(
        "--sectigo-endpoint", help="Sectigo IoT Manager URL (default: $SECTIGO_ENDPOINT); "
        "credentials from $SECTIGO_USERNAME / $SECTIGO_PASSWORD",
    )
    sectigo.add_argument("--sectigo-timeout", type=positive_float, default=30.0,
                         help="seconds per Sectigo request (default 30)")
    sectigo.add_argument("--poll-interval", type=positive_float, default=1.0,
                         help="seconds between batch status checks (default 1)")
    sectigo.add_argument("--poll-timeout", type=positive_float, default=120.0,
                         help="give up waiting for the batch after this many seconds")

    client = argparse.ArgumentParser(add_help=False)
    add_directory_args(client, timeout_default=10.0, timeout_aliases=["--timeout"])

    def vasp_id(p: argparse.ArgumentParser) -> None:
        add_option(p, "--id", positional="ID", required=True, help="VASP id")
        p.set_defaults(command_parser=p)

    p = sub.add_parser(
        "serve", parents=[common, db], help="run the directory gRPC server",
        description="Run the directory gRPC server. With --ca-dir the server certificate "
        "names the --listen host, or localhost when that is an IP address (the local CA "
        "issues no IP names): clients then connect as localhost:PORT with "
        "--directory-ca DIR/root.pem, as the startup output says.",
    )
    p.add_argument("--listen", default="127.0.0.1:4433", help="HOST:PORT (default %(default)s)")
    p.add_argument("--reissue-grace", type=_grace_arg, default=DEFAULT_REISSUE_GRACE,
                   metavar="DURATION", help="how long a certificate superseded by a planned "
                   "renewal stays acceptable (e.g. 24h, 90m, 0; default 24h)")
    p.add_argument("--tls-cert", help="server certificate chain (PEM)")
    p.add_argument("--tls-key", help="server private key (PEM), matching --tls-cert")
    p.add_argument("--ca-dir", help="issue a server certificate from this local CA (for an "
                   "IP --listen host it names localhost: connect as localhost:PORT)")
    p.add_argument("--key-size", type=int, default=2048, help="RSA size for --ca-dir")
    p.add_argument("--insecure", action="store_true", help="plaintext (loopback only)")
    p.add_argument("--workers", metavar="N", type=positive_int, default=1,
                   help="run N server processes on the port, sharing --db (default 1)")
    add_metrics_args(p)
    p.add_argument("--reminder-interval", metavar="SECONDS", type=positive_float,
                   default=3600.0,
                   help="seconds between passes that write certificate reissue reminders "
                   "(30, 7 and 1 days ahead) to the outbox; one pass also runs at start "
                   "(default %(default)s)")
    p.add_argument("--lookup-cache", metavar="N", type=count, default=20_000,
                   help="Lookup replies kept in the reply cache, checked against every "
                   "commit before use; 0 turns it off, e.g. if rows are edited by hand "
                   "(default %(default)s)")
    add_limit_args(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("review", parents=[common, db, sectigo],
                       help="accept (and issue the certificate) or reject a registration")
    vasp_id(p)
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--accept", action="store_true")
    verdict.add_argument("--reject", action="store_true")
    add_option(p, "--message", aliases=["--reason"], metavar="TEXT",
               help="why the registration is rejected (with --reject)")
    p.set_defaults(func=_cmd_review, command_parser=p)

    p = sub.add_parser("list", parents=[common, db], help="list directory records")
    p.add_argument("--status", help="only records in this state (e.g. VERIFIED)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("add", parents=[common, db],
                       help="import a VERIFIED record from an existing certificate")
    p.add_argument("--common-name", required=True)
    p.add_argument("--endpoint", required=True, help="TRISA endpoint HOST:PORT")
    p.add_argument("--cert", required=True, help="certificate (+ chain): PEM, DER, gzip PEM")
    p.add_argument("--name", help="display (legal) name")
    p.add_argument("--country", help="country of registration (ISO alpha-2)")
    p.add_argument("--website")
    p.add_argument("--signing-cert", help="sealing-key certificate")
    p.set_defaults(func=_cmd_add)

    p = sub.add_parser("update-cert", parents=[common, db],
                       help="replace the identity certificate of a record")
    vasp_id(p)
    p.add_argument("--cert", required=True)
    p.add_argument("--grace", type=_grace_arg, metavar="DURATION",
                   help="the replaced certificate stays acceptable this long (a planned "
                   "rotation; e.g. 24h, 90m, 0; default 24h, or the serve's --reissue-grace)")
    p.set_defaults(func=_cmd_update_cert)

    p = sub.add_parser("revoke", parents=[common, db, sectigo],
                       help="revoke a VASP's identity certificate")
    vasp_id(p)
    p.add_argument("--reason", required=True, metavar="TEXT", help=REASON_HELP)
    p.add_argument("--ca-dir", help="local CA of an imported record's certificate")
    p.set_defaults(func=_cmd_revoke)

    p = sub.add_parser(
        "certs", parents=[common, db],
        help="write a VASP's downloaded certificate zip, or list expiring certificates",
        description="With --id and --out: write the VASP's certificate zip. With "
        "--expiring WINDOW (30d, 7d, 12h): list the current, unrevoked identity "
        "certificates expiring within WINDOW (already expired ones included), one line "
        "each: VASP id, common name, serial, not_after, days left.",
    )
    add_option(p, "--id", positional="ID", help="VASP id (with --out)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (created 0700 when missing)")
    p.add_argument("--expiring", metavar="WINDOW", type=_window,
                   help="list certificates expiring within WINDOW (e.g. 30d, 7d, 12h)")
    p.set_defaults(func=_cmd_certs, command_parser=p)

    p = sub.add_parser("reissue", parents=[common, db, sectigo],
                       help="issue a new identity certificate for a VERIFIED VASP")
    vasp_id(p)
    p.add_argument("--csr", help="issue for this CSR (the VASP's key stays with the VASP); "
                   "no PKCS#12 password")
    p.add_argument("--chain-out", help="with --csr: write the new certificate chain here")
    p.add_argument("--contact-token", help="after a revocation: the token the VASP's "
                   "verified contacts received (a run without it sends one)")
    p.add_argument("--grace", type=_grace_arg, metavar="DURATION",
                   help="planned reissue: the old certificate stays acceptable this long "
                   "(e.g. 24h, 90m, 0; default 24h)")
    p.add_argument("--reason", choices=("planned", "compromise"), default="planned",
                   help="compromise: revoke the old certificate (key compromise) and end "
                   "its grace at once, then reissue after contact verification")
    p.set_defaults(func=_cmd_reissue, command_parser=p)

    p = sub.add_parser(
        "outbox", parents=[common, db],
        help="show the emails the directory sent (contact verification tokens, ...)",
        description="Show the directory's outbox: every email it sent, with recipient, "
        "subject and body (a contact verification email holds the token for "
        "verify-contact).",
    )
    p.add_argument("--id", help="only the emails of this VASP id")
    p.set_defaults(func=_cmd_outbox)

    p = sub.add_parser("register", parents=[common, client], help="register a VASP")
    p.add_argument("--file", help="RegisterRequest as protojson")
    p.add_argument("--common-name")
    p.add_argument("--endpoint", help="TRISA endpoint HOST:PORT")
    p.add_argument("--name", help="legal name")
    p.add_argument("--email", help="technical contact email")
    p.add_argument("--contact-name", help="technical contact name")
    p.add_argument("--country", help="country of registration")
    p.add_argument("--website")
    p.add_argument("--csr", help="have the certificate issued for this CSR (see "
                   "`trisa-peer csr`): no PKCS#12 password, the key never leaves you")
    p.set_defaults(func=_cmd_register, command_parser=p)

    p = sub.add_parser("verify-contact", parents=[common, client],
                       help="verify a contact email with its token")
    p.add_argument("--id", required=True, help="VASP id")
    p.add_argument("--token", required=True)
    p.set_defaults(func=_cmd_verify_contact, command_parser=p)

    p = sub.add_parser("lookup", parents=[common, client], help="look a VERIFIED VASP up")
    add_option(p, "--common-name", positional="COMMON_NAME", metavar="CN",
               help="the VASP's common name")
    p.add_argument("--id", help="look up by id instead")
    p.set_defaults(func=_cmd_lookup, command_parser=p)

    p = sub.add_parser("search", parents=[common, client], help="search VERIFIED VASPs")
    p.add_argument("--name", action="append", default=[])
    p.add_argument("--website", action="append", default=[])
    p.add_argument("--country", action="append", default=[])
    p.add_argument("--category", action="append", default=[])
    p.set_defaults(func=_cmd_search, command_parser=p)

    p = sub.add_parser("status", parents=[common, client], help="directory service status")
    p.set_defaults(func=_cmd_status, command_parser=p)

    from .csr import register_gds  # the CSR path's gds commands: members, renew

    register_gds(sub, common=common, db=db, sectigo=sectigo)


