"""Wire-contract tests for the generated protobuf code in ``trisa_peer._pb``.

What is checked, against ``spec/trisa-wire.md`` and the upstream fixtures:

* the committed ``_pb`` tree, modules and mypy-protobuf ``.pyi`` stubs alike, is
  exactly what ``scripts/gen_protos.py`` generates;
* every upstream protojson fixture parses strictly (no ``ignore_unknown_fields``)
  into the generated classes, carries the documented values and round-trips through
  ``MessageToJson(preserving_proto_field_name=True)``; the IVMS101-JSON twin is
  rejected;
* field numbers, enum values (with the ``Error.Code`` aliases), ``json_name``
  overrides, gRPC method paths and ``Any`` type URLs;
* byte-level encodings: hand-computed tag bytes for a ``SecureEnvelope``, and the
  binary ``pending_payload.json`` hashing to the SHA-256 of the plaintext that Go
  sealed into ``sealed_envelope.json``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import any_pb2, descriptor_pb2, json_format, unknown_fields
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from helpers import ROOT, UPSTREAM_SECTIGO, UPSTREAM_TRISA

from trisa_peer._pb.gds.models.v1 import models_pb2 as gds_v1
from trisa_peer._pb.ivms101 import enum_pb2, identity_pb2, ivms101_pb2
from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, api_pb2_grpc, errors_pb2
from trisa_peer._pb.trisa.data.generic.v1beta1 import transaction_pb2
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_api
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2_grpc as gds_api_grpc
from trisa_peer._pb.trisa.gds.models.v1beta1 import ca_pb2, models_pb2

ENVELOPE_DATA = UPSTREAM_TRISA / "pkg" / "trisa" / "envelope" / "testdata"
PEERS_DATA = UPSTREAM_TRISA / "pkg" / "trisa" / "peers" / "testdata"
IVMS_DATA = UPSTREAM_TRISA / "pkg" / "ivms101" / "testdata"
LOOKUP_JSON = UPSTREAM_TRISA / "pkg" / "trisa" / "keys" / "testdata" / "lookup.json"
DIRECTORY_DATA = UPSTREAM_SECTIGO / "directory" / "pkg"

ALICE_ID = "7a96ca2c-2818-4106-932e-1bcfd743b04c"
LEONARDO_ID = "19d84515-007a-48cc-9efd-b153a263e77c"
DONATELLO_ID = "b19c9ebd-82f5-4bda-91ef-226e3ecee4b8"
#: SHA-256 of the 1170-byte plaintext Go sealed into sealed_envelope.json (README).
SEALED_PLAINTEXT_SHA256 = "a96f198c3c055d87c33c5736da7833659e46dbf56e0292250ab6ad6622f56ebd"


def parse(path: Path, cls: type[Message]) -> Message:
    """Strictly parse a protojson fixture (unknown fields and bad enums raise)."""
    return json_format.Parse(path.read_text(encoding="utf-8"), cls())


def field_numbers(descriptor: Descriptor) -> dict[str, int]:
    """Map field name to field number for one message descriptor."""
    return {f.name: f.number for f in descriptor.fields}


# --------------------------------------------------------------------------------------
# Regeneration
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_generated_code_matches_protos() -> None:
    """``gen_protos.py --check`` finds no drift between protos/ and trisa_peer/_pb."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_generated_module_has_a_stub() -> None:
    """Each ``_pb2``/``_pb2_grpc`` module has its stub, and no stub is left alone."""
    pb_dir = ROOT / "trisa_peer" / "_pb"
    modules = {p.with_suffix("") for p in pb_dir.rglob("*_pb2*.py")}
    stubs = {p.with_suffix("") for p in pb_dir.rglob("*.pyi")}
    assert modules, "no generated modules found"
    assert stubs == modules


def test_generated_imports_are_package_relative() -> None:
    """No generated module or stub imports the top-level ivms101/trisa/gds names."""
    pb_dir = ROOT / "trisa_peer" / "_pb"
    offenders = [
        f"{path.relative_to(pb_dir)}: {line}"
        for path in sorted([*pb_dir.rglob("*.py"), *pb_dir.rglob("*.pyi")])
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.lstrip().startswith(("from ivms101", "from trisa.", "from gds.", "import trisa"))
    ]
    assert offenders == []


# --------------------------------------------------------------------------------------
# Upstream fixtures: strict parse, key values, round trip
# --------------------------------------------------------------------------------------


def _check_sealed(msg: Message) -> None:
    assert isinstance(msg, api_pb2.SecureEnvelope)
    assert msg.id == "1e7bb3cc-53ff-41b8-870f-4c22110e6f04"
    assert msg.sealed is True
    assert msg.encryption_algorithm == "AES256-GCM"
    assert msg.hmac_algorithm == "HMAC-SHA256"
    assert msg.public_key_signature == "SHA256:QhEspinUU51gK0dQGqLa56BA6xyRy5/7sN5/6GlaLZw"
    assert msg.timestamp == "2022-03-29T09:16:29.755212-05:00"
    assert msg.transfer_state == api_pb2.UNSPECIFIED
    assert not msg.HasField("error")
    assert len(msg.encryption_key) == 512  # RSA-4096 ciphertext
    assert msg.encryption_key != msg.hmac_secret  # OAEP is randomised


def _check_unsealed(msg: Message) -> None:
    assert isinstance(msg, api_pb2.SecureEnvelope)
    assert msg.id == "ca4344e6-fb1e-4ba2-9ac7-f78fab5f00c0"
    assert msg.sealed is False
    assert len(msg.payload) == 28
    assert msg.encryption_key == msg.hmac_secret
    assert len(msg.encryption_key) == 32


