"""The simulated TestNet cast: robot VASPs, their customers and wallets (upstream
trisacrypto/testnet rVASPs).

This mirrors the TRISA TestNet "robot VASPs" (rVASPs): every simulated VASP holds four
customer wallets, and each wallet carries the pair of policies the rVASP applies when
that wallet *sends* (originator policy) or *receives* (beneficiary policy) a transfer.
The pairs come in a fixed order for every VASP:

=====  ===================  ====================
index  originator policy    beneficiary policy
=====  ===================  ====================
0      SendPartial          SyncRepair
1      SendFull             SyncRequire
2      SendFull             AsyncRepair
3      SendError            AsyncReject
=====  ===================  ====================

Wallet addresses are Base58Check pay-to-pubkey-hash strings (34 characters, leading
``1``) derived from a hash of the e-mail address: deterministic across runs, distinct,
and well formed, but no key controls them. All personal data here is invented.

Nothing here imports grpc; IVMS101 messages are built from the generated protobuf
classes. The module logs nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from .._pb.ivms101 import enum_pb2, ivms101_pb2

__all__ = [
    "ALICE",
    "BOB",
    "BOOK",
    "CHARLIE",
    "EVIL",
    "MALLORY",
    "POLICY_PAIRS",
    "VASPS",
    "WALLETS",
    "BeneficiaryPolicy",
    "Customer",
    "OriginatorPolicy",
    "PostalAddress",
    "VaspProfile",
    "Wallet",
    "WalletBook",
    "lei_with_check_digits",
    "natural_person",
    "wallet_address",
]


class OriginatorPolicy(StrEnum):
    """What a wallet sends when it originates a transfer."""

    SEND_PARTIAL = "SendPartial"  #: beneficiary given by account number only (to repair)
    SEND_FULL = "SendFull"  #: complete beneficiary identity
    SEND_ERROR = "SendError"  #: a COMPLIANCE_CHECK_FAIL error envelope instead of a payload


class BeneficiaryPolicy(StrEnum):
    """How a wallet's VASP answers a transfer addressed to that wallet."""

    SYNC_REPAIR = "SyncRepair"  #: fill in the beneficiary, accept at once
    SYNC_REQUIRE = "SyncRequire"  #: accept only a complete beneficiary identity
    ASYNC_REPAIR = "AsyncRepair"  #: Pending, then an accepting callback (repaired)
    ASYNC_REJECT = "AsyncReject"  #: Pending, then a REJECTED callback


#: The (originator, beneficiary) policy pairs, in wallet order for every VASP.
POLICY_PAIRS: tuple[tuple[OriginatorPolicy, BeneficiaryPolicy], ...] = (
    (OriginatorPolicy.SEND_PARTIAL, BeneficiaryPolicy.SYNC_REPAIR),
    (OriginatorPolicy.SEND_FULL, BeneficiaryPolicy.SYNC_REQUIRE),
    (OriginatorPolicy.SEND_FULL, BeneficiaryPolicy.ASYNC_REPAIR),
    (OriginatorPolicy.SEND_ERROR, BeneficiaryPolicy.ASYNC_REJECT),
)


@dataclass(frozen=True)
class PostalAddress:
    """A geographic address; ``country`` is ISO 3166-1 alpha-2 (IVMS101 requires it)."""

    street_name: str
    building_number: str
    post_code: str
    town_name: str
    country: str
    country_sub_division: str = ""

    def to_ivms(self, address_type: enum_pb2.AddressTypeCode.ValueType) -> ivms101_pb2.Address:
        """An ``ivms101.Address`` of ``address_type`` (an ``AddressTypeCode`` value)."""
        return ivms101_pb2.Address(
            address_type=address_type,
            street_name=self.street_name,
            building_number=self.building_number,
            post_code=self.post_code,
            town_name=self.town_name,
            country_sub_division=self.country_sub_division,
            country=self.country,
        )


