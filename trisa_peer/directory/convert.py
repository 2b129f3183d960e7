"""Conversions between the GDS protobuf messages and trisa-peer's own values.

- :func:`certificate_proto`: an x509 leaf (+ chain) → ``models.Certificate`` as the GDS
  certman fills it (``data`` = PEM leaf, ``chain`` = gzip PEM of leaf + chain).
- :func:`lookup_reply` / :func:`display_name`: a stored ``VASP`` → the ``LookupReply``
  projection (upstream ``gds.Lookup``).
- :func:`peer_record`: a ``LookupReply`` (ours or a real GDS's) → :class:`PeerRecord`,
  accepting ``data`` as PEM or DER and ``chain`` as gzip PEM, PEM or DER.
- :func:`enum_name`: the name of an enum value, or ``UNKNOWN(99)`` for a value this
  build's protos do not define. Enums are open (as in protobuf): a newer peer may send a
  value we do not know; it is stored and returned unchanged and never raises.
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from google.protobuf.descriptor import EnumDescriptor

from .._pb.ivms101 import enum_pb2
from .._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from .._pb.trisa.gds.models.v1beta1 import ca_pb2, models_pb2
from ..certs import (
    cert_to_pem,
    certs_to_pem,
    common_name,
    fingerprint,
    format_serial,
    parse_certificates,
)
from ..errors import CertificateError, DirectoryError
from ..records import PeerRecord

__all__ = [
    "certificate_from_proto",
    "certificate_proto",
    "display_name",
    "enum_name",
    "go_serial",
    "lookup_reply",
    "peer_record",
    "rfc3339",
    "serial_hex",
]

# Go's x509.SignatureAlgorithm.String() names, as the GDS records them.
_GO_SIGNATURE_NAMES: dict[str, str] = {
    SignatureAlgorithmOID.RSA_WITH_SHA1.dotted_string: "SHA1-RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA256.dotted_string: "SHA256-RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA384.dotted_string: "SHA384-RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA512.dotted_string: "SHA512-RSA",
    SignatureAlgorithmOID.RSASSA_PSS.dotted_string: "SHA256-RSAPSS",
    SignatureAlgorithmOID.ECDSA_WITH_SHA1.dotted_string: "ECDSA-SHA1",
    SignatureAlgorithmOID.ECDSA_WITH_SHA256.dotted_string: "ECDSA-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384.dotted_string: "ECDSA-SHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512.dotted_string: "ECDSA-SHA512",
    SignatureAlgorithmOID.ED25519.dotted_string: "Ed25519",
}

_NAME_FIELDS: tuple[tuple[str, x509.ObjectIdentifier], ...] = (
    ("organization", NameOID.ORGANIZATION_NAME),
    ("organizational_unit", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("street_address", NameOID.STREET_ADDRESS),
    ("locality", NameOID.LOCALITY_NAME),
    ("province", NameOID.STATE_OR_PROVINCE_NAME),
    ("postal_code", NameOID.POSTAL_CODE),
    ("country", NameOID.COUNTRY_NAME),
)

# ivms101 LegalPersonNameTypeCode values (enum.proto).
_LEGL = enum_pb2.LEGAL_PERSON_NAME_TYPE_CODE_LEGL
_SHRT = enum_pb2.LEGAL_PERSON_NAME_TYPE_CODE_SHRT
_TRAD = enum_pb2.LEGAL_PERSON_NAME_TYPE_CODE_TRAD


class _EnumType(Protocol):
    """A generated protobuf enum wrapper (``models_pb2.BusinessCategory``)."""

    @property
    def DESCRIPTOR(self) -> EnumDescriptor: ...  # protobuf's name


def enum_name(enum: _EnumType, value: int) -> str:
    """``enum``'s name for ``value``, or ``UNKNOWN(value)`` when the enum does not define
    it (a newer release's value): never raises, unlike ``Enum.Name``."""
    known = enum.DESCRIPTOR.values_by_number.get(int(value))
    return known.name if known is not None else f"UNKNOWN({int(value)})"


def rfc3339(when: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, seconds precision (Go's ``time.RFC3339``)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_serial(serial: int) -> bytes:
    """Big-endian minimal bytes of a positive serial (Go ``big.Int.Bytes()``)."""
    return serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")


def serial_hex(serial: int | bytes) -> str:
    """Upper-case hex of a serial (the GDS certificate record id), even length."""
    value = int.from_bytes(serial, "big") if isinstance(serial, bytes) else serial
    text = format_serial(value)
    return text if len(text) % 2 == 0 else "0" + text


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


def _name_proto(name: x509.Name) -> ca_pb2.Name:
    proto = ca_pb2.Name()
    proto.common_name = common_name(name)
    serials = _attr(name, NameOID.SERIAL_NUMBER)
    proto.serial_number = serials[0] if serials else ""
    for field_name, oid in _NAME_FIELDS:
        getattr(proto, field_name).extend(_attr(name, oid))
    return proto


def _public_key_algorithm(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ECDSA"
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return "Ed25519"
    return "UNKNOWN"


def certificate_proto(
    leaf: x509.Certificate,
    chain: tuple[x509.Certificate, ...] | list[x509.Certificate] = (),
    *,
    revoked: bool = False,
) -> ca_pb2.Certificate:
    """``models.Certificate`` for ``leaf``: fields copied, ``data`` = PEM leaf,
    ``chain`` = gzip PEM of the leaf followed by ``chain`` (as the GDS stores it)."""
    proto = ca_pb2.Certificate()
    proto.version = leaf.version.value + 1
    proto.serial_number = go_serial(leaf.serial_number)
    proto.signature = leaf.signature
    proto.signature_algorithm = _GO_SIGNATURE_NAMES.get(
        leaf.signature_algorithm_oid.dotted_string, leaf.signature_algorithm_oid.dotted_string
    )
    proto.public_key_algorithm = _public_key_algorithm(leaf)
    proto.subject.CopyFrom(_name_proto(leaf.subject))
    proto.issuer.CopyFrom(_name_proto(leaf.issuer))
    proto.not_before = rfc3339(leaf.not_valid_before_utc)
    proto.not_after = rfc3339(leaf.not_valid_after_utc)
    proto.revoked = revoked
    proto.data = cert_to_pem(leaf)
    proto.chain = gzip.compress(certs_to_pem([leaf, *chain]), mtime=0)
    return proto


def certificate_from_proto(
    proto: ca_pb2.Certificate, *, source: str
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]] | None:
    """``(leaf, rest of chain)`` of a ``models.Certificate``; ``None`` when it has no data.

    ``data`` may be PEM (what the GDS stores) or DER (what the proto comment says);
    ``chain`` may be gzip PEM, PEM or DER, leaf first or not. Raises CertificateError.
    """
    data = bytes(proto.data)
    if not data:
        return None
    leaf = parse_certificates(data, source=f"{source} data")[0]
    rest: list[x509.Certificate] = []
    if proto.chain:
        leaf_fp = fingerprint(leaf)
        for cert in parse_certificates(bytes(proto.chain), source=f"{source} chain"):
            if fingerprint(cert) != leaf_fp:
                rest.append(cert)
    return leaf, tuple(rest)


def display_name(vasp: models_pb2.VASP) -> str:
    """``VASP.Name()``: the first TRADING name, else SHORT, else LEGAL (else any)."""
    ids = list(vasp.entity.name.name_identifiers)
    for wanted in (_TRAD, _SHRT, _LEGL):
        for item in ids:
            if item.legal_person_name_identifier_type == wanted and item.legal_person_name:
                return str(item.legal_person_name)
    for item in ids:
        if item.legal_person_name:
            return str(item.legal_person_name)
    return ""


def lookup_reply(vasp: models_pb2.VASP) -> gds_pb2.LookupReply:
    """The ``LookupReply`` projection of a stored ``VASP`` (upstream ``gds.Lookup``)."""
    reply = gds_pb2.LookupReply(
        id=vasp.id,
        registered_directory=vasp.registered_directory,
        common_name=vasp.common_name,
        endpoint=vasp.trisa_endpoint,
        name=display_name(vasp),
        country=vasp.entity.country_of_registration,
        verified_on=vasp.verified_on,
    )
    if vasp.HasField("identity_certificate"):
        reply.identity_certificate.CopyFrom(vasp.identity_certificate)
    if len(vasp.signing_certificates):
        reply.signing_certificate.CopyFrom(vasp.signing_certificates[-1])
    return reply


def peer_record(reply: gds_pb2.LookupReply, *, fetched_at: datetime | None = None) -> PeerRecord:
    """A ``LookupReply`` → :class:`PeerRecord`; a non-empty ``error`` field or an
    unreadable certificate raises :class:`DirectoryError`."""
    if reply.HasField("error") and (reply.error.code or reply.error.message):
        raise DirectoryError(f"directory error [{reply.error.code}] {reply.error.message}")
    source = f"directory record {reply.common_name or reply.id}"
    leaf: x509.Certificate | None = None
    chain: tuple[x509.Certificate, ...] = ()
    revoked = False
    signing: x509.Certificate | None = None
    try:
        if reply.HasField("identity_certificate"):
            parsed = certificate_from_proto(
                reply.identity_certificate, source=f"{source} identity certificate"
            )
            if parsed is not None:
                leaf, chain = parsed
            revoked = bool(reply.identity_certificate.revoked)
        if reply.HasField("signing_certificate"):
            sparsed = certificate_from_proto(
                reply.signing_certificate, source=f"{source} signing certificate"
            )
            if sparsed is not None:
                signing = sparsed[0]
    except CertificateError as exc:
        raise DirectoryError(str(exc)) from exc
    return PeerRecord(
        id=reply.id,
        common_name=reply.common_name,
        endpoint=reply.endpoint,
        registered_directory=reply.registered_directory,
        identity_certificate=leaf,
        identity_chain=chain,
        identity_revoked=revoked,
        signing_certificate=signing,
        name=reply.name,
        country=reply.country,
        verified_on=reply.verified_on,
        fetched_at=fetched_at,
    )