def _check_error(msg: Message) -> None:
    assert isinstance(msg, api_pb2.SecureEnvelope)
    assert msg.id == "2b3b4c95-0a78-4f2a-a9fa-041970f97144"
    assert msg.payload == b""
    assert msg.error.code == errors_pb2.Error.COMPLIANCE_CHECK_FAIL == 90
    assert msg.error.message == "specified account has been frozen temporarily"
    assert msg.error.retry is False
    assert msg.timestamp == "2022-01-27T08:21:43Z"


def _check_payload(msg: Message) -> None:
    assert isinstance(msg, api_pb2.Payload)
    assert msg.identity.type_url == "type.googleapis.com/ivms101.IdentityPayload"
    assert msg.transaction.type_url == (
        "type.googleapis.com/trisa.data.generic.v1beta1.Transaction"
    )
    assert msg.sent_at == "2022-01-27T08:21:43Z"
    assert msg.received_at == "2022-01-30T16:28:39Z"
    transaction = transaction_pb2.Transaction()
    assert msg.transaction.Unpack(transaction)
    assert transaction.txid.startswith("05d9dc3f") and transaction.txid.endswith("64d0")
    assert transaction.amount == pytest.approx(0.00206412)
    assert transaction.network == "btc"


def _check_pending_payload(msg: Message) -> None:
    assert isinstance(msg, api_pb2.Payload)
    assert msg.transaction.type_url == "type.googleapis.com/trisa.data.generic.v1beta1.Pending"
    assert msg.sent_at == "2022-01-27T08:21:43Z"
    assert msg.received_at == ""
    pending = transaction_pb2.Pending()
    assert msg.transaction.Unpack(pending)
    assert pending.envelope_id == "2b3b4c95-0a78-4f2a-a9fa-041970f97144"
    identity = identity_pb2.IdentityPayload()
    assert msg.identity.Unpack(identity)
    _check_identity(identity)


def _check_identity(msg: Message) -> None:
    assert isinstance(msg, identity_pb2.IdentityPayload)
    originator = msg.originator.originator_persons[0].natural_person
    legal_name = originator.name.name_identifiers[0]
    assert (legal_name.primary_identifier, legal_name.secondary_identifier) == ("Howard", "Jane")
    assert legal_name.name_identifier_type == enum_pb2.NATURAL_PERSON_NAME_TYPE_CODE_LEGL
    assert originator.name.name_identifiers[1].name_identifier_type == (
        enum_pb2.NATURAL_PERSON_NAME_TYPE_CODE_MAID
    )
    assert originator.geographic_addresses[0].address_type == enum_pb2.ADDRESS_TYPE_CODE_HOME
    assert originator.national_identification.national_identifier_type == (
        enum_pb2.NATIONAL_IDENTIFIER_TYPE_CODE_SOCS
    )
    assert originator.date_and_place_of_birth.date_of_birth == "1992-10-04"
    assert list(msg.originator.account_numbers) == ["14HmBSwec8XrcWge9Zi1ZngNia64u3Wd2v"]
    beneficiary = msg.beneficiary.beneficiary_persons[0].natural_person
    assert beneficiary.name.name_identifiers[1].name_identifier_type == (
        enum_pb2.NATURAL_PERSON_NAME_TYPE_CODE_ALIA
    )
    vasp = msg.originating_vasp.originating_vasp.legal_person
    assert [(n.legal_person_name, n.legal_person_name_identifier_type)
            for n in vasp.name.name_identifiers] == [
        ("AliceCoin, Inc.", enum_pb2.LEGAL_PERSON_NAME_TYPE_CODE_LEGL),
        ("Alice VASP", enum_pb2.LEGAL_PERSON_NAME_TYPE_CODE_SHRT),
        ("AliceCoin", enum_pb2.LEGAL_PERSON_NAME_TYPE_CODE_TRAD),
    ]
    assert vasp.national_identification.national_identifier_type == (
        enum_pb2.NATIONAL_IDENTIFIER_TYPE_CODE_LEIX
    )
    assert vasp.geographic_addresses[0].address_type == enum_pb2.ADDRESS_TYPE_CODE_BIZZ
    bob = msg.beneficiary_vasp.beneficiary_vasp.legal_person
    assert bob.name.name_identifiers[0].legal_person_name == "Bob's Discount VASP, PLC"


def _check_pending(msg: Message) -> None:
    assert isinstance(msg, transaction_pb2.Pending)
    assert msg.envelope_id == "2b3b4c95-0a78-4f2a-a9fa-041970f97144"
    assert msg.received_by == "BobVASP Compliance Review"
    assert msg.reply_not_after == "2022-01-30T08:22:00Z"
    assert msg.reply_not_before == "2022-01-27T20:22:00Z"
    # the fixture writes this double as a JSON string
    assert msg.transaction.amount == pytest.approx(0.00206412)
    assert msg.transaction.asset_type == "BTC"


def _check_transaction(msg: Message) -> None:
    assert isinstance(msg, transaction_pb2.Transaction)
    assert msg.originator == "14HmBSwec8XrcWge9Zi1ZngNia64u3Wd2v"
    assert msg.beneficiary == "14WU745djqecaJ1gmtWQGeMCFim1W5MNp3"
    assert msg.timestamp == "2022-01-30T16:14:00Z"
    assert msg.extra_json == '{"value_when_transacted": "USD $77.86"}'