@dataclass(frozen=True)
class VaspProfile:
    """A simulated VASP: its certificate common name and its IVMS101 legal identity.

    ``lei`` is a 20-character Legal Entity Identifier with valid ISO 7064 check digits
    (IVMS101 constraint C11); it is the LEIX national identification of the VASP.
    """

    common_name: str
    legal_name: str
    short_name: str
    country: str
    lei: str
    address: PostalAddress
    email_domain: str = ""

    def legal_person(self) -> ivms101_pb2.LegalPerson:
        """The VASP as an ``ivms101.LegalPerson``.

        LEGL (and SHRT) names, the business address, the country of registration and
        the LEI. Per IVMS101 (C9, C10) an LEIX identification carries neither a country
        of issue nor a registration authority.
        """
        names = [
            ivms101_pb2.LegalPersonNameId(
                legal_person_name=self.legal_name,
                legal_person_name_identifier_type=enum_pb2.LEGAL_PERSON_NAME_TYPE_CODE_LEGL,
            )
        ]
        if self.short_name:
            names.append(
                ivms101_pb2.LegalPersonNameId(
                    legal_person_name=self.short_name,
                    legal_person_name_identifier_type=enum_pb2.LEGAL_PERSON_NAME_TYPE_CODE_SHRT,
                )
            )
        return ivms101_pb2.LegalPerson(
            name=ivms101_pb2.LegalPersonName(name_identifiers=names),
            geographic_addresses=[self.address.to_ivms(enum_pb2.ADDRESS_TYPE_CODE_BIZZ)],
            national_identification=ivms101_pb2.NationalIdentification(
                national_identifier=self.lei,
                national_identifier_type=enum_pb2.NATIONAL_IDENTIFIER_TYPE_CODE_LEIX,
            ),
            country_of_registration=self.country,
        )

    def person(self) -> ivms101_pb2.Person:
        """The VASP as an ``ivms101.Person`` (the ``legal_person`` branch)."""
        return ivms101_pb2.Person(legal_person=self.legal_person())


@dataclass(frozen=True)
class Customer:
    """The KYC record behind a wallet (all invented).

    ``id_type`` is an IVMS101 national identifier type code (``"CCPT"``, ``"DRLC"``,
    ``"SOCS"``, ``"IDCD"``...); ``registration_authority`` a GLEIF RA code.
    """

    customer_id: str
    home: PostalAddress
    date_of_birth: str
    place_of_birth: str
    id_number: str
    id_type: str
    id_country: str
    registration_authority: str


@dataclass(frozen=True)
class Wallet:
    """A customer wallet at a simulated VASP (``vasp`` is the VASP's common name)."""

    address: str
    email: str
    first_name: str
    last_name: str
    vasp: str
    originator_policy: OriginatorPolicy
    beneficiary_policy: BeneficiaryPolicy
    customer: Customer | None = None

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


class WalletBook:
    """The cast as a read-only index: wallets by address and e-mail, VASPs by CN.

    Raises :class:`ValueError` on duplicate addresses, e-mails or common names and on
    wallets of a VASP that is not in the book.
    """

    def __init__(self, vasps: Iterable[VaspProfile], wallets: Iterable[Wallet]) -> None:
        vasp_map: dict[str, VaspProfile] = {}
        for vasp in vasps:
            if vasp.common_name in vasp_map:
                raise ValueError(f"duplicate VASP common name {vasp.common_name!r}")
            vasp_map[vasp.common_name] = vasp
        by_address: dict[str, Wallet] = {}
        by_email: dict[str, Wallet] = {}
        of_vasp: dict[str, list[Wallet]] = {cn: [] for cn in vasp_map}
        for wallet in wallets:
            if wallet.vasp not in vasp_map:
                raise ValueError(f"wallet {wallet.email!r} belongs to unknown VASP")
            if wallet.address in by_address:
                raise ValueError(f"duplicate wallet address for {wallet.email!r}")
            if wallet.email.casefold() in by_email:
                raise ValueError(f"duplicate wallet e-mail {wallet.email!r}")
            by_address[wallet.address] = wallet
            by_email[wallet.email.casefold()] = wallet
            of_vasp[wallet.vasp].append(wallet)
        self._vasps: Mapping[str, VaspProfile] = MappingProxyType(vasp_map)
        self._by_address: Mapping[str, Wallet] = MappingProxyType(by_address)
        self._by_email: Mapping[str, Wallet] = MappingProxyType(by_email)
        self._of_vasp: Mapping[str, tuple[Wallet, ...]] = MappingProxyType(
            {cn: tuple(ws) for cn, ws in of_vasp.items()}
        )
        self._wallets: tuple[Wallet, ...] = tuple(by_address.values())

    def by_address(self, address: str) -> Wallet | None:
        """The wallet with this crypto address, or ``None`` (exact match)."""
        return self._by_address.get(address)

    def by_email(self, email: str) -> Wallet | None:
        """The wallet with this e-mail address, or ``None`` (case-insensitive)."""
        return self._by_email.get(email.casefold())

    def wallets_of(self, vasp_cn: str) -> tuple[Wallet, ...]:
        """The wallets of a VASP in policy order; empty for a VASP without wallets.

        Raises :class:`KeyError` for a common name that is not in the book.
        """
        return self._of_vasp[vasp_cn]

    def vasp(self, common_name: str) -> VaspProfile:
        """The VASP with this common name; :class:`KeyError` if unknown."""
        return self._vasps[common_name]

    def has_vasp(self, common_name: str) -> bool:
        return common_name in self._vasps

    @property
    def vasps(self) -> tuple[VaspProfile, ...]:
        return tuple(self._vasps.values())

    @property
    def wallets(self) -> tuple[Wallet, ...]:
        return self._wallets

    def __iter__(self) -> Iterator[Wallet]:
        return iter(self._wallets)

    def __len__(self) -> int:
        return len(self._wallets)


