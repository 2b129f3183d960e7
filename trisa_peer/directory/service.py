"""The directory's behaviour, independent of gRPC: :class:`Directory`.

The gRPC servicer (:mod:`.server`) and the operator CLI both call this class; it raises
only trisa-peer errors, which the servicer maps to status codes:

====================================  ===========================================
error                                 gRPC status
====================================  ===========================================
ConfigurationError, CertificateError  INVALID_ARGUMENT
DirectoryNotFoundError                NOT_FOUND
DirectoryError from ``register``      ALREADY_EXISTS (duplicate common name)
DirectoryError elsewhere              FAILED_PRECONDITION
StoreError                            UNAVAILABLE
====================================  ===========================================

State machines follow upstream ``pkg/gds`` (registration, review) with quirk 7 of
docs/architecture.md fixed (see :mod:`.issuance`).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import TypeVar

from cryptography import x509

from .._pb.gds.models.v1 import models_pb2 as gds_models_pb2
from .._pb.ivms101 import enum_pb2, ivms101_pb2
from .._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from .._pb.trisa.gds.models.v1beta1 import models_pb2
from ..certs import common_name
from ..clock import Clock, utcnow
from ..csr import check_csr, csr_pem, load_csr
from ..errors import (
    CertificateError,
    ConfigurationError,
    DirectoryError,
    DirectoryNotFoundError,
)
from ..fsutil import write_private
from .convert import certificate_proto, enum_name, rfc3339, serial_hex
from .grace import DEFAULT_REISSUE_GRACE
from .ivms101 import validate_legal_person
from .store import Changes, ContactToken, DirectoryStore, Email, SearchRow
from .validate import (
    new_token,
    normalize_common_name,
    parse_email,
    validate_common_name,
    validate_country,
    validate_endpoint,
)

__all__ = [
    "CONTACT_KINDS",
    "DEFAULT_DIRECTORY_ID",
    "MAX_SEARCH_TERMS",
    "Directory",
    "RegisterResult",
    "state_name",
]

_Entry = TypeVar(
    "_Entry", gds_models_pb2.AuditLogEntry, gds_models_pb2.CertificateRequestLogEntry
)

log = logging.getLogger(__name__)

DEFAULT_DIRECTORY_ID = "trisa.localhost"
CONTACT_KINDS = ("technical", "administrative", "legal", "billing")
TOKEN_LENGTH = 48
MAX_SEARCH_TERMS = 16  # per Search field
PASSWORD_LENGTH = 16

VS = models_pb2.VerificationState
CRS = gds_models_pb2.CertificateRequestState

SUBJECT_VERIFY = "TRISA: Please verify your email address"
SUBJECT_REVIEW = "New TRISA Global Directory Registration Request"
SUBJECT_UPDATE = "TRISA Global Directory Registration Update"
SUBJECT_WELCOME = "Welcome to the TRISA network!"


def state_name(value: int) -> str:
    """``6`` → ``"VERIFIED"``; a value this build does not know → ``"UNKNOWN(99)"``."""
    return enum_name(VS, value)


@dataclass(frozen=True)
class RegisterResult:
    vasp: models_pb2.VASP
    pkcs12password: str
    message: str


class Directory:
    """A Global Directory Service over a :class:`~.store.DirectoryStore`.

    A context manager: leaving the ``with`` block closes the store.

    ``directory_id`` is the ``registered_directory`` of new records; ``outbox_dir``
    (optional) receives a ``.eml`` file for every email (the store's ``emails`` table
    always does); ``admin_email`` receives review requests.

    Freshness (the one rule for replicas): nothing here caches what the store returns,
    and the gRPC server's Lookup reply cache (:mod:`.replycache`) is checked against the
    store's change log on every request, so a Lookup or Search that begins after a
    write has committed -- through this process, another replica on the same database,
    or the CLI -- returns that write (see :mod:`.store`). Nodes' own lookup caches
    (:class:`~.client.DirectoryClient`, ``cache_ttl``) are outside this rule: they are
    bounded by their TTL.
    """

    def __init__(
        self,
        store: DirectoryStore,
        *,
        directory_id: str = DEFAULT_DIRECTORY_ID,
        outbox_dir: str | Path | None = None,
        admin_email: str | None = None,
        clock: Clock | None = None,
        maintenance: bool = False,
    ) -> None:
        self.store = store
        self.directory_id = directory_id
        self.outbox_dir = Path(outbox_dir) if outbox_dir is not None else None
        self.admin_email = admin_email or f"admin@{directory_id}"
        self.maintenance = maintenance
        self._clock: Clock = clock or utcnow
        #: how long a superseded certificate stays acceptable after a planned reissue
        #: (``gds serve --reissue-grace``; ``gds reissue --grace`` overrides it once)
        self.reissue_grace = DEFAULT_REISSUE_GRACE
        #: how ``trisa-peer`` reaches this directory (``--directory HOST:PORT`` and its
        #: TLS option), put into the verification email's command; set by ``gds serve``
        self.client_flags = ""

    def now(self) -> str:
        return rfc3339(self._clock())

    def utcnow(self) -> datetime:
        """The directory's clock (UTC)."""
        return self._clock()

    def _flags(self) -> str:
        return f" {self.client_flags}" if self.client_flags else ""

    def close(self) -> None:
        """Close the store; the directory is unusable afterwards."""
        self.store.close()

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- helpers

    def get(self, vasp_id: str) -> models_pb2.VASP:
        """The stored VASP record, or DirectoryNotFoundError."""
        vasp = self.store.get_vasp(vasp_id.strip())
        if vasp is None:
            raise DirectoryNotFoundError(f"no VASP with id {vasp_id!r}")
        return vasp

    def log_entry(
        self, entry_type: type[_Entry], previous: int, current: int, description: str,
        source: str,
    ) -> _Entry:
        """An audit log entry (``AuditLogEntry`` of a VASP or ``CertificateRequestLogEntry``
        of a certificate request) of a state change, stamped now."""
        # The two entry types take different state enums (both ints on the wire); the
        # callers pass the enum of the record they log for.
        return entry_type(
            timestamp=self.now(),
            previous_state=previous,  # type: ignore[arg-type]
            current_state=current,  # type: ignore[arg-type]
            description=description,
            source=source,
        )

    def audit(
        self,
        vasp: models_pb2.VASP,
        new_state: models_pb2.VerificationState.ValueType,
        description: str,
        source: str,
    ) -> None:
        """Move ``vasp`` to ``new_state`` and append an audit log entry to its extra data."""
        extra = self.extra_data(vasp)
        extra.audit_log.append(self.log_entry(
            gds_models_pb2.AuditLogEntry, vasp.verification_status, new_state, description, source
        ))
        vasp.verification_status = new_state
        vasp.last_updated = self.now()
        self.set_extra_data(vasp, extra)

    @staticmethod
    def extra_data(vasp: models_pb2.VASP) -> gds_models_pb2.GDSExtraData:
        extra = gds_models_pb2.GDSExtraData()
        if vasp.HasField("extra"):
            vasp.extra.Unpack(extra)
        return extra

    @staticmethod
    def set_extra_data(vasp: models_pb2.VASP, extra: gds_models_pb2.GDSExtraData) -> None:
        vasp.extra.Pack(extra)

    def email(self, vasp_id: str, recipient: str, subject: str, body: str, reason: str) -> Email:
        return Email(
            recipient=recipient,
            subject=subject,
            body=body,
            reason=reason,
            vasp_id=vasp_id,
            created=self.now(),
        )

    def deliver(self, emails: Sequence[Email]) -> None:
        """Write committed emails to the outbox directory (best effort: the table is the
        record of truth)."""
        if self.outbox_dir is None:
            return
        for mail in emails:
            msg = EmailMessage()
            msg["To"] = mail.recipient
            msg["From"] = self.admin_email
            msg["Subject"] = mail.subject
            msg["X-TRISA-Reason"] = mail.reason
            msg["X-TRISA-VASP"] = mail.vasp_id
            msg.set_content(mail.body)
            name = f"{mail.created.replace(':', '')}-{uuid.uuid4().hex[:8]}-{mail.reason}.eml"
            try:
                self.outbox_dir.mkdir(parents=True, exist_ok=True)
                write_private(self.outbox_dir / name, msg.as_bytes())
            except (OSError, ConfigurationError) as exc:
                log.warning("cannot write email to the outbox: %s", exc)

    def commit(self, changes: Changes, *, what: str) -> None:
        """Commit; a stale version (concurrent change) becomes DirectoryError."""
        if not self.store.commit(changes):
            if changes.create:
                assert changes.vasp is not None  # a create always carries its VASP
                raise DirectoryError(
                    f"common name {changes.vasp.common_name!r} is already registered"
                )
            raise DirectoryError(f"{what}: the record changed concurrently; try again")
        self.deliver(changes.emails)

    # ----------------------------------------------------------------- Register

    def register(
        self, request: gds_pb2.RegisterRequest, *, csr: bytes | None = None,
    ) -> RegisterResult:
        """Validate (the legal person with the IVMS101 rules of :mod:`.ivms101`) and store
        a ``RegisterRequest`` (as upstream ``gds.Register``).

        With ``csr`` (PEM or DER; the TRISA message has no field for it, the gRPC server
        takes it from the call's metadata, see :data:`trisa_peer.csr.CSR_METADATA`) the
        certificate will be issued for that CSR: it is checked here
        (:func:`trisa_peer.csr.check_csr` against the registered common name,
        CertificateError with the reason, nothing stored) and no PKCS#12 password is
        made."""
        host, _ = validate_endpoint(request.trisa_endpoint)
        common_name = validate_common_name(request.common_name or host)
        if not request.HasField("entity"):
            raise ConfigurationError("an IVMS101 legal person entity with a name is required")
        # IVMS101 as upstream validates it, every problem named; nothing is rewritten
        validate_legal_person(request.entity)
        csr_secret = b""
        if csr is not None:
            checked = load_csr(csr)
            check_csr(checked, common_name)
            csr_secret = csr_pem(checked)
        if self.store.get_lookup(common_name=common_name) is not None:
            raise DirectoryError(f"common name {common_name!r} is already registered")
        vasp = models_pb2.VASP(
            id=str(uuid.uuid4()),
            registered_directory=self.directory_id,
            common_name=common_name,
            trisa_endpoint=request.trisa_endpoint.strip(),
            website=request.website,
            business_category=request.business_category,
            vasp_categories=list(request.vasp_categories),
            established_on=request.established_on,
            verification_status=VS.SUBMITTED,
            first_listed=self.now(),
            last_updated=self.now(),
            version=models_pb2.Version(pid=1, version=1),
        )
        vasp.entity.CopyFrom(request.entity)
        if request.HasField("trixo"):
            vasp.trixo.CopyFrom(request.trixo)
        tokens = self._contacts(vasp, request.contacts)
        certreq = gds_models_pb2.CertificateRequest(
            id=str(uuid.uuid4()),
            vasp=vasp.id,
            common_name=common_name,
            status=CRS.INITIALIZED,
            created=self.now(),
            modified=self.now(),
        )
        password = "" if csr_secret else new_token(PASSWORD_LENGTH)
        secrets = ({f"{certreq.id}-csr": csr_secret} if csr_secret else
                   {f"{certreq.id}-password": password.encode("ascii")})
        extra = gds_models_pb2.GDSExtraData()
        extra.certificate_requests.append(certreq.id)
        extra.audit_log.append(self.log_entry(
            gds_models_pb2.AuditLogEntry, VS.NO_VERIFICATION, VS.SUBMITTED, "register",
            "automated",
        ))
        emails = [
            self.email(
                vasp.id,
                tok.email,
                SUBJECT_VERIFY,
                f"Please verify your email address for the TRISA registration of "
                f"{common_name}.\n\nVASP: {vasp.id}\nToken: {tok.token}\n\n"
                f"trisa-peer gds verify-contact{self._flags()} --id {vasp.id} "
                f"--token {tok.token}\n",
                "verify_contact",
            )
            for tok in tokens
        ]
        self.set_extra_data(vasp, extra)
        self.commit(
            Changes(
                vasp=vasp,
                create=True,
                origin="register",
                certreqs=[certreq],
                secrets=secrets,
                tokens=tokens,
                emails=emails,
            ),
            what="register",
        )
        delivery = (
            "certificate signing request accepted: no PKCS#12 password, the certificate "
            "chain for your key is delivered after review" if csr_secret else
            "pkcs12 password attached, this is the only time it will be displayed"
        )
        return RegisterResult(
            vasp=vasp,
            pkcs12password=password,
            message=(
                "a verification code has been sent to contact emails, please check "
                f"spam folders if not arrived; {delivery}"
            ),
        )

    def _contacts(
        self, vasp: models_pb2.VASP, contacts: models_pb2.Contacts
    ) -> list[ContactToken]:
        by_email: dict[str, list[str]] = {}
        for kind in CONTACT_KINDS:
            contact = getattr(contacts, kind)
            if not (contact.name.strip() or contact.email.strip() or contact.phone.strip()):
                continue  # zero-value contacts are nulled
            if len(contact.name.strip()) < 2:
                raise ConfigurationError(
                    f"{kind} contact name must be at least 2 characters"
                )
            email = parse_email(contact.email)
            stored = getattr(vasp.contacts, kind)
            stored.CopyFrom(contact)
            stored.email = email
            by_email.setdefault(email.lower(), []).append(kind)
        if not by_email:
            raise ConfigurationError("at least one contact with a name and email is required")
        tokens = []
        for _, kinds in by_email.items():
            token = new_token(TOKEN_LENGTH)
            email = getattr(vasp.contacts, kinds[0]).email
            for kind in kinds:
                extra = gds_models_pb2.GDSContactExtraData(verified=False, token=token)
                getattr(vasp.contacts, kind).extra.Pack(extra)
            tokens.append(ContactToken(token=token, vasp_id=vasp.id, email=email,
                                       kinds=tuple(kinds)))
        return tokens

    # ----------------------------------------------------------------- VerifyContact

    def verify_contact(
        self, vasp_id: str, token: str
    ) -> tuple[models_pb2.VerificationState.ValueType, str]:
        """Mark the contact of ``token`` verified; returns ``(state, message)``."""
        token = token.strip()
        if not token:
            raise ConfigurationError("a verification token is required")
        found = self.store.get_token(token)
        if found is None or (vasp_id.strip() and found.vasp_id != vasp_id.strip()):
            raise DirectoryNotFoundError("could not verify contact: unknown token")
        vasp = self.get(found.vasp_id)
        if found.verified:
            return vasp.verification_status, "email address already verified"
        now = self.now()
        for kind in found.kinds:
            contact = getattr(vasp.contacts, kind)
            contact_extra = gds_models_pb2.GDSContactExtraData()
            if contact.HasField("extra"):
                contact.extra.Unpack(contact_extra)
            contact_extra.verified = True
            contact.extra.Pack(contact_extra)
        emails: list[Email] = []
        message = "email successfully verified"
        if vasp.verification_status == VS.SUBMITTED:
            self.audit(vasp, VS.EMAIL_VERIFIED, "contact email verified", found.email)
            extra = self.extra_data(vasp)
            extra.admin_verification_token = new_token(TOKEN_LENGTH)
            self.set_extra_data(vasp, extra)
            emails.append(
                self.email(
                    vasp.id,
                    self.admin_email,
                    SUBJECT_REVIEW,
                    f"Registration request from {vasp.common_name} ({vasp.id}) is ready "
                    f"for review.\n\ntrisa-peer gds review --id {vasp.id} --accept\n",
                    "review_request",
                )
            )
            self.audit(vasp, VS.PENDING_REVIEW, "review email sent", "automated")
            message = "email successfully verified; registration is pending review"
        verified = dataclasses.replace(found, verified=True, verified_on=now)
        self.commit(Changes(vasp=vasp, tokens=[verified], emails=emails), what="verify contact")
        return vasp.verification_status, message

    # ----------------------------------------------------------------- Lookup

    def _resolve(self, vasp_id: str, common_name: str) -> tuple[int, bytes] | None:
        if vasp_id.strip():
            return self.store.get_lookup(vasp_id=vasp_id.strip())
        found = self.store.get_lookup(common_name=common_name)
        if found is not None:
            return found
        ids = self.store.resolve_name(common_name, prefix=False)
        if not ids and len(common_name.strip()) >= 3:
            ids = self.store.resolve_name(common_name, prefix=True)
        if len(ids) != 1:
            return None
        return self.store.get_lookup(vasp_id=ids[0])

    @staticmethod
    def _key_text(vasp_id: str, common_name: str) -> str:
        return f"id {vasp_id.strip()!r}" if vasp_id.strip() else f"common name {common_name!r}"

    def lookup(self, *, vasp_id: str = "", common_name: str = "") -> gds_pb2.LookupReply:
        """The ``LookupReply`` of a VERIFIED VASP (id wins over common name)."""
        if not vasp_id.strip() and not common_name.strip():
            raise ConfigurationError("lookup needs an id or a common name")
        found = self._resolve(vasp_id, common_name)
        if found is None or found[0] != VS.VERIFIED:
            raise DirectoryNotFoundError(
                f"no verified VASP with {self._key_text(vasp_id, common_name)}"
            )
        reply = gds_pb2.LookupReply()
        reply.ParseFromString(found[1])
        return reply

    def verification(
        self, *, vasp_id: str = "", common_name: str = ""
    ) -> gds_pb2.VerificationReply:
        """The ``VerificationReply`` of any VASP, verified or not."""
        if not vasp_id.strip() and not common_name.strip():
            raise ConfigurationError("verification needs an id or a common name")
        found = self._resolve(vasp_id, common_name)
        if found is None:
            raise DirectoryNotFoundError(f"no VASP with {self._key_text(vasp_id, common_name)}")
        summary = gds_pb2.LookupReply()
        summary.ParseFromString(found[1])
        vasp = self.get(summary.id)
        return gds_pb2.VerificationReply(
            verification_status=vasp.verification_status,
            service_status=vasp.service_status,
            verified_on=vasp.verified_on,
            first_listed=vasp.first_listed,
            last_updated=vasp.last_updated,
        )

    def search(
        self,
        *,
        names: Sequence[str] = (),
        websites: Sequence[str] = (),
        countries: Sequence[str] = (),
        categories: Sequence[str] = (),
    ) -> list[SearchRow]:
        """VERIFIED VASPs: name prefix OR website host, AND country, AND category.

        At most :data:`MAX_SEARCH_TERMS` values per field (ConfigurationError): each
        value is a term of one SQL statement, and a request of 256 KiB could otherwise
        carry tens of thousands."""
        if not any((names, websites, countries, categories)):
            raise ConfigurationError("search needs a name, website, country or category")
        for field_name, values in (("name", names), ("website", websites),
                                   ("country", countries), ("category", categories)):
            if len(values) > MAX_SEARCH_TERMS:
                raise ConfigurationError(
                    f"search takes at most {MAX_SEARCH_TERMS} values per field "
                    f"({len(values)} {field_name} values given)"
                )
        return self.store.search(
            names=names, websites=websites, countries=countries, categories=categories
        )

    def status(self) -> gds_pb2.ServiceState:
        now = self._clock()
        return gds_pb2.ServiceState(
            status=(
                gds_pb2.ServiceState.MAINTENANCE
                if self.maintenance
                else gds_pb2.ServiceState.HEALTHY
            ),
            not_before=rfc3339(now + timedelta(minutes=30)),
            not_after=rfc3339(now + timedelta(minutes=60)),
        )

    # ----------------------------------------------------------------- operator

    def list_vasps(self, *, status: int | None = None) -> list[models_pb2.VASP]:
        return self.store.list_vasps(status=status)

    def reject(
        self, vasp_id: str, reason: str, *, source: str = "operator"
    ) -> models_pb2.VASP:
        """PENDING_REVIEW → REJECTED; open certificate requests → CR_REJECTED."""
        vasp = self.get(vasp_id)
        if vasp.verification_status != VS.PENDING_REVIEW:
            raise DirectoryError(
                f"cannot reject VASP {vasp.id}: it is "
                f"{state_name(vasp.verification_status)}, not PENDING_REVIEW"
            )
        text = reason.strip() or "rejected by the directory operator"
        self.audit(vasp, VS.REJECTED, text, source)
        reqs = []
        for req in self.store.certreqs_for(vasp.id):
            if req.status not in (CRS.COMPLETED, CRS.CR_REJECTED, CRS.CR_ERRORED):
                self.certreq_state(req, CRS.CR_REJECTED, f"registration rejected: {text}",
                                   source)
                req.reject_reason = text
                reqs.append(req)
        emails = [
            self.email(vasp.id, tok.email, SUBJECT_UPDATE,
                       f"Your TRISA registration for {vasp.common_name} was rejected: {text}\n",
                       "rejection")
            for tok in self.store.tokens_for(vasp.id)
        ]
        self.commit(Changes(vasp=vasp, certreqs=reqs, emails=emails), what="reject")
        return vasp

    def certreq_state(
        self,
        req: gds_models_pb2.CertificateRequest,
        new_state: gds_models_pb2.CertificateRequestState.ValueType,
        description: str,
        source: str,
    ) -> None:
        req.audit_log.append(self.log_entry(
            gds_models_pb2.CertificateRequestLogEntry, req.status, new_state, description, source
        ))
        req.status = new_state
        req.modified = self.now()

    def certificate_record(
        self, vasp: models_pb2.VASP, leaf: x509.Certificate, chain: Sequence[x509.Certificate],
        *, request: str = "",
    ) -> gds_models_pb2.Certificate:
        """A ``gds.models.v1.Certificate`` record (id = upper-hex serial)."""
        return gds_models_pb2.Certificate(
            id=serial_hex(leaf.serial_number),
            request=request,
            vasp=vasp.id,
            status=gds_models_pb2.ISSUED,
            details=certificate_proto(leaf, tuple(chain)),
        )

    def install_certificate(
        self,
        vasp: models_pb2.VASP,
        leaf: x509.Certificate,
        chain: Sequence[x509.Certificate],
        *,
        request: str = "",
    ) -> gds_models_pb2.Certificate:
        """Set ``vasp.identity_certificate`` (in memory) and return its record."""
        record = self.certificate_record(vasp, leaf, chain, request=request)
        vasp.identity_certificate.CopyFrom(record.details)
        extra = self.extra_data(vasp)
        if record.id not in extra.certificates:
            extra.certificates.append(record.id)
        self.set_extra_data(vasp, extra)
        return record

    def check_validity(self, leaf: x509.Certificate) -> None:
        """CertificateError unless ``leaf`` is valid now: an expired or not yet valid
        certificate must not become a VERIFIED record's identity."""
        now = self._clock()
        start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        dates = f"valid from {rfc3339(start)} until {rfc3339(end)}"
        if now > end:
            raise CertificateError(
                f"certificate serial {serial_hex(leaf.serial_number)} has expired ({dates})"
            )
        if now < start:
            raise CertificateError(
                f"certificate serial {serial_hex(leaf.serial_number)} is not yet valid "
                f"({dates})"
            )

    def superseded(self, vasp_id: str) -> list[str]:
        """Serials (upper hex) of identity certificates replaced by a newer one."""
        vasp = self.get(vasp_id)
        current = (
            serial_hex(bytes(vasp.identity_certificate.serial_number))
            if vasp.HasField("identity_certificate")
            else ""
        )
        return [c.id for c in self.store.certificates_for(vasp.id) if c.id != current]

    # ----------------------------------------------------------------- import

    def add(
        self,
        *,
        common_name: str,
        endpoint: str,
        certificates: Sequence[x509.Certificate],
        name: str = "",
        country: str = "",
        website: str = "",
        signing_certificates: Sequence[x509.Certificate] = (),
        source: str = "operator",
    ) -> models_pb2.VASP:
        """Import a VERIFIED record for an existing certificate of any CA."""
        cn = validate_common_name(common_name)
        validate_endpoint(endpoint)
        code = validate_country(country) if country.strip() else ""
        leaf, chain = pick_leaf(cn, certificates)
        self.check_validity(leaf)
        if self.store.get_lookup(common_name=cn) is not None:
            raise DirectoryError(f"common name {cn!r} is already registered")
        now = self.now()
        vasp = models_pb2.VASP(
            id=str(uuid.uuid4()),
            registered_directory=self.directory_id,
            common_name=cn,
            trisa_endpoint=endpoint.strip(),
            website=website,
            verification_status=VS.VERIFIED,
            verified_on=now,
            first_listed=now,
            last_updated=now,
            version=models_pb2.Version(pid=1, version=1),
        )
        vasp.entity.name.name_identifiers.append(
            ivms101_pb2.LegalPersonNameId(
                legal_person_name=name.strip() or cn,
                legal_person_name_identifier_type=enum_pb2.LEGAL_PERSON_NAME_TYPE_CODE_LEGL,
            )
        )
        if code:
            vasp.entity.country_of_registration = code
        validate_legal_person(vasp.entity)
        record = self.install_certificate(vasp, leaf, chain)
        for signing in signing_certificates:
            vasp.signing_certificates.append(certificate_proto(signing))
        extra = self.extra_data(vasp)
        extra.audit_log.append(
            gds_models_pb2.AuditLogEntry(
                timestamp=now,
                previous_state=VS.NO_VERIFICATION,
                current_state=VS.VERIFIED,
                description="imported by the directory operator",
                source=source,
            )
        )
        self.set_extra_data(vasp, extra)
        self.commit(
            Changes(vasp=vasp, create=True, origin="import", certificates=[record]),
            what="add",
        )
        return vasp

    def update_certificate(
        self,
        vasp_id: str,
        certificates: Sequence[x509.Certificate],
        *,
        source: str = "operator",
        grace: timedelta | None = None,
    ) -> models_pb2.VASP:
        """Replace the identity certificate (a planned rotation); the old serial is kept
        as superseded and stays acceptable for binding for ``grace`` (default
        :attr:`reissue_grace`; 0 for none), in the same commit. A revoked record's old
        certificate gets no grace."""
        from .grace import grace_changes

        vasp = self.get(vasp_id)
        old = vasp.identity_certificate
        old_serial = serial_hex(bytes(old.serial_number)) if old.serial_number else ""
        old_revoked = old.revoked
        leaf, chain = pick_leaf(vasp.common_name, certificates)
        self.check_validity(leaf)
        record = self.install_certificate(vasp, leaf, chain)
        vasp.last_updated = self.now()
        span = grace if grace is not None else self.reissue_grace
        changes = Changes(vasp=vasp, certificates=[record])
        until = self.utcnow() + span if span > timedelta(0) else None
        if old_serial and old_serial != record.id and until is not None and not old_revoked:
            changes.secrets.update(grace_changes(vasp.id, old_serial, until).secrets)
        else:
            changes.secrets.update(grace_changes(vasp.id, "", None).secrets)
        self.commit(changes, what="update certificate")
        log.info("VASP %s: identity certificate replaced by %s (%s)", vasp.id, record.id, source)
        return vasp


def cert_names(cert: x509.Certificate) -> list[str]:
    """CN and SAN DNS names of a certificate, lower-case."""
    cn = common_name(cert)
    names = [cn.lower()] if cn else []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names.extend(n.lower() for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return names


def pick_leaf(
    common_name: str, certificates: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """Leaf = first certificate whose CN/SAN matches ``common_name`` (else the first);
    chain = the rest. The leaf must match the common name (ConfigurationError)."""
    if not certificates:
        raise ConfigurationError("no certificates given")
    cn = normalize_common_name(common_name)
    leaf = next((c for c in certificates if cn in cert_names(c)), certificates[0])
    if cn not in cert_names(leaf):
        shown = ", ".join(dict.fromkeys(cert_names(leaf))) or "no names"
        raise ConfigurationError(
            f"certificate does not match common name {common_name!r} (it names {shown})"
        )
    chain = tuple(c for c in certificates if c is not leaf)
    return leaf, chain