def _check_lookup(msg: Message) -> None:
    assert isinstance(msg, gds_api.LookupReply)
    assert msg.id == ALICE_ID
    assert msg.registered_directory == "trisatest.net"
    assert msg.common_name == "api.alice.vaspbot.net"
    assert msg.endpoint == "api.alice.vaspbot.net:443"
    assert (msg.name, msg.country) == ("AliceCoin", "US")
    assert not msg.HasField("error") and not msg.HasField("signing_certificate")
    cert = msg.identity_certificate
    assert cert.version == 3
    assert cert.serial_number.hex() == "60b9dcc045d59608994ad2179fc4a444"
    assert cert.signature_algorithm == "SHA384-RSA"
    assert cert.subject.common_name == "api.alice.vaspbot.net"
    assert cert.issuer.common_name == "CipherTrace Issuing CA"
    assert list(cert.subject.locality) == ["Menlo Park"]
    assert cert.not_after == "2023-03-28T17:39:37Z"
    assert cert.data.startswith(b"-----BEGIN CERTIFICATE-----")  # PEM, not DER
    assert cert.chain[:2] == b"\x1f\x8b"  # gzip


def _check_leonardo(msg: Message) -> None:
    assert isinstance(msg, gds_api.LookupReply)
    assert msg.id == LEONARDO_ID
    assert msg.registered_directory == "testdirectory.org"
    assert msg.endpoint == "leonardo.trisa.dev:8000"
    assert msg.country == "IT"
    assert msg.verified_on == "2022-07-19T17:39:03Z"
    assert not msg.HasField("identity_certificate")


def _check_donatello(msg: Message) -> None:
    assert isinstance(msg, gds_api.LookupReply)
    assert msg.id == DONATELLO_ID
    assert msg.common_name == "donatello.example.com"
    assert msg.name == "Brooklyn BitMining Ltd"
    assert not msg.HasField("signing_certificate")


def _check_search(msg: Message) -> None:
    assert isinstance(msg, gds_api.SearchReply)
    assert [(r.id, r.common_name, r.endpoint) for r in msg.results] == [
        (LEONARDO_ID, "leonardo.trisa.dev", "leonardo.trisa.dev:8000"),
        (DONATELLO_ID, "donatello.example.com", "donatello.example.com:443"),
    ]


FIXTURES: list[tuple[Path, type[Message], Callable[[Message], None]]] = [
    (ENVELOPE_DATA / "sealed_envelope.json", api_pb2.SecureEnvelope, _check_sealed),
    (ENVELOPE_DATA / "unsealed_envelope.json", api_pb2.SecureEnvelope, _check_unsealed),
    (ENVELOPE_DATA / "error_envelope.json", api_pb2.SecureEnvelope, _check_error),
    (ENVELOPE_DATA / "payload.json", api_pb2.Payload, _check_payload),
    (ENVELOPE_DATA / "pending_payload.json", api_pb2.Payload, _check_pending_payload),
    (ENVELOPE_DATA / "payload" / "identity.json", identity_pb2.IdentityPayload, _check_identity),
    (ENVELOPE_DATA / "payload" / "pending.json", transaction_pb2.Pending, _check_pending),
    (
        ENVELOPE_DATA / "payload" / "transaction.json",
        transaction_pb2.Transaction,
        _check_transaction,
    ),
    (LOOKUP_JSON, gds_api.LookupReply, _check_lookup),
    (PEERS_DATA / "leonardo.trisa.dev.pb.json", gds_api.LookupReply, _check_leonardo),
    (PEERS_DATA / "donatello.example.com.pb.json", gds_api.LookupReply, _check_donatello),
    (PEERS_DATA / "gds_search_reply.pb.json", gds_api.SearchReply, _check_search),
    (IVMS_DATA / "identity_payload.pb.json", identity_pb2.IdentityPayload, _check_identity),
]


@pytest.mark.parametrize(
    ("path", "cls", "check"),
    FIXTURES,
    ids=[str(p.relative_to(UPSTREAM_TRISA)) for p, _, _ in FIXTURES],
)
def test_upstream_fixture_parses_strictly_and_round_trips(
    path: Path, cls: type[Message], check: Callable[[Message], None]
) -> None:
    """Strict parse, documented values, and a lossless JSON and binary round trip."""
    msg = parse(path, cls)
    check(msg)
    text = json_format.MessageToJson(msg, preserving_proto_field_name=True)
    assert json_format.Parse(text, cls()) == msg
    assert cls.FromString(msg.SerializeToString()) == msg


def test_generator_inputs_equal_the_payload_contents() -> None:
    """payload/{identity,pending,transaction}.json are what the Any fields carry."""
    identity = parse(ENVELOPE_DATA / "payload" / "identity.json", identity_pb2.IdentityPayload)
    assert parse(IVMS_DATA / "identity_payload.pb.json", identity_pb2.IdentityPayload) == identity
    for name, cls, inner in [
        ("pending_payload.json", transaction_pb2.Pending, "pending.json"),
        ("payload.json", transaction_pb2.Transaction, "transaction.json"),
    ]:
        payload = parse(ENVELOPE_DATA / name, api_pb2.Payload)
        assert isinstance(payload, api_pb2.Payload)
        unpacked_identity = identity_pb2.IdentityPayload()
        assert payload.identity.Unpack(unpacked_identity)
        assert unpacked_identity == identity
        transaction = cls()
        assert payload.transaction.Unpack(transaction)
        assert transaction == parse(ENVELOPE_DATA / "payload" / inner, cls)


def test_pending_payload_binary_matches_go_sealed_plaintext() -> None:
    """Our binary encoding of pending_payload.json is byte-identical to Go's.

    The upstream README gives the SHA-256 of the 1170 plaintext bytes Go encrypted into
    sealed_envelope.json; those bytes parse as pending_payload.json. Matching the hash
    proves every field number and type used by Payload, IdentityPayload (and all of
    ivms101) and Pending.
    """
    payload = parse(ENVELOPE_DATA / "pending_payload.json", api_pb2.Payload)
    data = payload.SerializeToString()
    assert len(data) == 1170
    assert hashlib.sha256(data).hexdigest() == SEALED_PLAINTEXT_SHA256