# -- deterministic identifiers ------------------------------------------------------

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rem = divmod(number, 58)
        out.append(_B58[rem])
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * zeros + "".join(reversed(out))


def wallet_address(email: str) -> str:
    """The fixture address of ``email``: a 34-character Base58Check P2PKH string.

    Version byte 0x00 (so it starts with ``1``), a 20-byte hash of the e-mail and the
    double-SHA-256 checksum; re-hashed with a counter until the encoding is 34
    characters long. Same e-mail, same address, on every run.
    """
    counter = 0
    while True:
        seed = f"trisa-peer rvasp wallet|{email.casefold()}|{counter}".encode()
        body = b"\x00" + hashlib.sha256(seed).digest()[:20]
        check = hashlib.sha256(hashlib.sha256(body).digest()).digest()[:4]
        address = _b58encode(body + check)
        if len(address) == 34:
            return address
        counter += 1


def lei_with_check_digits(prefix18: str) -> str:
    """Append ISO 17442 / ISO 7064 MOD 97-10 check digits to an 18-character LEI stem."""
    stem = prefix18.upper()
    if len(stem) != 18 or not stem.isalnum() or not stem.isascii():
        raise ValueError("an LEI stem is 18 ASCII letters and digits")
    digits = "".join(str(int(ch, 36)) for ch in stem + "00")
    return f"{stem}{98 - int(digits) % 97:02d}"


# -- the cast -----------------------------------------------------------------------

ALICE = VaspProfile(
    common_name="alice.vasp.test",
    legal_name="AliceCoin",
    short_name="Alice VASP",
    country="US",
    lei=lei_with_check_digits("5493004YBI24IF4TIP"),
    address=PostalAddress("Roosevelt Place", "23", "02151", "Boston", "US", "MA"),
    email_domain="alicevasp.us",
)
BOB = VaspProfile(
    common_name="bob.vasp.test",
    legal_name="BobVASP",
    short_name="Bob's Discount VASP",
    country="GB",
    lei=lei_with_check_digits("213800AQUAUP6I215N"),
    address=PostalAddress("Grimsby Road", "762", "OX1 2JD", "Oxford", "GB"),
    email_domain="bobvasp.co.uk",
)
CHARLIE = VaspProfile(
    common_name="charlie.vasp.test",
    legal_name="CharlieBank",
    short_name="Charlie",
    country="DE",
    lei=lei_with_check_digits("529900CHARLIEBANK0"),
    address=PostalAddress("Friedrichstrasse", "68", "10117", "Berlin", "DE", "BE"),
    email_domain="charliebank.example",
)
EVIL = VaspProfile(
    common_name="evil.vasp.test",
    legal_name="EvilVASP",
    short_name="Evil",
    country="GG",
    lei=lei_with_check_digits("549300EVILVASP0666"),
    address=PostalAddress("Le Pollet", "13", "GY1 1WQ", "St Peter Port", "GG"),
    email_domain="evilvasp.gg",
)
MALLORY = VaspProfile(
    common_name="mallory.vasp.test",
    legal_name="MalloryExchange",
    short_name="Mallory",
    country="MT",
    lei=lei_with_check_digits("485100MALLORYEX000"),
    address=PostalAddress("Triq il-Merkanti", "42", "VLT 1175", "Valletta", "MT"),
    email_domain="mallory.example",
)

