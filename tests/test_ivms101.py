"""IVMS101 validation of registered legal persons: each rule with its failing twin."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import json_format

from trisa_peer._pb.ivms101 import ivms101_pb2
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2
from trisa_peer.directory.ivms101 import (
    is_valid_lei,
    legal_person_problems,
    validate_legal_person,
)
from trisa_peer.errors import ConfigurationError
from trisa_peer.testing.cast import ALICE, BOB, CHARLIE, EVIL, MALLORY, VaspProfile

TRIXO = (Path(__file__).parent / "upstream" / "upstream-sectigo" / "trisa" / "pkg" / "trisa"
         / "gds" / "api" / "v1beta1" / "testdata" / "alice-trixo.json")


def _trixo_request() -> api_pb2.RegisterRequest:
    request = api_pb2.RegisterRequest()
    json_format.Parse(TRIXO.read_text(), request)
    return request


def corrected_trixo_entity() -> ivms101_pb2.LegalPerson:
    """Upstream's alice-trixo.json entity with its IVMS101 errors corrected."""
    entity = _trixo_request().entity
    address = entity.geographic_addresses[0]
    del address.address_line[1]  # an empty line
    address.country = "US"
    entity.national_identification.national_identifier_type = 3  # RAID (IDCD is personal)
    entity.national_identification.country_of_issue = ""  # C9
    entity.country_of_registration = "US"
    return entity


def test_upstream_trixo_fixture_is_refused_with_every_field_named() -> None:
    """The country of issue 'USA' is one problem (C9: a legal person has none), not two."""
    assert legal_person_problems(_trixo_request().entity) == [
        "entity.geographic_addresses[0].address_line[1] is empty",
        "entity.geographic_addresses[0].country 'USA' is not an ISO 3166-1 alpha-2 "
        "country code",
        "entity.national_identification.national_identifier_type IDCD is not one a legal "
        "person may hold (RAID, MISC, LEIX or TXID; IVMS101 C10)",
        "entity.national_identification.country_of_issue must be empty for a legal person "
        "(IVMS101 C9; got 'USA')",
        "entity.country_of_registration 'USA' is not an ISO 3166-1 alpha-2 country code",
    ]
    with pytest.raises(ConfigurationError, match=r"invalid IVMS101 legal person \(5 problems\)"):
        validate_legal_person(_trixo_request().entity)


def test_corrected_trixo_entity_is_valid() -> None:
    assert legal_person_problems(corrected_trixo_entity()) == []
    validate_legal_person(corrected_trixo_entity())


@pytest.mark.parametrize("profile", [ALICE, BOB, CHARLIE, EVIL, MALLORY],
                         ids=lambda p: p.common_name)
def test_the_cast_registers_valid_legal_persons(profile: VaspProfile) -> None:
    assert legal_person_problems(profile.legal_person()) == []


def test_lei_check_digits() -> None:
    assert is_valid_lei(ALICE.lei)
    assert is_valid_lei("529900T8BM49AURSDO55")  # a published LEI
    good = ALICE.lei
    wrong = good[:18] + f"{(int(good[18:]) + 1) % 100:02d}"
    assert not is_valid_lei(wrong)
    assert not is_valid_lei(good.lower())
    assert not is_valid_lei(good[:19])


Mutation = Callable[[ivms101_pb2.LegalPerson], None]


def _set_country(value: str) -> Mutation:
    def mutate(e: ivms101_pb2.LegalPerson) -> None:
        e.country_of_registration = value
    return mutate


def _address(**fields: object) -> Mutation:
    def mutate(e: ivms101_pb2.LegalPerson) -> None:
        address = e.geographic_addresses[0]
        for key, value in fields.items():
            if key == "address_line":
                del address.address_line[:]
                address.address_line.extend(value)  # type: ignore[call-overload]
            else:
                setattr(address, key, value)
    return mutate


def _nid(**fields: object) -> Mutation:
    def mutate(e: ivms101_pb2.LegalPerson) -> None:
        for key, value in fields.items():
            setattr(e.national_identification, key, value)
    return mutate


def _no_legl(e: ivms101_pb2.LegalPerson) -> None:
    for name in e.name.name_identifiers:
        name.legal_person_name_identifier_type = 2


def _empty_name(e: ivms101_pb2.LegalPerson) -> None:
    e.name.name_identifiers[0].legal_person_name = "  "


def _long_name(e: ivms101_pb2.LegalPerson) -> None:
    e.name.name_identifiers[0].legal_person_name = "x" * 101