def test_ivms101_json_is_rejected_by_strict_parse() -> None:
    """The IVMS101-JSON twin (short enum codes, ``originatingVASP``) is not protojson."""
    text = (IVMS_DATA / "identity_payload.json").read_text(encoding="utf-8")
    with pytest.raises(json_format.ParseError):
        json_format.Parse(text, identity_pb2.IdentityPayload())
    lenient = json_format.Parse(text, identity_pb2.IdentityPayload(), ignore_unknown_fields=True)
    assert lenient != parse(IVMS_DATA / "identity_payload.pb.json", identity_pb2.IdentityPayload)


# GDS records from trisacrypto/directory: exercise models.v1beta1 and gds.models.v1.
DIRECTORY_FIXTURES: list[tuple[str, type[Message]]] = [
    ("bff/testdata/testnet/vasp.json", models_pb2.VASP),
    ("bff/testdata/testnet/certs/uniform.json", gds_v1.Certificate),
    ("bff/testdata/testnet/lookup_reply.json", gds_api.LookupReply),
    ("bff/testdata/testnet/register_reply.json", gds_api.RegisterReply),
    ("models/v1/testdata/vasp.json", models_pb2.VASP),
    ("store/testdata/vasp.json", models_pb2.VASP),
    ("store/testdata/cert.json", gds_v1.Certificate),
    ("store/testdata/certreq.json", gds_v1.CertificateRequest),
    (
        "utils/wire/testdata/certreqs/87657b4d-e72c-4526-9332-c8fc56adb367.json",
        gds_v1.CertificateRequest,
    ),
]


@pytest.mark.parametrize(("rel", "cls"), DIRECTORY_FIXTURES, ids=[r for r, _ in DIRECTORY_FIXTURES])
def test_directory_fixture_parses_strictly_and_round_trips(rel: str, cls: type[Message]) -> None:
    """GDS store records parse strictly and their ``extra`` Any values resolve."""
    msg = parse(DIRECTORY_DATA / rel, cls)
    text = json_format.MessageToJson(msg, preserving_proto_field_name=True)
    assert json_format.Parse(text, cls()) == msg


def test_directory_extra_data_unpacks() -> None:
    """VASP.extra is a gds.models.v1.GDSExtraData; Contact.extra a GDSContactExtraData."""
    vasp = parse(DIRECTORY_DATA / "bff/testdata/testnet/vasp.json", models_pb2.VASP)
    assert isinstance(vasp, models_pb2.VASP)
    assert vasp.extra.type_url == "type.googleapis.com/gds.models.v1.GDSExtraData"
    extra = gds_v1.GDSExtraData()
    assert vasp.extra.Unpack(extra)
    assert len(extra.audit_log) > 0
    contacts = [vasp.contacts.technical, vasp.contacts.administrative,
                vasp.contacts.legal, vasp.contacts.billing]
    with_extra = [c for c in contacts if c.HasField("extra")]
    assert with_extra
    for contact in with_extra:
        assert contact.extra.Is(gds_v1.GDSContactExtraData.DESCRIPTOR)

    certreq = parse(
        DIRECTORY_DATA
        / "utils/wire/testdata/certreqs/87657b4d-e72c-4526-9332-c8fc56adb367.json",
        gds_v1.CertificateRequest,
    )
    assert isinstance(certreq, gds_v1.CertificateRequest)
    assert certreq.status == gds_v1.COMPLETED
    assert (certreq.authority_id, certreq.batch_id, certreq.order_number) == (
        23,
        227438,
        227401,
    )
    assert certreq.batch_status == "READY_FOR_DOWNLOAD"


# --------------------------------------------------------------------------------------
# Field numbers, enums and names (spec §3-§8)
# --------------------------------------------------------------------------------------