#: Every simulated VASP. Mallory has no wallets (it is not a verified member).
VASPS: tuple[VaspProfile, ...] = (ALICE, BOB, CHARLIE, EVIL, MALLORY)

# (local part, first, last, customer id, home, birth date, birth place,
#  id number, id type, id country, registration authority), four per VASP in
#  POLICY_PAIRS order.
_Row = tuple[str, str, str, str, PostalAddress, str, str, str, str, str, str]
# fmt: off
_PEOPLE: dict[VaspProfile, tuple[_Row, ...]] = {
    ALICE: (
        ("mary", "Mary", "Tilcott", "1001",
         PostalAddress("Vine Street", "1213", "19107", "Philadelphia", "US", "PA"),
         "1985-03-14", "Harrisburg, PA", "T20498157", "DRLC", "US", "RA000630"),
        ("alice", "Alice", "Sheffield", "1002",
         PostalAddress("Beacon Street", "415", "02115", "Boston", "US", "MA"),
         "1979-07-02", "Worcester, MA", "567802331", "CCPT", "US", "RA000631"),
        ("jane", "Jane", "Howard", "2642",
         PostalAddress("Greystone Street", "28", "38017", "Collierville", "US", "TN"),
         "1992-10-04", "West Islip, NY", "J11250292", "DRLC", "US", "RA000748"),
        ("sarah", "Sarah", "Frobisher", "1004",
         PostalAddress("Lakeshore Drive", "77", "60611", "Chicago", "US", "IL"),
         "1990-01-21", "Evanston, IL", "518447206", "CCPT", "US", "RA000631"),
    ),
    BOB: (
        ("robert", "Robert", "Clarkson", "5601",
         PostalAddress("Banbury Road", "112", "OX2 6JU", "Oxford", "GB"),
         "1971-05-30", "Reading, United Kingdom", "533180962", "CCPT", "GB", "RA000585"),
        ("george", "George", "Whitaker", "5602",
         PostalAddress("Mill Lane", "9", "CB2 1RX", "Cambridge", "GB"),
         "1988-11-19", "Norwich, United Kingdom", "WHITA811198GW9AB", "DRLC", "GB",
         "RA000591"),
        ("larry", "Lawrence", "Clark", "5610",
         PostalAddress("Watling St", "249", "WD7 7AL", "Radlett", "GB"),
         "1986-12-13", "Leeds, United Kingdom", "CLARK812136LL9CD", "DRLC", "GB",
         "RA000591"),
        ("fred", "Frederick", "Walsh", "5604",
         PostalAddress("Deansgate", "301", "M3 4LQ", "Manchester", "GB"),
         "1965-08-08", "Bolton, United Kingdom", "548812037", "CCPT", "GB", "RA000585"),
    ),
    EVIL: (
        ("voldemort", "Tom", "Riddle", "6660",
         PostalAddress("Little Hangleton Lane", "1", "GY6 8XX", "St Sampson", "GG"),
         "1926-12-31", "London, United Kingdom", "GG0066601", "IDCD", "GG", "RA000304"),
        ("launderer", "Lance", "Underwood", "6661",
         PostalAddress("Rue du Pre", "7", "GY1 1LU", "St Peter Port", "GG"),
         "1975-04-01", "Douglas, Isle of Man", "GG0066602", "IDCD", "GG", "RA000304"),
        ("badnews", "Bernard", "Newsome", "6662",
         PostalAddress("Les Banques", "21", "GY1 2HZ", "St Peter Port", "GG"),
         "1982-02-13", "St Helier, Jersey", "GG0066603", "IDCD", "GG", "RA000304"),
        ("gambler", "Gerald", "Ambler", "6663",
         PostalAddress("Route de Vazon", "5", "GY5 7LG", "Castel", "GG"),
         "1969-09-09", "Monte Carlo, Monaco", "GG0066604", "IDCD", "GG", "RA000304"),
    ),
    CHARLIE: (
        ("spiderman", "Peter", "Parker", "C-0001",
         PostalAddress("Ingram Street", "20", "10115", "Berlin", "DE", "BE"),
         "2001-08-10", "Queens, NY", "C01X00T47", "IDCD", "DE", "RA000197"),
        ("batman", "Bruce", "Wayne", "C-0002",
         PostalAddress("Gotham Allee", "1007", "10117", "Berlin", "DE", "BE"),
         "1972-02-19", "Gotham, NJ", "C01X00T48", "IDCD", "DE", "RA000197"),
        ("superman", "Clark", "Kent", "C-0003",
         PostalAddress("Hauptstrasse", "344", "10827", "Berlin", "DE", "BE"),
         "1977-06-18", "Smallville, KS", "C01X00T49", "IDCD", "DE", "RA000197"),
        ("morbius", "Michael", "Morbius", "C-0004",
         PostalAddress("Laborweg", "9", "10249", "Berlin", "DE", "BE"),
         "1983-10-31", "Athens, Greece", "C01X00T50", "IDCD", "DE", "RA000197"),
    ),
}
# fmt: on


