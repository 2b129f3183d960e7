"""Certificate issuance through Sectigo: review acceptance, reissuance, revocation.

This is the GDS certman (upstream ``pkg/gds/certman``) run synchronously by the operator,
with its gaps fixed (quirk 7 in docs/architecture.md):

- A failure before a batch exists (Sectigo unreachable, no authority with balance,
  batch refused) records the certificate request as ``CR_ERRORED`` (or
  ``CR_REJECTED`` when Sectigo refused it) with the reason, and moves the VASP back
  from ``ISSUING_CERTIFICATE`` to ``REVIEWED``. Another ``accept`` starts a new
  request with the **same** PKCS#12 password (the registrant saw it once).
- Once a batch exists, it is never created twice: a poll that times out or loses the
  connection leaves the request ``PROCESSING`` and a later ``accept`` resumes polling
  that batch. A batch Sectigo no longer knows (404) or reports failed ends the request
  (``CR_ERRORED`` / ``CR_REJECTED``) so the next ``accept`` starts over.
- A reissue never touches the VASP's verification state: it stays ``VERIFIED`` (and
  Lookup keeps answering) whatever happens to the new request.

Two paths (issue 14 section 1): a request holds either a PKCS#12 password (secret
``<certreqId>-password``: Sectigo makes the key, the VASP receives a password-protected
PKCS#12) or a CSR (secret ``<certreqId>-csr``: the key never leaves the VASP, the CSR is
checked with :func:`trisa_peer.csr.check_csr` - at registration or reissue, and again
against the Sectigo profile's key rule right before the upload - and the VASP receives
only its certificate chain, ``<common name>.pem``). An issued certificate whose public
key is not the CSR's is refused (``CR_ERRORED``), never installed.

Every state change is committed before the next network call, so a crash leaves a
state that ``accept`` (or ``reissue``) resolves.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509

from .._pb.gds.models.v1 import models_pb2 as gds_models_pb2
from .._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from .._pb.trisa.gds.models.v1beta1 import models_pb2
from ..ca import CertificateAuthority
from ..certs import Identity, certs_to_pem, load_identity, order_chain, parse_certificates, spki_der
from ..certs import common_name as cert_common_name
from ..csr import MIN_RSA_BITS, check_csr, csr_pem, load_csr, profile_min_rsa_bits
from ..errors import (
    CertificateError,
    ConfigurationError,
    DirectoryError,
    DirectoryMismatchError,
    PeerNotRegisteredError,
    RevokedError,
    SectigoError,
)
from ..logtext import peer_text
from ..revocation import reason_name
from ..sectigo.client import SectigoClient
from ..sectigo.models import READY_FOR_DOWNLOAD, SectigoAPIError, normalize_status
from ..steps import HandshakeStep
from .convert import serial_hex
from .grace import grace_changes
from .service import CRS, PASSWORD_LENGTH, SUBJECT_WELCOME, VS, Directory, state_name
from .store import Changes
from .validate import new_token, normalize_common_name

__all__ = [
    "IssuanceResult",
    "accept",
    "certificate_zip",
    "check_reissuable",
    "reissue",
    "renew",
    "revoke",
]

log = logging.getLogger(__name__)

_FAILED_STATES = frozenset({"FAILED", "REJECTED", "NOT_ACCEPTABLE", "BROKEN", "REVOKED",
                            "REMOVED_AFTER_EXPIRATION"})
_OPEN = (CRS.READY_TO_SUBMIT, CRS.PROCESSING, CRS.DOWNLOADING, CRS.DOWNLOADED)


@dataclass(frozen=True)
class IssuanceResult:
    """What an issuance produced: the updated VASP, the request, the certificate and its
    chain, the identity (key included; ``None`` on the CSR path, where the directory
    never sees the key) and, for a PKCS#12 reissue, the new password (shown once)."""

    vasp: models_pb2.VASP
    certreq: gds_models_pb2.CertificateRequest
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    identity: Identity | None = None
    pkcs12password: str = ""

    @property
    def serial(self) -> str:
        return serial_hex(self.leaf.serial_number)

    def chain_pem(self) -> bytes:
        """Leaf then chain, PEM: what the VASP installs next to its own key."""
        return certs_to_pem([self.leaf, *self.chain])


@dataclass(frozen=True)
class _Failure:
    """A step's verdict that the request has failed for good (not an exception: the
    error tree lives in :mod:`trisa_peer.errors`)."""

    state: gds_models_pb2.CertificateRequestState.ValueType
    reason: str