FIELD_NUMBERS: list[tuple[Descriptor, dict[str, int]]] = [
    (
        api_pb2.SecureEnvelope.DESCRIPTOR,
        {
            "id": 1, "payload": 2, "encryption_key": 3, "encryption_algorithm": 4,
            "hmac": 5, "hmac_secret": 6, "hmac_algorithm": 7, "error": 9,
            "timestamp": 10, "sealed": 11, "public_key_signature": 12, "transfer_state": 13,
        },
    ),
    (
        api_pb2.Payload.DESCRIPTOR,
        {"identity": 1, "transaction": 2, "sent_at": 3, "received_at": 4},
    ),
    (
        api_pb2.Address.DESCRIPTOR,
        {
            "confirmation": 1, "crypto_address": 2, "network": 3, "asset_type": 4,
            "tag": 5, "key_token": 8, "on_chain": 9,
        },
    ),
    (
        api_pb2.AddressConfirmation.DESCRIPTOR,
        {"address": 1, "controlled_by_entity": 2, "error": 3, "key_token": 8, "on_chain": 9},
    ),
    (
        api_pb2.KeyTokenQuery.DESCRIPTOR,
        {"token": 1, "public_key_algorithm": 4, "public_key_signature": 12},
    ),
    (
        api_pb2.SigningKey.DESCRIPTOR,
        {
            "version": 1, "signature": 2, "signature_algorithm": 3,
            "public_key_algorithm": 4, "not_before": 8, "not_after": 9, "revoked": 10,
            "data": 11,
        },
    ),
    (api_pb2.HealthCheck.DESCRIPTOR, {"attempts": 1, "last_checked_at": 2}),
    (api_pb2.ServiceState.DESCRIPTOR, {"status": 1, "not_before": 2, "not_after": 3}),
    (errors_pb2.Error.DESCRIPTOR, {"code": 1, "message": 2, "retry": 3, "details": 4}),
    (
        transaction_pb2.Transaction.DESCRIPTOR,
        {
            "txid": 1, "originator": 2, "beneficiary": 3, "amount": 4, "network": 5,
            "timestamp": 6, "extra_json": 7, "asset_type": 8, "tag": 9,
        },
    ),
    (
        transaction_pb2.Pending.DESCRIPTOR,
        {
            "envelope_id": 1, "received_by": 2, "received_at": 3, "message": 4,
            "reply_not_after": 5, "reply_not_before": 6, "extra_json": 7, "transaction": 15,
        },
    ),
    (
        transaction_pb2.TRP.DESCRIPTOR,
        {
            "envelope_id": 1, "headers": 2, "inquiry": 3, "approved": 4, "rejected": 5,
            "confirmed": 6, "canceled": 7, "extensions": 14, "transaction": 15,
        },
    ),
    (
        transaction_pb2.Sunrise.DESCRIPTOR,
        {"envelope_id": 1, "counterparty": 2, "messages": 3, "extra_json": 14, "transaction": 15},
    ),
    (
        gds_api.LookupReply.DESCRIPTOR,
        {
            "error": 1, "id": 2, "registered_directory": 3, "common_name": 4, "endpoint": 5,
            "identity_certificate": 6, "signing_certificate": 7, "name": 8, "country": 9,
            "verified_on": 10,
        },
    ),
    (
        gds_api.SearchRequest.DESCRIPTOR,
        {"name": 1, "website": 2, "country": 7, "business_category": 8, "vasp_category": 9},
    ),
    (
        gds_api.RegisterReply.DESCRIPTOR,
        {
            "error": 1, "id": 2, "registered_directory": 3, "common_name": 4, "status": 5,
            "message": 6, "pkcs12password": 7,
        },
    ),
    (
        ca_pb2.Certificate.DESCRIPTOR,
        {
            "version": 1, "serial_number": 2, "signature": 3, "signature_algorithm": 4,
            "public_key_algorithm": 5, "subject": 6, "issuer": 7, "not_before": 8,
            "not_after": 9, "revoked": 10, "data": 11, "chain": 12,
        },
    ),
    (
        gds_v1.CertificateRequest.DESCRIPTOR,
        {
            "id": 1, "vasp": 2, "common_name": 3, "status": 4, "authority_id": 5,
            "batch_id": 6, "batch_name": 7, "batch_status": 8, "order_number": 9,
            "creation_date": 10, "profile": 11, "reject_reason": 12, "params": 13,
            "dns_names": 14, "created": 15, "modified": 16, "audit_log": 17,
            "certificate": 18, "webhook": 19, "no_email_delivery": 20,
        },
    ),
]


@pytest.mark.parametrize(
    ("descriptor", "expected"), FIELD_NUMBERS, ids=[d.full_name for d, _ in FIELD_NUMBERS]
)
def test_field_numbers(descriptor: Descriptor, expected: dict[str, int]) -> None:
    """Each message has exactly the spec's fields under the spec's numbers."""
    assert field_numbers(descriptor) == expected


def test_secure_envelope_has_no_field_8() -> None:
    """Field 8 of SecureEnvelope is unused upstream and must stay unused."""
    assert 8 not in api_pb2.SecureEnvelope.DESCRIPTOR.fields_by_number
    assert sorted(api_pb2.SecureEnvelope.DESCRIPTOR.fields_by_number) == [
        1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13,
    ]


def test_vasp_field_numbers() -> None:
    """VASP fields 1..23 in spec order."""
    names = [
        "id", "registered_directory", "entity", "contacts", "identity_certificate",
        "signing_certificates", "common_name", "trisa_endpoint", "website",
        "business_category", "vasp_categories", "established_on", "trixo",
        "verification_status", "service_status", "verified_on", "first_listed",
        "last_updated", "signature", "version", "extra", "certificate_webhook",
        "no_email_delivery",
    ]
    assert field_numbers(models_pb2.VASP.DESCRIPTOR) == {n: i for i, n in enumerate(names, 1)}


#: Every Error.Code value and its names, canonical name first (spec §3.6).
ERROR_CODES: dict[int, list[str]] = {
    0: ["UNHANDLED"],
    1: ["UNAVAILABLE", "SERVICE_DOWN_TIME", "BVRC002"],
    2: ["MAINTENANCE"],
    3: ["UNIMPLEMENTED"],
    49: ["INTERNAL_ERROR", "BVRC999"],
    50: ["REJECTED"],
    51: ["UNKNOWN_WALLET_ADDRESS"],
    52: ["UNKNOWN_IDENTITY", "UNKOWN_IDENTITY"],
    53: ["UNKNOWN_ORIGINATOR"],
    54: ["UNKOWN_BENEFICIARY", "BENEFICIARY_NAME_UNMATCHED", "BVRC007"],
    60: ["UNSUPPORTED_CURRENCY", "BVRC001", "UNSUPPORTED_NETWORK"],
    61: ["EXCEEDED_TRADING_VOLUME", "BVRC003"],
    75: ["UNSUPPORTED_ADDRESS_CONFIRMATION"],
    76: ["CANNOT_CONFIRM_CONTROL_OF_ADDRESS"],
    90: ["COMPLIANCE_CHECK_FAIL", "BVRC004"],
    91: ["NO_COMPLIANCE"],
    92: ["HIGH_RISK"],
    99: ["OUT_OF_NETWORK"],
    100: ["FORBIDDEN"],
    101: ["NO_SIGNING_KEY"],
    102: ["CERTIFICATE_REVOKED"],
    103: ["UNVERIFIED"],
    104: ["UNTRUSTED"],
    105: ["INVALID_SIGNATURE"],
    106: ["INVALID_KEY"],
    107: ["ENVELOPE_DECODE_FAIL", "PRIVATE_INFO_DECODE_FAIL", "BVRC005"],
    108: ["UNHANDLED_ALGORITHM"],
    150: ["BAD_REQUEST"],
    151: ["UNPARSEABLE_IDENTITY", "PRIVATE_INFO_WRONG_FORMAT", "BVRC006"],
    152: ["UNPARSEABLE_TRANSACTION"],
    153: ["MISSING_FIELDS"],
    154: ["INCOMPLETE_IDENTITY"],
    155: ["VALIDATION_ERROR"],
    198: ["COMPLIANCE_PERIOD_EXCEEDED"],
    199: ["CANCELED", "CANCEL_TRANSACTION"],
}