def _make_wallets() -> tuple[Wallet, ...]:
    wallets = []
    for vasp, rows in _PEOPLE.items():
        for (local, first, last, cid, home, dob, pob, idn, idt, idc, ra), (op, bp) in zip(
            rows, POLICY_PAIRS, strict=True
        ):
            email = f"{local}@{vasp.email_domain}"
            wallets.append(
                Wallet(
                    address=wallet_address(email),
                    email=email,
                    first_name=first,
                    last_name=last,
                    vasp=vasp.common_name,
                    originator_policy=op,
                    beneficiary_policy=bp,
                    customer=Customer(cid, home, dob, pob, idn, idt, idc, ra),
                )
            )
    return tuple(wallets)


#: Every fixture wallet: Alice, Bob, Evil, Charlie, four each in POLICY_PAIRS order.
WALLETS: tuple[Wallet, ...] = _make_wallets()

#: The cast as a :class:`WalletBook`.
BOOK = WalletBook(VASPS, WALLETS)


# -- IVMS101 ------------------------------------------------------------------------


def natural_person(wallet: Wallet) -> ivms101_pb2.Person:
    """The wallet holder as an ``ivms101.Person`` (``natural_person`` branch).

    LEGL name (primary = last name, secondary = first name), the home address, the
    national identification, the customer id, date and place of birth and country of
    residence; a wallet without a :class:`Customer` record gives the name only.
    """
    person = ivms101_pb2.NaturalPerson(
        name=ivms101_pb2.NaturalPersonName(
            name_identifiers=[
                ivms101_pb2.NaturalPersonNameId(
                    primary_identifier=wallet.last_name,
                    secondary_identifier=wallet.first_name,
                    name_identifier_type=enum_pb2.NATURAL_PERSON_NAME_TYPE_CODE_LEGL,
                )
            ]
        )
    )
    customer = wallet.customer
    if customer is not None:
        person.geographic_addresses.append(customer.home.to_ivms(enum_pb2.ADDRESS_TYPE_CODE_HOME))
        person.national_identification.CopyFrom(
            ivms101_pb2.NationalIdentification(
                national_identifier=customer.id_number,
                national_identifier_type=enum_pb2.NationalIdentifierTypeCode.Value(
                    f"NATIONAL_IDENTIFIER_TYPE_CODE_{customer.id_type}"
                ),
                country_of_issue=customer.id_country,
                registration_authority=customer.registration_authority,
            )
        )
        person.customer_identification = customer.customer_id
        person.date_and_place_of_birth.CopyFrom(
            ivms101_pb2.DateAndPlaceOfBirth(
                date_of_birth=customer.date_of_birth, place_of_birth=customer.place_of_birth
            )
        )
        person.country_of_residence = customer.home.country
    return ivms101_pb2.Person(natural_person=person)