def accept(
    directory: Directory,
    vasp_id: str,
    sectigo: SectigoClient,
    *,
    source: str = "operator",
    poll_interval: float = 1.0,
    timeout: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> IssuanceResult:
    """Accept a reviewed registration and issue its certificate (or resume/retry).

    Allowed from PENDING_REVIEW, and — as a retry — from REVIEWED or
    ISSUING_CERTIFICATE. Raises DirectoryError when the VASP is in another state or
    the issuance failed (the failure is recorded first).
    """
    vasp = directory.get(vasp_id)
    state = vasp.verification_status
    reqs = directory.store.certreqs_for(vasp.id)
    if state == VS.PENDING_REVIEW:
        directory.audit(vasp, VS.REVIEWED, "registration accepted", source)
        vasp.verified_on = directory.now()
        req = _latest(reqs)
        if req is None or req.status != CRS.INITIALIZED:
            req = _new_request(directory, vasp, reqs, source)
            changes = Changes(vasp=vasp, certreqs=[req],
                              secrets=_registrant_material(directory, reqs, req.id))
        else:
            directory.certreq_state(req, CRS.READY_TO_SUBMIT, "registration accepted", source)
            changes = Changes(vasp=vasp, certreqs=[req])
        directory.commit(changes, what="accept")
    elif state in (VS.REVIEWED, VS.ISSUING_CERTIFICATE):
        req = _latest(reqs)
        if req is None or req.status not in _OPEN:
            # the last attempt failed (or was never made): start a new request with the
            # registrant's password
            req = _new_request(directory, vasp, reqs, source)
            directory.commit(
                Changes(certreqs=[req], secrets=_registrant_material(directory, reqs, req.id)),
                what="accept",
            )
    else:
        raise DirectoryError(
            f"cannot accept VASP {vasp.id}: it is {state_name(state)}"
            + (" (use reissue for a new certificate)" if state == VS.VERIFIED else
               ", not PENDING_REVIEW")
        )
    return _run(directory, vasp.id, req.id, sectigo, reissue=False, source=source,
                poll_interval=poll_interval, timeout=timeout, sleep=sleep)


def reissue(
    directory: Directory,
    vasp_id: str,
    sectigo: SectigoClient,
    *,
    dns_names: tuple[str, ...] = (),
    csr: bytes | None = None,
    contact_token: str | None = None,
    source: str = "operator",
    poll_interval: float = 1.0,
    timeout: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
    grace: timedelta | None = None,
    compromise: bool = False,
) -> IssuanceResult:
    """Request a new identity certificate for a VERIFIED VASP; the old serial stays in
    the certificate history.

    A planned reissue keeps the superseded certificate acceptable for binding for
    ``grace`` (default ``directory.reissue_grace``, 24 h; 0 for none) from the moment the
    new one is installed (:mod:`.grace`). With ``compromise`` the current certificate is
    first revoked (reason key compromise) and any grace ended, in one committed step,
    before the contact verification a reissue after a revocation needs: the old
    certificate is never acceptable again.

    Without ``csr``: Sectigo makes the key, with a new PKCS#12 password (returned once).
    With ``csr`` (PEM or DER): it is checked first (CertificateError with the reason,
    nothing stored) and the result carries only the certificate chain. A request left
    open by an interrupted run is resumed; a CSR cannot replace the one it holds.

    After a revocation (the record's certificate is flagged revoked: a compromise) the
    reissue needs contact verification: see :func:`verify_reissue_contact`.
    """
    vasp = check_reissuable(directory, vasp_id)
    if compromise and not vasp.identity_certificate.revoked:
        vasp = revoke(directory, vasp.id, reason_name(1), sectigo=sectigo, source=source)
    old_serial = serial_hex(int.from_bytes(bytes(vasp.identity_certificate.serial_number), "big"))
    planned = not vasp.identity_certificate.revoked
    if vasp.identity_certificate.revoked:
        verify_reissue_contact(directory, vasp, contact_token, source=source)
    pem = b""
    if csr is not None:
        if dns_names:
            raise ConfigurationError("a CSR names the certificate's DNS names itself")
        request = load_csr(csr)
        check_csr(request, vasp.common_name)
        pem = csr_pem(request)
    reqs = directory.store.certreqs_for(vasp.id)
    req = _latest(reqs)
    password = ""
    if req is None or req.status not in _OPEN:
        req = _new_request(directory, vasp, reqs, source, dns_names=dns_names)
        if pem:
            secrets = {f"{req.id}-csr": pem}
        else:
            password = new_token(PASSWORD_LENGTH)
            secrets = {f"{req.id}-password": password.encode("ascii")}
        directory.commit(Changes(certreqs=[req], secrets=secrets), what="reissue")
    elif pem and directory.store.get_secret(f"{req.id}-csr") != pem:
        raise DirectoryError(
            f"certificate request {req.id} of VASP {vasp.id} is still "
            f"{gds_models_pb2.CertificateRequestState.Name(req.status)}; run reissue "
            "with that request's CSR (or without --csr) to finish it first"
        )
    result = _run(directory, vasp.id, req.id, sectigo, reissue=True, source=source,
                  poll_interval=poll_interval, timeout=timeout, sleep=sleep)
    if not password and result.identity is not None:
        stored = directory.store.get_secret(f"{req.id}-password") or b""
        password = stored.decode("ascii", "replace")
    span = grace if grace is not None else directory.reissue_grace
    if planned and result.serial != old_serial:
        until = directory.utcnow() + span if span > timedelta(0) else None
        directory.commit(grace_changes(vasp.id, old_serial, until), what="reissue grace")
        if until is not None:
            log.info("VASP %s: certificate %s superseded by %s, acceptable until %s",
                     vasp.id, old_serial, result.serial, until.isoformat())
    return replace(result, pkcs12password=password)


#: How long a reissue contact-verification token stays usable.
REISSUE_TOKEN_TTL = timedelta(hours=24)
SUBJECT_REISSUE = "TRISA: confirm the reissue of your identity certificate"


def _token_secret(vasp_id: str) -> str:
    return f"{vasp_id}-reissue-token"


def verify_reissue_contact(
    directory: Directory, vasp: models_pb2.VASP, token: str | None, *, source: str,
) -> None:
    """Contact verification before a reissue after a compromise.

    Without ``token`` (or with a wrong or expired one) a new 48-character token is
    emailed to every verified contact of the VASP (only its SHA-256 and expiry are
    stored, :data:`REISSUE_TOKEN_TTL`) and DirectoryError says so: the VASP gives the
    token to the operator, proving the reissue is wanted by whoever controls the
    registered contacts, not by whoever holds the compromised key. The right token is
    consumed (single use) and the reissue proceeds.
    """
    name = _token_secret(vasp.id)
    stored = (directory.store.get_secret(name) or b"").decode("ascii", "replace").split()
    now = datetime.now(UTC)
    if token and len(stored) == 2:
        expires, digest = stored
        fresh = now < datetime.fromisoformat(expires)
        if fresh and hmac.compare_digest(
            digest, hashlib.sha256(token.strip().encode("utf-8")).hexdigest()
        ):
            directory.commit(Changes(secrets={name: b""}), what="contact verification")
            return
    recipients = sorted({t.email for t in directory.store.tokens_for(vasp.id) if t.verified})
    if not recipients:
        raise DirectoryError(
            f"the certificate of VASP {vasp.id} is revoked and it has no verified contact "
            "to confirm a reissue with"
        )
    fresh_token = new_token(48)
    expiry = (now + REISSUE_TOKEN_TTL).isoformat()
    value = f"{expiry} {hashlib.sha256(fresh_token.encode()).hexdigest()}".encode("ascii")
    emails = [
        directory.email(
            vasp.id, r, SUBJECT_REISSUE,
            f"The TRISA identity certificate of {vasp.common_name} was revoked. If you asked "
            "for a new one, give the directory operator this token (valid "
            f"{int(REISSUE_TOKEN_TTL.total_seconds() // 3600)} hours):\n\nToken: {fresh_token}\n",
            "reissue_verification",
        )
        for r in recipients
    ]
    directory.commit(Changes(secrets={name: value}, emails=emails), what="contact verification")
    wrong = "the contact token is wrong or expired; " if token else ""
    raise DirectoryError(
        f"the certificate of VASP {vasp.id} is revoked: a reissue needs contact "
        f"verification; {wrong}a token was sent to {len(recipients)} verified contact(s); "
        "run again with --contact-token TOKEN"
    )


def renew(
    directory: Directory,
    caller: x509.Certificate,
    csr: bytes,
    sectigo: SectigoClient,
    *,
    poll_interval: float = 1.0,
    timeout: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> IssuanceResult:
    """A VASP's own renewal by CSR, authenticated by the certificate it presented over
    mTLS (``caller``, already chain-verified by the TLS layer against the members
    endpoint's trust pool).

    The caller must be the **current, unrevoked** identity certificate of a VERIFIED,
    registered record: same DER as the record's ``identity_certificate``, not flagged
    revoked, valid now. A superseded or revoked certificate cannot renew (after a
    compromise only the operator reissues: ``gds reissue``). The CSR is then checked
    against the record's common name and issued as :func:`reissue` does; the result
    carries only the chain. Refusals are handshake errors of step 4 (the directory
    binds the caller to its record): not registered, not the current certificate,
    revoked.
    """
    step = HandshakeStep.BIND_CLIENT_RECORD
    cn = cert_common_name(caller)
    found = directory.store.get_lookup(common_name=cn) if cn else None
    if found is None or found[0] != VS.VERIFIED:
        raise PeerNotRegisteredError(
            f"no VERIFIED record for the presented certificate ({cn or 'no common name'})",
            step=step, peer=cn)
    summary = gds_pb2.LookupReply()
    summary.ParseFromString(found[1])
    vasp = directory.get(summary.id)
    current = parse_certificates(bytes(vasp.identity_certificate.data), source="record") if (
        vasp.HasField("identity_certificate") and vasp.identity_certificate.data) else []
    if not current or current[0] != caller:
        raise DirectoryMismatchError(
            f"the presented certificate (serial {serial_hex(caller.serial_number)}) is not "
            f"the current identity certificate of {vasp.common_name}; only the current "
            "certificate may renew", step=step, peer=cn)
    if vasp.identity_certificate.revoked:
        raise RevokedError(
            f"the identity certificate of {vasp.common_name} is revoked; after a "
            "compromise only the directory operator reissues", step=step, peer=cn)
    try:
        directory.check_validity(caller)
    except CertificateError as exc:
        raise DirectoryMismatchError(str(exc), step=step, peer=cn) from exc
    return reissue(directory, vasp.id, sectigo, csr=csr, source=f"renewal by {cn}",
                   poll_interval=poll_interval, timeout=timeout, sleep=sleep)


def check_reissuable(directory: Directory, vasp_id: str) -> models_pb2.VASP:
    """The VASP record if Sectigo may issue it a new certificate, else DirectoryError.

    Only VERIFIED records that came through registration qualify: an imported record
    (``gds add``) holds a certificate of its own CA, and a Sectigo certificate would
    silently supersede it (and break the node presenting it).
    """
    vasp = directory.get(vasp_id)
    if directory.store.get_origin(vasp.id) == "import":
        raise DirectoryError(
            f"cannot reissue for VASP {vasp.id}: it was imported; imported records are "
            "re-certified by their own CA and updated with the new certificate"
        )
    if vasp.verification_status != VS.VERIFIED:
        raise DirectoryError(
            f"cannot reissue for VASP {vasp.id}: it is "
            f"{state_name(vasp.verification_status)}, not VERIFIED"
        )
    return vasp


def revoke(
    directory: Directory,
    vasp_id: str,
    reason: str,
    *,
    sectigo: SectigoClient | Callable[[], SectigoClient] | None = None,
    ca: CertificateAuthority | None = None,
    ca_dir: str | os.PathLike[str] | None = None,
    source: str = "operator",
) -> models_pb2.VASP:
    """Revoke the VASP's identity certificate and set ``revoked`` on the record.

    The record's origin picks the authority. Registered records are revoked through
    Sectigo (``revoke(profile, reason, serial)``); imported ones through their local
    CA, ``ca`` or the one in ``ca_dir``, when given (otherwise the directory only flags
    the certificate, and its issuer must be told separately). ``sectigo`` may be a
    factory, called only when Sectigo is the authority, so that revoking an imported
    record needs no Sectigo configuration.
    """
    vasp = directory.get(vasp_id)
    if not vasp.HasField("identity_certificate") or not vasp.identity_certificate.data:
        raise DirectoryError(f"VASP {vasp.id} has no identity certificate to revoke")
    if vasp.identity_certificate.revoked:
        raise DirectoryError(f"the identity certificate of VASP {vasp.id} is already revoked")
    serial = int.from_bytes(bytes(vasp.identity_certificate.serial_number), "big")
    cert_id = serial_hex(serial)
    origin = directory.store.get_origin(vasp.id)
    record = directory.store.get_certificate(cert_id)
    if origin == "import":
        if ca is None and ca_dir is not None:
            ca = CertificateAuthority.open(ca_dir)
        if ca is not None:
            ca.revoke(serial, reason)
    else:
        client = sectigo() if callable(sectigo) else sectigo
        if client is None:
            raise ConfigurationError("revoking a Sectigo-issued certificate needs Sectigo access")
        profile = _profile_of(directory, record)
        client.revoke(profile, reason, cert_id)
    vasp.identity_certificate.revoked = True
    directory.audit(  # the verification state stays as it is
        vasp, vasp.verification_status, f"identity certificate {cert_id} revoked: {reason}",
        source,
    )
    certs = []
    if record is not None:
        record.status = gds_models_pb2.REVOKED
        record.details.revoked = True
        certs.append(record)
    # any reissue grace ends in the same commit: never acceptable after a revocation
    ended = grace_changes(vasp.id, "", None)
    directory.commit(Changes(vasp=vasp, certificates=certs, secrets=ended.secrets),
                     what="revoke")
    return vasp


def certificate_zip(directory: Directory, vasp_id: str) -> tuple[str, bytes]:
    """``(file name, bytes)`` of the latest downloaded certificate of a VASP:
    ``<common name>.zip`` holding the PKCS#12 encrypted with the registrant's password,
    or, for a CSR request, ``<common name>.pem``: the certificate chain only."""
    vasp = directory.get(vasp_id)
    for req in reversed(directory.store.certreqs_for(vasp.id)):
        data = directory.store.get_secret(f"{req.id}-cert")
        if data:
            stem = normalize_common_name(vasp.common_name)
            if directory.store.get_secret(f"{req.id}-csr"):
                try:
                    leaf, chain = _chain_of(data, req.common_name)
                except CertificateError as exc:
                    raise DirectoryError(f"VASP {vasp.id}: {exc}") from exc
                return f"{stem}.pem", certs_to_pem([leaf, *chain])
            return f"{stem}.zip", data
    raise DirectoryError(f"VASP {vasp.id} has no downloaded certificate")


# --------------------------------------------------------------------------- internals


def _latest(
    reqs: list[gds_models_pb2.CertificateRequest],
) -> gds_models_pb2.CertificateRequest | None:
    return reqs[-1] if reqs else None


def _registrant_material(
    directory: Directory, reqs: list[gds_models_pb2.CertificateRequest], new_id: str,
) -> dict[str, bytes]:
    """The secrets of a retried registration request ``new_id``: the registrant's CSR
    or PKCS#12 password, whichever the newest earlier request holds (a new password if
    none does)."""
    for req in reversed(reqs):
        for kind in ("csr", "password"):
            secret = directory.store.get_secret(f"{req.id}-{kind}")
            if secret:
                return {f"{new_id}-{kind}": secret}
    return {f"{new_id}-password": new_token(PASSWORD_LENGTH).encode("ascii")}


def _new_request(
    directory: Directory,
    vasp: models_pb2.VASP,
    reqs: list[gds_models_pb2.CertificateRequest],
    source: str,
    *,
    dns_names: tuple[str, ...] = (),
) -> gds_models_pb2.CertificateRequest:
    previous = _latest(reqs)
    names = list(dns_names) or (list(previous.dns_names) if previous is not None else [])
    req = gds_models_pb2.CertificateRequest(
        id=str(uuid.uuid4()),
        vasp=vasp.id,
        common_name=vasp.common_name,
        status=CRS.READY_TO_SUBMIT,
        dns_names=names,
        created=directory.now(),
        modified=directory.now(),
    )
    req.audit_log.append(directory.log_entry(
        gds_models_pb2.CertificateRequestLogEntry, CRS.INITIALIZED, CRS.READY_TO_SUBMIT,
        "certificate request created", source,
    ))
    return req


def _profile_of(directory: Directory, record: gds_models_pb2.Certificate | None) -> int:
    if record is not None and record.request:
        req = directory.store.get_certreq(record.request)
        if req is not None and req.profile.isdigit():
            return int(req.profile)
    raise DirectoryError("cannot tell the Sectigo profile of this certificate")


def _run(
    directory: Directory,
    vasp_id: str,
    certreq_id: str,
    sectigo: SectigoClient,
    *,
    reissue: bool,
    source: str,
    poll_interval: float,
    timeout: float,
    sleep: Callable[[float], None],
) -> IssuanceResult:
    """Drive one certificate request from its current state to COMPLETED."""
    req = directory.store.get_certreq(certreq_id)
    if req is None:
        raise DirectoryError(f"certificate request {certreq_id} disappeared")
    step: gds_models_pb2.CertificateRequest | _Failure = req
    if req.status == CRS.READY_TO_SUBMIT:
        step = _submit(directory, vasp_id, req, sectigo, reissue=reissue, source=source)
    if not isinstance(step, _Failure) and step.status == CRS.PROCESSING:
        step = _poll(directory, step, sectigo, poll_interval=poll_interval,
                     timeout=timeout, sleep=sleep, source=source)
    if not isinstance(step, _Failure) and step.status == CRS.DOWNLOADING:
        step = _download(directory, step, sectigo, source=source)
    if not isinstance(step, _Failure) and step.status == CRS.DOWNLOADED:
        done = _install(directory, vasp_id, step, reissue=reissue, source=source)
        if isinstance(done, IssuanceResult):
            return done
        step = done
    if isinstance(step, _Failure):
        _fail(directory, vasp_id, req.id, step, reissue=reissue, source=source)
        raise DirectoryError(
            f"certificate issuance for VASP {vasp_id} failed "
            f"({gds_models_pb2.CertificateRequestState.Name(step.state)}): "
            f"{step.reason}; run the command again to retry"
        )
    req = step
    raise DirectoryError(
        f"certificate request {req.id} is "
        f"{gds_models_pb2.CertificateRequestState.Name(req.status)}; nothing to do"
    )


def _save_req(directory: Directory, req: gds_models_pb2.CertificateRequest, **extra: Any) -> None:
    directory.commit(Changes(certreqs=[req], **extra), what="certificate request")


def _submit(
    directory: Directory, vasp_id: str, req: gds_models_pb2.CertificateRequest,
    sectigo: SectigoClient, *, reissue: bool, source: str,
) -> gds_models_pb2.CertificateRequest | _Failure:
    if not reissue:
        vasp = directory.get(vasp_id)
        if vasp.verification_status != VS.ISSUING_CERTIFICATE:
            directory.audit(vasp, VS.ISSUING_CERTIFICATE, "submitting certificate request",
                            source)
            directory.commit(Changes(vasp=vasp), what="submit")
    csr = directory.store.get_secret(f"{req.id}-csr")
    password = directory.store.get_secret(f"{req.id}-password")
    if not csr and not password:
        return _Failure(CRS.CR_ERRORED, "no PKCS#12 password stored for the request")
    try:
        authority = None
        for candidate in sectigo.authorities():
            if not candidate.get("enabled", True) or "id" not in candidate:
                continue
            if sectigo.balance(int(candidate["id"])) > 0:
                authority = candidate
                break
        if authority is None:
            return _Failure(CRS.CR_REJECTED, "no Sectigo authority has an available balance")
        batch_name = f"{directory.directory_id}-certreq-{req.id}"
        params: dict[str, str] = {}
        if csr:
            refused = _check_for_profile(sectigo, int(authority.get("profileId") or 0), csr,
                                         req.common_name)
            if refused is not None:
                return refused
            batch = sectigo.upload_csr(int(authority["profileId"]), f"{batch_name}.csr", csr)
        else:
            assert password is not None  # one of the two is stored (checked above)
            params = {
                "commonName": req.common_name,
                "dNSName": "\n".join([req.common_name, *[n for n in req.dns_names if n]]),
                "pkcs12Password": password.decode("utf-8"),
            }
            batch = sectigo.create_single_cert_batch(int(authority["id"]), batch_name, params)
    except SectigoAPIError as exc:
        return _Failure(
            CRS.CR_REJECTED if exc.status == 400 else CRS.CR_ERRORED,
            f"Sectigo refused the batch: {exc}",
        )
    except SectigoError as exc:
        return _Failure(CRS.CR_ERRORED, f"Sectigo request failed: {exc}")
    req.authority_id = int(authority["id"])
    req.profile = str(authority.get("profileId", ""))
    req.batch_id = int(batch.get("batchId", 0))
    req.batch_name = str(batch.get("batchName") or batch_name)
    req.batch_status = str(batch.get("status", ""))
    req.order_number = int(batch.get("orderNumber") or 0)
    req.creation_date = str(batch.get("creationDate") or "")
    req.params.clear()
    req.params.update({k: v for k, v in params.items() if k != "pkcs12Password"})
    directory.certreq_state(req, CRS.PROCESSING, f"batch {req.batch_id} created", source)
    _save_req(directory, req)
    return req


def _check_for_profile(
    sectigo: SectigoClient, profile_id: int, csr: bytes, common_name: str,
) -> _Failure | None:
    """Check the stored CSR again, with the profile's key rule (its ``keyAlgorithmInfo``,
    e.g. ``RSA - 4096``), right before it goes to the CA; a profile whose detail cannot
    be read keeps the RSA-2048 floor (Sectigo applies its own rule then)."""
    floor = MIN_RSA_BITS
    try:
        detail = sectigo.profile_detail(profile_id)
        floor = profile_min_rsa_bits(str(detail.get("keyAlgorithmInfo") or ""))
    except SectigoError as exc:
        log.info("Sectigo profile %s detail unavailable (%s); CSR key floor RSA-%d",
                 profile_id, peer_text(str(exc), 200), floor)
    try:
        check_csr(load_csr(csr), common_name, min_rsa_bits=floor)
    except CertificateError as exc:
        return _Failure(CRS.CR_REJECTED, f"CSR refused for Sectigo profile {profile_id}: {exc}")
    return None


def _poll(
    directory: Directory, req: gds_models_pb2.CertificateRequest, sectigo: SectigoClient, *,
    poll_interval: float, timeout: float, sleep: Callable[[float], None], source: str,
) -> gds_models_pb2.CertificateRequest | _Failure:
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        try:
            detail = sectigo.batch_detail(req.batch_id)
            info = sectigo.processing_info(req.batch_id)
        except SectigoAPIError as exc:
            if exc.status == 404:
                return _Failure(CRS.CR_ERRORED,
                               f"Sectigo no longer knows batch {req.batch_id}")
            raise DirectoryError(
                f"cannot check batch {req.batch_id}: {exc}; the request stays PROCESSING, "
                "run the command again to resume"
            ) from exc
        except SectigoError as exc:
            raise DirectoryError(
                f"cannot check batch {req.batch_id}: {exc}; the request stays PROCESSING, "
                "run the command again to resume"
            ) from exc
        status = normalize_status(str(detail.get("status") or ""))
        req.batch_status = status
        active = int(info.get("active") or 0)
        success = int(info.get("success") or 0)
        failed = int(info.get("failed") or 0)
        if active == 0:
            if status == READY_FOR_DOWNLOAD and success > 0:
                directory.certreq_state(req, CRS.DOWNLOADING, "batch ready", source)
                _save_req(directory, req)
                return req
            if (failed > 0 and success == 0) or status in _FAILED_STATES:
                reason = str(detail.get("rejectReason") or "")
                state = CRS.CR_REJECTED if reason or status == "REJECTED" else CRS.CR_ERRORED
                return _Failure(state, reason or f"batch {req.batch_id} is {status or 'failed'}")
        if time.monotonic() >= deadline:
            _save_req(directory, req)
            raise DirectoryError(
                f"batch {req.batch_id} is still {status or 'processing'} after {timeout:g}s; "
                "the request stays PROCESSING, run the command again to resume"
            )
        sleep(poll_interval)


def _download(
    directory: Directory, req: gds_models_pb2.CertificateRequest, sectigo: SectigoClient, *,
    source: str,
) -> gds_models_pb2.CertificateRequest | _Failure:
    try:
        data = sectigo.download_bytes(req.batch_id)
    except SectigoAPIError as exc:
        if exc.status == 404:
            return _Failure(CRS.CR_ERRORED, f"batch {req.batch_id} is gone: {exc}")
        raise DirectoryError(
            f"cannot download batch {req.batch_id}: {exc}; run the command again to resume"
        ) from exc
    except SectigoError as exc:
        raise DirectoryError(
            f"cannot download batch {req.batch_id}: {exc}; run the command again to resume"
        ) from exc
    directory.certreq_state(req, CRS.DOWNLOADED, "certificate downloaded", source)
    _save_req(directory, req, secrets={f"{req.id}-cert": data})
    return req


def open_zip(data: bytes, password: bytes) -> Identity:
    """Open a Sectigo download (zip of one PKCS#12) with its password."""
    fd, tmp = tempfile.mkstemp(prefix=".gds-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return load_identity(tmp, password=password)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _chain_of(
    data: bytes, common_name: str,
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """Leaf (the certificate naming ``common_name``) and ordered chain of a CSR batch
    download (a zip of PEM chains); CertificateError if there is no such leaf."""
    certs = parse_certificates(data, source="the downloaded certificate")
    from .service import cert_names

    want = normalize_common_name(common_name)
    leaves = [c for c in certs if want in cert_names(c)]
    if not leaves:
        raise CertificateError(f"the issued certificate does not name {common_name!r}")
    return leaves[0], order_chain(leaves[0], certs)


def _open_download(
    directory: Directory, req: gds_models_pb2.CertificateRequest,
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...], Identity | None] | _Failure:
    data = directory.store.get_secret(f"{req.id}-cert") or b""
    csr = directory.store.get_secret(f"{req.id}-csr")
    if csr:
        try:
            leaf, chain = _chain_of(data, req.common_name)
        except CertificateError as exc:
            return _Failure(CRS.CR_ERRORED, f"cannot read the downloaded certificate: {exc}")
        if spki_der(leaf.public_key()) != spki_der(load_csr(csr).public_key()):
            return _Failure(CRS.CR_ERRORED,
                            "the issued certificate does not carry the CSR's public key")
        return leaf, chain, None
    password = directory.store.get_secret(f"{req.id}-password") or b""
    try:
        identity = open_zip(data, password)
    except CertificateError as exc:
        return _Failure(CRS.CR_ERRORED, f"cannot open the downloaded certificate: {exc}")
    if normalize_common_name(req.common_name) not in _names(identity):
        return _Failure(CRS.CR_ERRORED,
                       f"the issued certificate does not name {req.common_name!r}")
    return identity.leaf, identity.chain, identity


def _install(
    directory: Directory, vasp_id: str, req: gds_models_pb2.CertificateRequest, *,
    reissue: bool, source: str,
) -> IssuanceResult | _Failure:
    opened = _open_download(directory, req)
    if isinstance(opened, _Failure):
        return opened
    leaf, chain, identity = opened
    vasp = directory.get(vasp_id)
    if not reissue and vasp.verification_status != VS.ISSUING_CERTIFICATE:
        return _Failure(
            CRS.CR_REJECTED,
            f"VASP is {state_name(vasp.verification_status)}, not ISSUING_CERTIFICATE",
        )
    record = directory.install_certificate(vasp, leaf, chain, request=req.id)
    req.certificate = record.id
    directory.certreq_state(req, CRS.COMPLETED, "certificate stored for delivery", source)
    if not reissue:
        directory.audit(vasp, VS.VERIFIED, "certificate issued", "automated")
    else:
        vasp.last_updated = directory.now()
    recipients = [t.email for t in directory.store.tokens_for(vasp.id) if t.verified][:1]
    how = ("open it with the PKCS#12 password you were given" if identity is not None else
           "it is the certificate chain only: install it with the private key of your CSR")
    emails = [
        directory.email(
            vasp.id, r, SUBJECT_WELCOME,
            f"Your TRISA identity certificate for {vasp.common_name} (serial {record.id}) "
            f"is ready; {how}.\n",
            "deliver_certs",
        )
        for r in recipients
    ]
    directory.commit(Changes(vasp=vasp, certreqs=[req], certificates=[record], emails=emails),
                     what="install certificate")
    return IssuanceResult(vasp=vasp, certreq=req, leaf=leaf, chain=tuple(chain),
                          identity=identity)


def _names(identity: Identity) -> list[str]:
    from .service import cert_names

    return cert_names(identity.leaf)


def _fail(
    directory: Directory, vasp_id: str, certreq_id: str, failure: _Failure, *,
    reissue: bool, source: str,
) -> None:
    """Record a failed request and release the VASP (never left ISSUING_CERTIFICATE)."""
    for _ in range(3):  # optimistic locking: re-read on a concurrent change
        req = directory.store.get_certreq(certreq_id)
        vasp = directory.get(vasp_id)
        if req is None:
            return
        req.reject_reason = failure.reason
        directory.certreq_state(req, failure.state, failure.reason, source)
        changes = Changes(certreqs=[req])
        if not reissue and vasp.verification_status == VS.ISSUING_CERTIFICATE:
            directory.audit(vasp, VS.REVIEWED, f"certificate issuance failed: {failure.reason}",
                            "automated")
            changes.vasp = vasp
        if directory.store.commit(changes):
            # the caller raises DirectoryError with the reason (the CLI prints it once)
            log.info("VASP %s: certificate request %s %s: %s", vasp_id, certreq_id,
                     gds_models_pb2.CertificateRequestState.Name(failure.state),
                     peer_text(failure.reason, 300))
            return