def test_error_codes_and_aliases() -> None:
    """Every code name and alias, canonical names first, nothing extra."""
    code_enum = errors_pb2.Error.Code.DESCRIPTOR
    assert code_enum.GetOptions().allow_alias
    actual: dict[int, list[str]] = {}
    for value in code_enum.values:  # declaration order
        actual.setdefault(value.number, []).append(value.name)
    assert actual == ERROR_CODES
    assert errors_pb2.Error.UNKOWN_BENEFICIARY == errors_pb2.Error.BVRC007 == 54
    assert errors_pb2.Error.UNSUPPORTED_NETWORK == 60
    assert errors_pb2.Error.CANCEL_TRANSACTION == 199


@pytest.mark.parametrize("number", sorted(ERROR_CODES))
def test_error_code_json_uses_first_name(number: int) -> None:
    """json_format prints the first listed name and reads every alias."""
    canonical, *aliases = ERROR_CODES[number]
    error = errors_pb2.Error(code=number)
    as_dict = json_format.MessageToDict(error, always_print_fields_with_no_presence=True)
    assert as_dict["code"] == canonical
    for name in aliases:
        assert json_format.ParseDict({"code": name}, errors_pb2.Error()).code == number


def test_api_enums() -> None:
    """TransferState, ConfirmationType and ServiceState.Status values (spec §3)."""
    assert {v.name: v.number for v in api_pb2.TransferState.DESCRIPTOR.values} == {
        "UNSPECIFIED": 0, "STARTED": 1, "PENDING": 2, "REVIEW": 3, "REPAIR": 4,
        "ACCEPTED": 5, "COMPLETED": 6, "REJECTED": 7,
    }
    assert {v.name: v.number for v in api_pb2.ConfirmationType.DESCRIPTOR.values} == {
        "UNKNOWN": 0, "SIMPLE": 1, "KEYTOKEN": 2, "ONCHAIN": 3,
    }
    status = ["UNKNOWN", "HEALTHY", "UNHEALTHY", "DANGER", "OFFLINE", "MAINTENANCE"]
    for enum in (
        api_pb2.ServiceState.Status.DESCRIPTOR,
        gds_api.ServiceState.Status.DESCRIPTOR,
        models_pb2.ServiceState.DESCRIPTOR,
    ):
        assert [v.name for v in enum.values] == status
        assert [v.number for v in enum.values] == list(range(6))


def test_gds_enums() -> None:
    """Directory enums (spec §8.3, §8.5)."""
    assert [v.name for v in models_pb2.VerificationState.DESCRIPTOR.values] == [
        "NO_VERIFICATION", "SUBMITTED", "EMAIL_VERIFIED", "PENDING_REVIEW", "REVIEWED",
        "ISSUING_CERTIFICATE", "VERIFIED", "REJECTED", "APPEALED", "ERRORED",
    ]
    assert models_pb2.VERIFIED == 6
    assert [v.name for v in models_pb2.BusinessCategory.DESCRIPTOR.values] == [
        "UNKNOWN_ENTITY", "PRIVATE_ORGANIZATION", "GOVERNMENT_ENTITY", "BUSINESS_ENTITY",
        "NON_COMMERCIAL_ENTITY", "NON_VASP_ENTITY",
    ]
    assert [v.name for v in gds_v1.CertificateRequestState.DESCRIPTOR.values] == [
        "INITIALIZED", "READY_TO_SUBMIT", "PROCESSING", "DOWNLOADING", "DOWNLOADED",
        "COMPLETED", "CR_REJECTED", "CR_ERRORED",
    ]
    assert [v.name for v in gds_v1.CertificateState.DESCRIPTOR.values] == [
        "ISSUED", "EXPIRED", "REVOKED",
    ]


def test_ivms101_enums() -> None:
    """Prefixed IVMS101 enum names with the spec's numbers (spec §5.3)."""
    expected = {
        "NaturalPersonNameTypeCode": ("NATURAL_PERSON_NAME_TYPE_CODE_",
                                      ["MISC", "ALIA", "BIRT", "MAID", "LEGL"]),
        "LegalPersonNameTypeCode": ("LEGAL_PERSON_NAME_TYPE_CODE_",
                                    ["MISC", "LEGL", "SHRT", "TRAD"]),
        "AddressTypeCode": ("ADDRESS_TYPE_CODE_", ["MISC", "HOME", "BIZZ", "GEOG"]),
        "NationalIdentifierTypeCode": (
            "NATIONAL_IDENTIFIER_TYPE_CODE_",
            ["MISC", "ARNU", "CCPT", "RAID", "DRLC", "FIIN", "TXID", "SOCS", "IDCD", "LEIX"],
        ),
        "TransliterationMethodCode": (
            "TRANSLITERATION_METHOD_CODE_",
            ["OTHR", "ARAB", "ARAN", "ARMN", "CYRL", "DEVA", "GEOR", "GREK", "HANI", "HEBR",
             "KANA", "KORE", "THAI"],
        ),
    }
    enums = enum_pb2.DESCRIPTOR.enum_types_by_name
    assert set(enums) == set(expected)
    for name, (prefix, codes) in expected.items():
        assert [(v.name, v.number) for v in enums[name].values] == [
            (prefix + code, i) for i, code in enumerate(codes)
        ]
    assert enum_pb2.NATURAL_PERSON_NAME_TYPE_CODE_LEGL == 4