def _no_name(e: ivms101_pb2.LegalPerson) -> None:
    e.ClearField("name")


def _unknown_name_type(e: ivms101_pb2.LegalPerson) -> None:
    e.name.local_name_identifiers.add(
        legal_person_name="Alice", legal_person_name_identifier_type=9)


def _long_customer_number(e: ivms101_pb2.LegalPerson) -> None:
    e.customer_number = "1" * 51


# (name, accepted twin, rejected twin, expected fragment of the problem)
CASES: list[tuple[str, Mutation, Mutation, str]] = [
    ("registration country", _set_country("GB"), _set_country("gb"),
     "country_of_registration 'gb' is not an ISO 3166-1 alpha-2 country code (write 'GB')"),
    ("registration country unassigned", _set_country("DE"), _set_country("ZZ"),
     "country_of_registration 'ZZ'"),
    ("address country", _address(country="FR"), _address(country="FRA"),
     "geographic_addresses[0].country 'FRA'"),
    ("address country required", _address(country="FR"), _address(country=""),
     "geographic_addresses[0].country is required"),
    ("address lines", _address(address_line=["1 Main St"] * 7),
     _address(address_line=["1 Main St"] * 8), "has 8 lines (at most 7)"),
    ("address line length", _address(address_line=["x" * 70]),
     _address(address_line=["x" * 71]), "address_line[0] is longer than 70"),
    ("C8 street and building",
     _address(address_line=[], street_name="Main St", building_number="1"),
     _address(address_line=[], street_name="Main St", building_number="", building_name=""),
     "needs an address line, or a street name with a building name or number"),
    ("address type", _address(address_type=3), _address(address_type=7),
     "address_type 7 is not a known address type"),
    ("LEGL name", lambda e: None, _no_legl, "needs a name identifier of type LEGL"),
    ("empty name", lambda e: None, _empty_name, "name_identifiers[0].legal_person_name is empty"),
    ("long name", lambda e: None, _long_name, "longer than 100 characters"),
    ("no name", lambda e: None, _no_name, "entity.name needs at least one name identifier"),
    ("name type", lambda e: None, _unknown_name_type,
     "local_name_identifiers[0].legal_person_name_identifier_type 9 is not a known"),
    ("customer number", lambda e: setattr(e, "customer_number", "1" * 50),
     _long_customer_number, "customer_number is longer than 50"),
    ("LEIX without authority", _nid(registration_authority=""),
     _nid(registration_authority="RA000744"), "registration_authority must be empty for an LEIX"),
    ("LEI check digits", lambda e: None, _nid(national_identifier="5493004YBI24IF4TIP00"),
     "is not a valid LEI"),
    ("RAID needs authority", _nid(national_identifier_type=3, registration_authority="RA000744"),
     _nid(national_identifier_type=3, registration_authority=""),
     "registration_authority is required unless the type is LEIX"),
    ("personal identifier type", _nid(national_identifier_type=6, registration_authority="RA1"),
     _nid(national_identifier_type=2, registration_authority="RA1"),
     "national_identifier_type CCPT is not one a legal person may hold"),
    ("country of issue", _nid(country_of_issue=""), _nid(country_of_issue="US"),
     "country_of_issue must be empty for a legal person"),
    ("identifier length",
     _nid(national_identifier_type=3, registration_authority="RA1", national_identifier="1" * 35),
     _nid(national_identifier_type=3, registration_authority="RA1", national_identifier="1" * 36),
     "national_identifier is longer than 35"),
]


@pytest.mark.parametrize(("accepted", "rejected", "fragment"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule_has_a_failing_twin(
    accepted: Mutation, rejected: Mutation, fragment: str
) -> None:
    ok = ALICE.legal_person()
    accepted(ok)
    assert legal_person_problems(ok) == []
    bad = ALICE.legal_person()
    rejected(bad)
    problems = legal_person_problems(bad)
    assert len(problems) == 1, problems
    assert fragment in problems[0]
    with pytest.raises(ConfigurationError) as info:
        validate_legal_person(bad)
    assert "\n" not in str(info.value)
    assert fragment in str(info.value)


def test_trixo_json_is_untouched_by_validation() -> None:
    """Validation never rewrites what it reads (no silent normalisation)."""
    request = _trixo_request()
    before = request.entity.SerializeToString(deterministic=True)
    legal_person_problems(request.entity)
    assert request.entity.SerializeToString(deterministic=True) == before
    assert json.loads(TRIXO.read_text())["entity"]["country_of_registration"] == "USA"
