"""IVMS101 validation of the legal person a VASP registers with the directory.

The rules are those of the IVMS101 data model (constraints C8-C11) as upstream TRISA's
``pkg/ivms101`` validator applies them to a ``LegalPerson``, with the ISO 3166-1 checks
that upstream leaves as TODOs done for real:

* a name with at least one identifier, at least one of type LEGL; every name (legal,
  local, phonetic) 1-100 characters with a known name type;
* each geographic address: a known address type, at most 7 address lines of 1-70
  characters, either an address line or a street name with a building name or number
  (C8), and a country that is an ISO 3166-1 alpha-2 code;
* a customer number of at most 50 characters;
* a national identification: an identifier of 1-35 characters of a known type that a
  legal person may hold (RAID, MISC, LEIX, TXID; C10), no country of issue (C9), a
  registration authority unless the type is LEIX and none if it is (C10), and for LEIX
  a well-formed LEI with valid ISO 17442 check digits (C11);
* a country of registration, when given, that is an ISO 3166-1 alpha-2 code.

Nothing is normalised: a value that is almost right (``us``, ``USA``) is refused with
the field named and the expected form, never silently rewritten, so that what a VASP
registers is what the directory stores and searches.

Not checked: that a registration authority is on GLEIF's list, that an LEI is issued,
anything about natural persons (a directory registers legal persons only).

Pure: no grpc, no storage; works on the generated ``ivms101`` messages.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._pb.ivms101 import ivms101_pb2
from ..errors import ConfigurationError

__all__ = ["ISO3166_ALPHA2", "is_valid_lei", "legal_person_problems", "validate_legal_person"]

# ISO 3166-1 alpha-2: the 249 officially assigned codes.
ISO3166_ALPHA2 = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN
    BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ
    DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL
    GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM
    JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME
    MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP
    NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD
    SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
    TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split()
)

# enum values (ivms101/enum.proto)
_LEGAL_NAME_TYPES = {0: "MISC", 1: "LEGL", 2: "SHRT", 3: "TRAD"}
_LEGL = 1
_ADDRESS_TYPES = {0: "MISC", 1: "HOME", 2: "BIZZ", 3: "GEOG"}
_NATIONAL_ID_TYPES = {
    0: "MISC", 1: "ARNU", 2: "CCPT", 3: "RAID", 4: "DRLC",
    5: "FIIN", 6: "TXID", 7: "SOCS", 8: "IDCD", 9: "LEIX",
}
_LEGAL_PERSON_ID_TYPES = {0, 3, 6, 9}  # MISC, RAID, TXID, LEIX (C10)
_LEIX = 9

_MAX_NAME = 100
_MAX_ADDRESS_LINE = 70
_MAX_ADDRESS_LINES = 7
_MAX_CUSTOMER_NUMBER = 50
_MAX_NATIONAL_IDENTIFIER = 35


def is_valid_lei(lei: str) -> bool:
    """An ISO 17442 Legal Entity Identifier: 18 upper-case letters or digits, then two
    check digits that make the whole code ≡ 1 (mod 97) (ISO 7064 MOD 97-10)."""
    if len(lei) != 20 or not lei.isascii() or not lei.isalnum() or lei != lei.upper():
        return False
    if not lei[18:].isdigit():
        return False
    return int("".join(str(int(ch, 36)) for ch in lei)) % 97 == 1


def _country(field: str, value: str) -> Iterable[str]:
    if value in ISO3166_ALPHA2:
        return
    hint = ""
    if value.strip().upper() in ISO3166_ALPHA2:
        hint = f" (write {value.strip().upper()!r})"
    yield f"{field} {value!r} is not an ISO 3166-1 alpha-2 country code{hint}"


def _enum(field: str, value: int, names: dict[int, str], kind: str) -> Iterable[str]:
    if value not in names:
        yield f"{field} {value} is not a known {kind}"


def _names(
    field: str,
    identifiers: Iterable[ivms101_pb2.LegalPersonNameId | ivms101_pb2.LocalLegalPersonNameId],
) -> Iterable[str]:
    for i, name in enumerate(identifiers):
        where = f"{field}[{i}]"
        text = name.legal_person_name
        if not text.strip():
            yield f"{where}.legal_person_name is empty"
        elif len(text) > _MAX_NAME:
            yield f"{where}.legal_person_name is longer than {_MAX_NAME} characters"
        yield from _enum(
            f"{where}.legal_person_name_identifier_type",
            name.legal_person_name_identifier_type,
            _LEGAL_NAME_TYPES,
            "legal person name type",
        )


def _address(field: str, address: ivms101_pb2.Address) -> Iterable[str]:
    yield from _enum(f"{field}.address_type", address.address_type, _ADDRESS_TYPES,
                     "address type")
    lines = list(address.address_line)
    if len(lines) > _MAX_ADDRESS_LINES:
        yield f"{field}.address_line has {len(lines)} lines (at most {_MAX_ADDRESS_LINES})"
    for i, line in enumerate(lines):
        if not line.strip():
            yield f"{field}.address_line[{i}] is empty"
        elif len(line) > _MAX_ADDRESS_LINE:
            yield f"{field}.address_line[{i}] is longer than {_MAX_ADDRESS_LINE} characters"
    has_line = any(line.strip() for line in lines)
    has_street = bool(address.street_name.strip()) and bool(
        address.building_name.strip() or address.building_number.strip()
    )
    if not (has_line or has_street):
        yield (f"{field} needs an address line, or a street name with a building name "
               "or number (IVMS101 C8)")
    if not address.country:
        yield f"{field}.country is required"
    else:
        yield from _country(f"{field}.country", address.country)


def _national_identification(
    field: str, nid: ivms101_pb2.NationalIdentification
) -> Iterable[str]:
    identifier = nid.national_identifier
    kind = nid.national_identifier_type
    if not identifier.strip():
        yield f"{field}.national_identifier is empty"
    elif len(identifier) > _MAX_NATIONAL_IDENTIFIER:
        yield (f"{field}.national_identifier is longer than {_MAX_NATIONAL_IDENTIFIER} "
               "characters")
    if kind not in _NATIONAL_ID_TYPES:
        yield f"{field}.national_identifier_type {kind} is not a known national identifier type"
    elif kind not in _LEGAL_PERSON_ID_TYPES:
        yield (f"{field}.national_identifier_type {_NATIONAL_ID_TYPES[kind]} is not one a "
               "legal person may hold (RAID, MISC, LEIX or TXID; IVMS101 C10)")
    if nid.country_of_issue:
        yield (f"{field}.country_of_issue must be empty for a legal person "
               f"(IVMS101 C9; got {nid.country_of_issue!r})")
    if kind == _LEIX:
        if nid.registration_authority:
            yield f"{field}.registration_authority must be empty for an LEIX identifier (C10)"
        if identifier.strip() and not is_valid_lei(identifier):
            yield (f"{field}.national_identifier {identifier[:35]!r} is not a valid LEI "
                   "(20 characters with ISO 17442 check digits; IVMS101 C11)")
    elif not nid.registration_authority.strip():
        yield f"{field}.registration_authority is required unless the type is LEIX (C10)"


def legal_person_problems(entity: ivms101_pb2.LegalPerson, *, field: str = "entity") -> list[str]:
    """Every IVMS101 problem of an ``ivms101.LegalPerson``, each naming its field; empty
    when the legal person is valid."""
    problems: list[str] = []
    if not entity.HasField("name") or not len(entity.name.name_identifiers):
        problems.append(f"{field}.name needs at least one name identifier")
    else:
        name = entity.name
        problems += _names(f"{field}.name.name_identifiers", name.name_identifiers)
        if not any(n.legal_person_name_identifier_type == _LEGL
                   for n in name.name_identifiers):
            problems.append(f"{field}.name needs a name identifier of type LEGL")
        problems += _names(f"{field}.name.local_name_identifiers", name.local_name_identifiers)
        problems += _names(f"{field}.name.phonetic_name_identifiers",
                           name.phonetic_name_identifiers)
    for i, address in enumerate(entity.geographic_addresses):
        problems += _address(f"{field}.geographic_addresses[{i}]", address)
    if len(entity.customer_number) > _MAX_CUSTOMER_NUMBER:
        problems.append(
            f"{field}.customer_number is longer than {_MAX_CUSTOMER_NUMBER} characters")
    if entity.HasField("national_identification"):
        problems += _national_identification(
            f"{field}.national_identification", entity.national_identification)
    if entity.country_of_registration:
        problems += _country(f"{field}.country_of_registration",
                             entity.country_of_registration)
    return problems


def validate_legal_person(entity: ivms101_pb2.LegalPerson, *, field: str = "entity") -> None:
    """Raise :class:`ConfigurationError` listing every IVMS101 problem (one line, ``;``
    separated), or return when the legal person is valid."""
    problems = legal_person_problems(entity, field=field)
    if problems:
        count = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
        raise ConfigurationError(f"invalid IVMS101 legal person ({count}): "
                                 + "; ".join(problems))