def test_ivms101_json_names() -> None:
    """json_name overrides (spec §5.1, §5.2); other fields keep the default camelCase."""
    overrides = {
        identity_pb2.Originator: {"originator_persons": "originatorPersons",
                                  "account_numbers": "accountNumber"},
        identity_pb2.Beneficiary: {"beneficiary_persons": "beneficiaryPersons",
                                   "account_numbers": "accountNumber"},
        ivms101_pb2.NaturalPerson: {"geographic_addresses": "geographicAddress"},
        ivms101_pb2.LegalPerson: {"geographic_addresses": "geographicAddress"},
        ivms101_pb2.NaturalPersonName: {"name_identifiers": "nameIdentifier",
                                        "local_name_identifiers": "localNameIdentifier",
                                        "phonetic_name_identifiers": "phoneticNameIdentifier"},
        ivms101_pb2.LegalPersonName: {"name_identifiers": "nameIdentifier",
                                      "local_name_identifiers": "localNameIdentifier",
                                      "phonetic_name_identifiers": "phoneticNameIdentifier"},
        ivms101_pb2.Address: {"address_line": "addressLine"},
    }
    for cls, names in overrides.items():
        fields = cls.DESCRIPTOR.fields_by_name
        for field, json_name in names.items():
            assert fields[field].json_name == json_name, (cls.DESCRIPTOR.name, field)
    assert ivms101_pb2.Address.DESCRIPTOR.fields_by_name["street_name"].json_name == "streetName"


def test_proto_file_names_and_packages() -> None:
    """Descriptor-pool keys are the upstream file paths; packages are the upstream ones."""
    files = {
        api_pb2: ("trisa/api/v1beta1/api.proto", "trisa.api.v1beta1"),
        errors_pb2: ("trisa/api/v1beta1/errors.proto", "trisa.api.v1beta1"),
        transaction_pb2: ("trisa/data/generic/v1beta1/transaction.proto",
                          "trisa.data.generic.v1beta1"),
        enum_pb2: ("ivms101/enum.proto", "ivms101"),
        ivms101_pb2: ("ivms101/ivms101.proto", "ivms101"),
        identity_pb2: ("ivms101/identity.proto", "ivms101"),
        gds_api: ("trisa/gds/api/v1beta1/api.proto", "trisa.gds.api.v1beta1"),
        models_pb2: ("trisa/gds/models/v1beta1/models.proto", "trisa.gds.models.v1beta1"),
        ca_pb2: ("trisa/gds/models/v1beta1/ca.proto", "trisa.gds.models.v1beta1"),
        gds_v1: ("gds/models/v1/models.proto", "gds.models.v1"),
    }
    for module, (name, package) in files.items():
        assert (module.DESCRIPTOR.name, module.DESCRIPTOR.package) == (name, package)
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        assert proto.syntax == "proto3"
        deps = {d.name for d in module.DESCRIPTOR.dependencies}
        assert all(not d.startswith("google/") or d == "google/protobuf/any.proto" for d in deps)


# --------------------------------------------------------------------------------------
# Services and Any
# --------------------------------------------------------------------------------------

#: (full method path, request type, response type, client streaming, server streaming)
METHODS = [
    ("/trisa.api.v1beta1.TRISANetwork/Transfer", "trisa.api.v1beta1.SecureEnvelope",
     "trisa.api.v1beta1.SecureEnvelope", False, False),
    ("/trisa.api.v1beta1.TRISANetwork/TransferStream", "trisa.api.v1beta1.SecureEnvelope",
     "trisa.api.v1beta1.SecureEnvelope", True, True),
    ("/trisa.api.v1beta1.TRISANetwork/ConfirmAddress", "trisa.api.v1beta1.Address",
     "trisa.api.v1beta1.AddressConfirmation", False, False),
    ("/trisa.api.v1beta1.TRISANetwork/KeyExchange", "trisa.api.v1beta1.SigningKey",
     "trisa.api.v1beta1.SigningKey", False, False),
    ("/trisa.api.v1beta1.TRISAHealth/Status", "trisa.api.v1beta1.HealthCheck",
     "trisa.api.v1beta1.ServiceState", False, False),
    ("/trisa.gds.api.v1beta1.TRISADirectory/Lookup", "trisa.gds.api.v1beta1.LookupRequest",
     "trisa.gds.api.v1beta1.LookupReply", False, False),
    ("/trisa.gds.api.v1beta1.TRISADirectory/Search", "trisa.gds.api.v1beta1.SearchRequest",
     "trisa.gds.api.v1beta1.SearchReply", False, False),
    ("/trisa.gds.api.v1beta1.TRISADirectory/Register", "trisa.gds.api.v1beta1.RegisterRequest",
     "trisa.gds.api.v1beta1.RegisterReply", False, False),
    ("/trisa.gds.api.v1beta1.TRISADirectory/VerifyContact",
     "trisa.gds.api.v1beta1.VerifyContactRequest", "trisa.gds.api.v1beta1.VerifyContactReply",
     False, False),
    ("/trisa.gds.api.v1beta1.TRISADirectory/Verification",
     "trisa.gds.api.v1beta1.VerificationRequest", "trisa.gds.api.v1beta1.VerificationReply",
     False, False),
    ("/trisa.gds.api.v1beta1.TRISADirectory/Status", "trisa.gds.api.v1beta1.HealthCheck",
     "trisa.gds.api.v1beta1.ServiceState", False, False),
]


def test_service_methods() -> None:
    """All gRPC method paths, types and cardinalities, in declaration order."""
    services = [
        *api_pb2.DESCRIPTOR.services_by_name.values(),
        *gds_api.DESCRIPTOR.services_by_name.values(),
    ]
    actual = [
        (
            f"/{service.full_name}/{method.name}",
            method.input_type.full_name,
            method.output_type.full_name,
            method.client_streaming,
            method.server_streaming,
        )
        for service in services
        for method in service.methods
    ]
    assert actual == METHODS
    assert [s.full_name for s in services] == [
        "trisa.api.v1beta1.TRISANetwork",
        "trisa.api.v1beta1.TRISAHealth",
        "trisa.gds.api.v1beta1.TRISADirectory",
    ]


def test_grpc_modules_expose_stubs_and_servicers() -> None:
    """The generated *_pb2_grpc modules carry the stubs and registration helpers."""
    for module, names in [
        (api_pb2_grpc, ["TRISANetwork", "TRISAHealth"]),
        (gds_api_grpc, ["TRISADirectory"]),
    ]:
        for name in names:
            assert hasattr(module, f"{name}Stub")
            assert hasattr(module, f"{name}Servicer")
            assert hasattr(module, f"add_{name}Servicer_to_server")


@pytest.mark.parametrize(
    ("msg", "url"),
    [
        (transaction_pb2.Transaction(txid="abc"),
         "type.googleapis.com/trisa.data.generic.v1beta1.Transaction"),
        (transaction_pb2.Pending(), "type.googleapis.com/trisa.data.generic.v1beta1.Pending"),
        (identity_pb2.IdentityPayload(), "type.googleapis.com/ivms101.IdentityPayload"),
        (gds_v1.GDSExtraData(), "type.googleapis.com/gds.models.v1.GDSExtraData"),
    ],
    ids=["Transaction", "Pending", "IdentityPayload", "GDSExtraData"],
)
def test_any_type_urls(msg: Message, url: str) -> None:
    """Packing into Any yields the type URL peers and the GDS expect."""
    packed = any_pb2.Any()
    packed.Pack(msg)
    assert packed.type_url == url
    unpacked = type(msg)()
    assert packed.Unpack(unpacked) and unpacked == msg


# --------------------------------------------------------------------------------------
# Byte level
# --------------------------------------------------------------------------------------


def test_secure_envelope_bytes() -> None:
    """Hand-computed protobuf encoding: tag = (field_number << 3) | wire_type."""
    envelope = api_pb2.SecureEnvelope(
        id="abc",
        payload=b"\x01\x02",
        hmac_algorithm="HMAC-SHA256",
        error=errors_pb2.Error(code=errors_pb2.Error.COMPLIANCE_CHECK_FAIL, retry=True),
        timestamp="T",
        sealed=True,
        public_key_signature="S",
        transfer_state=api_pb2.PENDING,
    )
    expected = b"".join(
        [
            b"\x0a\x03abc",  # 1 id: (1 << 3) | 2
            b"\x12\x02\x01\x02",  # 2 payload: (2 << 3) | 2
            b"\x3a\x0bHMAC-SHA256",  # 7 hmac_algorithm: (7 << 3) | 2
            b"\x4a\x04\x08\x5a\x18\x01",  # 9 error: (9 << 3) | 2 {1 code=90, 3 retry=1}
            b"\x52\x01T",  # 10 timestamp: (10 << 3) | 2
            b"\x58\x01",  # 11 sealed: (11 << 3) | 0
            b"\x62\x01S",  # 12 public_key_signature: (12 << 3) | 2
            b"\x68\x02",  # 13 transfer_state PENDING: (13 << 3) | 0
        ]
    )
    assert envelope.SerializeToString() == expected
    assert api_pb2.SecureEnvelope.FromString(expected) == envelope


def test_field_8_is_an_unknown_field() -> None:
    """Bytes for a field 8 are not absorbed by any SecureEnvelope field."""
    envelope = api_pb2.SecureEnvelope.FromString(b"\x0a\x01x\x42\x01y")  # 1 "x", 8 "y"
    assert [field.name for field, _ in envelope.ListFields()] == ["id"]
    unknown = unknown_fields.UnknownFieldSet(envelope)
    assert len(unknown) == 1 and unknown[0].field_number == 8
    assert envelope.SerializeToString() == b"\x0a\x01x\x42\x01y"  # preserved as unknown


def test_field_types_for_wire_compatibility() -> None:
    """Types whose encoding differs on the wire (int64 vs int32, double vs float …)."""
    t = FieldDescriptor
    checks = [
        (api_pb2.SigningKey, "version", t.TYPE_INT64),
        (api_pb2.HealthCheck, "attempts", t.TYPE_UINT32),
        (api_pb2.OnChainQuery, "amount", t.TYPE_DOUBLE),
        (transaction_pb2.Transaction, "amount", t.TYPE_DOUBLE),
        (transaction_pb2.TRPInquiry, "amount", t.TYPE_DOUBLE),
        (identity_pb2.IntermediaryVasp, "sequence", t.TYPE_UINT64),
        (ca_pb2.Certificate, "version", t.TYPE_INT64),
        (ca_pb2.Certificate, "serial_number", t.TYPE_BYTES),
        (models_pb2.TRIXOQuestionnaire, "kyc_threshold", t.TYPE_FLOAT),
        (models_pb2.TRIXOQuestionnaire, "compliance_threshold", t.TYPE_FLOAT),
        (models_pb2.Version, "pid", t.TYPE_UINT64),
        (gds_api.Error, "code", t.TYPE_INT32),
        (gds_v1.CertificateRequest, "authority_id", t.TYPE_INT64),
        (gds_v1.PageCursor, "page_size", t.TYPE_INT32),
    ]
    for cls, field, expected in checks:
        assert cls.DESCRIPTOR.fields_by_name[field].type == expected, (cls, field)
