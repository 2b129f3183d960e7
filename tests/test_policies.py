"""rVASP cast and policies (DESIGN §5 C, scenarios 20, 21, 25), pure: no sockets.

Every originator policy is sent to every beneficiary policy through
``originator_payload`` -> ``beneficiary_handler`` (and the Pending callbacks), with
the outcome checked against ``expected_outcome``; each accepted case has a rejected
twin (unknown wallet, another VASP's wallet, garbage identity or transaction).
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from pki import MemoryDirectory, identity, pool, record_for

from trisa_peer._pb.ivms101 import enum_pb2, identity_pb2
from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, errors_pb2
from trisa_peer._pb.trisa.data.generic.v1beta1 import transaction_pb2
from trisa_peer.envelope.timestamps import parse_timestamp
from trisa_peer.envelope.validate import payload_problem
from trisa_peer.errors import ConfigurationError
from trisa_peer.handshake import PeerAuthenticator, VerifiedPeer
from trisa_peer.network.handler import Accept, Incoming, Pending, Reject
from trisa_peer.testing import cast
from trisa_peer.testing.cast import (
    ALICE,
    BOB,
    BOOK,
    CHARLIE,
    EVIL,
    MALLORY,
    POLICY_PAIRS,
    WALLETS,
    BeneficiaryPolicy,
    OriginatorPolicy,
    Wallet,
    WalletBook,
    natural_person,
    wallet_address,
)
from trisa_peer.testing.policies import (
    beneficiary_handler,
    build_payload,
    expected_code,
    expected_outcome,
    is_complete_beneficiary,
    originator_payload,
    repair_payload,
    rvasp_handler,
)
from trisa_peer.verify import ChainVerifier

E = errors_pb2.Error
SENT_AT = datetime(2024, 5, 17, 9, 30, 15, 250000, tzinfo=UTC)
RECEIVED_AT = datetime(2024, 5, 17, 9, 30, 16, tzinfo=UTC)
NOW = datetime(2024, 5, 17, 9, 31, tzinfo=UTC)
EXCHANGING = (ALICE, BOB, CHARLIE, EVIL)


@cache
def alice_peer() -> VerifiedPeer:
    auth = PeerAuthenticator(ChainVerifier(pool()), MemoryDirectory(record_for("alice")))
    return auth.authenticate(identity("alice").leaf, identity("alice").chain)


def incoming(payload: Any, state: int = api_pb2.TransferState.STARTED) -> Incoming:
    return Incoming(
        peer=alice_peer(),
        envelope_id="2b3b4c95-0a78-4f2a-a9fa-041970f97144",
        payload=payload,
        transfer_state=state,
        received_at=RECEIVED_AT,
    )


def handler_for(cn: str) -> Any:
    return beneficiary_handler(BOOK, cn, async_delay=timedelta(seconds=2), clock=lambda: NOW)


def wallet(email: str) -> Wallet:
    found = BOOK.by_email(email)
    assert found is not None
    return found


def unpack_identity(payload: Any) -> Any:
    ident = identity_pb2.IdentityPayload()
    assert payload.identity.Unpack(ident)
    return ident


def unpack_transaction(payload: Any) -> Any:
    tx = transaction_pb2.Transaction()
    assert payload.transaction.Unpack(tx)
    return tx


def legl_names(ident: Any) -> list[tuple[str, str]]:
    return [
        (n.primary_identifier, n.secondary_identifier)
        for p in ident.beneficiary.beneficiary_persons
        for n in p.natural_person.name.name_identifiers
        if n.name_identifier_type == enum_pb2.NATURAL_PERSON_NAME_TYPE_CODE_LEGL
    ]


def run_exchange(originator: Wallet, beneficiary: Wallet) -> tuple[str, Any]:
    """Send and answer like the node would; returns ("accept"|"reject", last outcome)."""
    sent = originator_payload(originator, beneficiary, sent_at=SENT_AT)
    if isinstance(sent, Reject):
        return "reject", sent
    wire = api_pb2.Payload()
    wire.ParseFromString(sent.SerializeToString())
    outcome = handler_for(beneficiary.vasp)(incoming(wire))
    if isinstance(outcome, Pending):
        assert outcome.callback is not None
        outcome = outcome.callback(incoming(wire))
    assert isinstance(outcome, Accept | Reject)
    return ("accept" if isinstance(outcome, Accept) else "reject"), outcome


# -- cast -----------------------------------------------------------------------------


def test_wallet_fixtures_in_policy_order() -> None:
    expected = {
        ALICE: ("mary", "alice", "jane", "sarah", "alicevasp.us"),
        BOB: ("robert", "george", "larry", "fred", "bobvasp.co.uk"),
        EVIL: ("voldemort", "launderer", "badnews", "gambler", "evilvasp.gg"),
        CHARLIE: ("spiderman", "batman", "superman", "morbius", "charliebank.example"),
    }
    for vasp, (*locals_, domain) in expected.items():
        wallets = BOOK.wallets_of(vasp.common_name)
        assert [w.email for w in wallets] == [f"{n}@{domain}" for n in locals_]
        assert [(w.originator_policy, w.beneficiary_policy) for w in wallets] == list(POLICY_PAIRS)
        assert all(w.vasp == vasp.common_name for w in wallets)
    assert BOOK.wallets_of(MALLORY.common_name) == ()
    assert len(BOOK) == len(WALLETS) == 16
    assert POLICY_PAIRS[0] == (OriginatorPolicy.SEND_PARTIAL, BeneficiaryPolicy.SYNC_REPAIR)
    assert POLICY_PAIRS[3] == (OriginatorPolicy.SEND_ERROR, BeneficiaryPolicy.ASYNC_REJECT)


def test_vasp_profiles() -> None:
    assert (ALICE.common_name, ALICE.legal_name, ALICE.country) == (
        "alice.vasp.test",
        "AliceCoin",
        "US",
    )
    assert (BOB.common_name, BOB.legal_name, BOB.country) == ("bob.vasp.test", "BobVASP", "GB")
    assert (CHARLIE.common_name, CHARLIE.legal_name) == ("charlie.vasp.test", "CharlieBank")
    assert (EVIL.common_name, EVIL.legal_name) == ("evil.vasp.test", "EvilVASP")
    assert MALLORY.common_name == "mallory.vasp.test"
    assert BOOK.vasp("bob.vasp.test") is BOB
    with pytest.raises(KeyError):
        BOOK.vasp("nobody.vasp.test")


@pytest.mark.parametrize("vasp", cast.VASPS, ids=lambda v: v.common_name)
def test_legal_person_is_ivms101_shaped(vasp: cast.VaspProfile) -> None:
    lp = vasp.legal_person()
    legl = [
        n.legal_person_name
        for n in lp.name.name_identifiers
        if n.legal_person_name_identifier_type == enum_pb2.LEGAL_PERSON_NAME_TYPE_CODE_LEGL
    ]
    assert legl == [vasp.legal_name]
    assert lp.country_of_registration == vasp.country
    assert lp.geographic_addresses[0].address_type == enum_pb2.ADDRESS_TYPE_CODE_BIZZ
    assert lp.geographic_addresses[0].country == vasp.country
    nid = lp.national_identification
    assert nid.national_identifier_type == enum_pb2.NATIONAL_IDENTIFIER_TYPE_CODE_LEIX
    # IVMS101 C9/C10/C11: LEIX has no country of issue / RA, and a valid checksum.
    assert (nid.country_of_issue, nid.registration_authority) == ("", "")
    assert len(nid.national_identifier) == 20
    assert int("".join(str(int(c, 36)) for c in nid.national_identifier)) % 97 == 1


def test_wallet_addresses_deterministic_unique_and_wellformed() -> None:
    import hashlib

    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    addresses = [w.address for w in WALLETS]
    assert len(set(addresses)) == len(addresses)
    for w in WALLETS:
        assert w.address == wallet_address(w.email)  # stable: recomputed from the e-mail
        assert re.fullmatch(r"1[1-9A-HJ-NP-Za-km-z]{33}", w.address)
        # Base58Check: version 0x00 and a valid double-SHA-256 checksum
        n = 0
        for ch in w.address:
            n = n * 58 + alphabet.index(ch)
        raw = n.to_bytes(25, "big")
        assert raw[0] == 0
        assert hashlib.sha256(hashlib.sha256(raw[:21]).digest()).digest()[:4] == raw[21:]
    # A known value pins the derivation across runs and machines.
    assert wallet_address("mary@alicevasp.us") == "18hZ8YJqBqVo9gbyoxYBV7t71wapbAHT1j"
    assert wallet_address("MARY@alicevasp.us") == wallet_address("mary@alicevasp.us")


def test_book_lookups_and_duplicates() -> None:
    mary = wallet("mary@alicevasp.us")
    assert BOOK.by_address(mary.address) is mary
    assert BOOK.by_email("Mary@AliceVASP.us") is mary
    assert BOOK.by_address("1" * 34) is None
    assert BOOK.by_email("nobody@alicevasp.us") is None
    with pytest.raises(ValueError, match="duplicate wallet address"):
        WalletBook(cast.VASPS, [mary, mary])
    with pytest.raises(ValueError, match="unknown VASP"):
        WalletBook([BOB], [mary])


def test_natural_person() -> None:
    person = natural_person(wallet("larry@bobvasp.co.uk")).natural_person
    (name,) = person.name.name_identifiers
    assert (name.primary_identifier, name.secondary_identifier) == ("Clark", "Lawrence")
    assert name.name_identifier_type == enum_pb2.NATURAL_PERSON_NAME_TYPE_CODE_LEGL
    assert person.geographic_addresses[0].address_type == enum_pb2.ADDRESS_TYPE_CODE_HOME
    assert person.geographic_addresses[0].country == "GB"
    assert person.customer_identification == "5610"
    assert person.date_and_place_of_birth.date_of_birth == "1986-12-13"
    assert person.national_identification.registration_authority
    assert person.country_of_residence == "GB"


# -- originator side --------------------------------------------------------------------


@pytest.mark.parametrize("partial", [True, False], ids=["partial", "full"])
def test_build_payload_shape_and_roundtrip(partial: bool) -> None:
    mary, larry = wallet("mary@alicevasp.us"), wallet("larry@bobvasp.co.uk")
    payload = build_payload(mary, larry, partial=partial, amount=0.5, sent_at=SENT_AT)
    wire = api_pb2.Payload()
    wire.ParseFromString(payload.SerializeToString())
    assert wire == payload
    assert payload_problem(wire) is None  # envelope rules: non-empty Anys, RFC 3339
    assert wire.sent_at == "2024-05-17T09:30:15.25Z"
    assert parse_timestamp(wire.sent_at) == SENT_AT
    assert not wire.received_at
    assert wire.identity.type_url == "type.googleapis.com/ivms101.IdentityPayload"
    assert wire.transaction.type_url == "type.googleapis.com/trisa.data.generic.v1beta1.Transaction"

    ident = unpack_identity(wire)
    assert list(ident.originator.account_numbers) == [mary.address]
    assert (
        ident.originator.originator_persons[0]
        .natural_person.name.name_identifiers[0]
        .primary_identifier
        == "Tilcott"
    )
    assert ident.originating_vasp.originating_vasp.legal_person == ALICE.legal_person()
    assert ident.beneficiary_vasp.beneficiary_vasp.legal_person == BOB.legal_person()
    assert list(ident.beneficiary.account_numbers) == [larry.address]
    if partial:
        assert len(ident.beneficiary.beneficiary_persons) == 0
        assert not is_complete_beneficiary(wire)
    else:
        assert legl_names(ident) == [("Clark", "Lawrence")]
        assert is_complete_beneficiary(wire)

    tx = unpack_transaction(wire)
    assert (tx.originator, tx.beneficiary) == (mary.address, larry.address)
    assert (tx.amount, tx.network, tx.asset_type) == (0.5, "BTC", "BTC")
    assert tx.timestamp == wire.sent_at
    assert re.fullmatch(r"[0-9a-f]{64}", tx.txid)
    # deterministic for the same inputs, different for others
    again = build_payload(mary, larry, partial=partial, amount=0.5, sent_at=SENT_AT)
    assert again.SerializeToString(deterministic=True) == payload.SerializeToString(
        deterministic=True
    )
    other = build_payload(mary, larry, partial=partial, amount=0.6, sent_at=SENT_AT)
    assert unpack_transaction(other).txid != tx.txid


def test_build_payload_rejects_bad_inputs() -> None:
    mary, larry = wallet("mary@alicevasp.us"), wallet("larry@bobvasp.co.uk")
    with pytest.raises(ValueError):
        build_payload(mary, larry, partial=True, amount=0, sent_at=SENT_AT)
    with pytest.raises(ValueError):
        build_payload(mary, larry, partial=True, amount=1, sent_at=SENT_AT.replace(tzinfo=None))


def test_originator_policies() -> None:
    bob_wallets = BOOK.wallets_of(BOB.common_name)
    partial = originator_payload(wallet("mary@alicevasp.us"), bob_wallets[0], sent_at=SENT_AT)
    full = originator_payload(wallet("alice@alicevasp.us"), bob_wallets[0], sent_at=SENT_AT)
    error = originator_payload(wallet("sarah@alicevasp.us"), bob_wallets[0], sent_at=SENT_AT)
    assert isinstance(partial, api_pb2.Payload) and not is_complete_beneficiary(partial)
    assert isinstance(full, api_pb2.Payload) and is_complete_beneficiary(full)
    assert isinstance(error, Reject)
    assert (error.code, error.retry) == (E.COMPLIANCE_CHECK_FAIL, False)
    assert error.message


# -- the scenario-20 matrix -----------------------------------------------------------------

PAIRS = [
    (o, b)
    for src, dst in itertools.permutations(EXCHANGING, 2)
    for o, b in itertools.product(
        BOOK.wallets_of(src.common_name), BOOK.wallets_of(dst.common_name)
    )
]


@pytest.mark.parametrize(
    ("originator", "beneficiary"), PAIRS, ids=[f"{o.email}->{b.email}" for o, b in PAIRS]
)
def test_matrix_agrees_with_expected_outcome(originator: Wallet, beneficiary: Wallet) -> None:
    result, outcome = run_exchange(originator, beneficiary)
    assert result == expected_outcome(originator, beneficiary)
    code = expected_code(originator, beneficiary)
    if code is None:
        assert isinstance(outcome, Accept)
        assert outcome.payload is not None and is_complete_beneficiary(outcome.payload)
    else:
        assert isinstance(outcome, Reject) and outcome.code == code


MATRIX = [
    # (originator policy, beneficiary policy, result, code, pending first, retry)
    ("SendPartial", "SyncRepair", "accept", None, False, None),
    ("SendPartial", "SyncRequire", "reject", E.INCOMPLETE_IDENTITY, False, True),
    ("SendPartial", "AsyncRepair", "accept", None, True, None),
    ("SendPartial", "AsyncReject", "reject", E.REJECTED, True, False),
    ("SendFull", "SyncRepair", "accept", None, False, None),
    ("SendFull", "SyncRequire", "accept", None, False, None),
    ("SendFull", "AsyncRepair", "accept", None, True, None),
    ("SendFull", "AsyncReject", "reject", E.REJECTED, True, False),
    ("SendError", "SyncRepair", "reject", E.COMPLIANCE_CHECK_FAIL, False, False),
    ("SendError", "SyncRequire", "reject", E.COMPLIANCE_CHECK_FAIL, False, False),
    ("SendError", "AsyncRepair", "reject", E.COMPLIANCE_CHECK_FAIL, False, False),
    ("SendError", "AsyncReject", "reject", E.COMPLIANCE_CHECK_FAIL, False, False),
]


def first_with(vasp: cast.VaspProfile, *, op: str | None = None, bp: str | None = None) -> Wallet:
    return next(
        w
        for w in BOOK.wallets_of(vasp.common_name)
        if (op is None or w.originator_policy == op) and (bp is None or w.beneficiary_policy == bp)
    )


@pytest.mark.parametrize(
    ("op", "bp", "result", "code", "pending", "retry"),
    MATRIX,
    ids=[f"{r[0]}->{r[1]}" for r in MATRIX],
)
@pytest.mark.parametrize(
    ("src", "dst"), [(ALICE, BOB), (BOB, ALICE)], ids=["alice->bob", "bob->alice"]
)
def test_policy_matrix_step_by_step(
    src: cast.VaspProfile,
    dst: cast.VaspProfile,
    op: str,
    bp: str,
    result: str,
    code: int | None,
    pending: bool,
    retry: bool | None,
) -> None:
    originator, beneficiary = first_with(src, op=op), first_with(dst, bp=bp)
    assert expected_outcome(originator, beneficiary) == result
    assert expected_code(originator, beneficiary) == code

    sent = originator_payload(originator, beneficiary, sent_at=SENT_AT)
    if op == "SendError":
        assert isinstance(sent, Reject)
        assert (sent.code, sent.retry) == (code, retry)
        return
    outcome = handler_for(dst.common_name)(incoming(sent))
    if pending:
        assert isinstance(outcome, Pending)
        assert outcome.delay == timedelta(seconds=2)
        assert outcome.window > timedelta(0)
        assert outcome.message and originator.last_name not in outcome.message
        assert outcome.callback is not None
        outcome = outcome.callback(incoming(sent))
    if result == "accept":
        assert isinstance(outcome, Accept)
        repaired = outcome.payload
        assert repaired is not None
        assert payload_problem(repaired) is None
        assert legl_names(unpack_identity(repaired)) == [
            (beneficiary.last_name, beneficiary.first_name)
        ]
        assert repaired.received_at == "2024-05-17T09:31:00Z"
        assert repaired.sent_at == sent.sent_at
        assert unpack_transaction(repaired) == unpack_transaction(sent)
        # the incoming payload is not modified by the repair
        assert is_complete_beneficiary(sent) == (op == "SendFull")
        assert not sent.received_at
    else:
        assert isinstance(outcome, Reject)
        assert (outcome.code, outcome.retry) == (code, retry)
        assert beneficiary.last_name not in outcome.message
        assert beneficiary.address not in outcome.message


def test_sync_repair_fills_beneficiary_and_vasp() -> None:
    mary, robert = wallet("mary@alicevasp.us"), wallet("robert@bobvasp.co.uk")
    sent = originator_payload(mary, robert, sent_at=SENT_AT)
    ident = unpack_identity(sent)
    ident.ClearField("beneficiary_vasp")
    sent.identity.Pack(ident)
    outcome = handler_for(BOB.common_name)(incoming(sent))
    assert isinstance(outcome, Accept) and outcome.payload is not None
    repaired = unpack_identity(outcome.payload)
    assert legl_names(repaired) == [("Clarkson", "Robert")]
    assert repaired.beneficiary.beneficiary_persons[0] == natural_person(robert)
    assert list(repaired.beneficiary.account_numbers) == [robert.address]
    assert repaired.beneficiary_vasp.beneficiary_vasp.legal_person == BOB.legal_person()
    assert repaired.originator == ident.originator


def test_repair_payload_keeps_complete_identity() -> None:
    alice, george = wallet("alice@alicevasp.us"), wallet("george@bobvasp.co.uk")
    full = build_payload(alice, george, partial=False, amount=1.0, sent_at=SENT_AT)
    repaired = repair_payload(full, george, BOB)
    assert unpack_identity(repaired) == unpack_identity(full)
    garbage = api_pb2.Payload(sent_at=full.sent_at)
    garbage.identity.Pack(transaction_pb2.Transaction())
    with pytest.raises(ValueError):
        repair_payload(garbage, george, BOB)


# -- rejected twins ----------------------------------------------------------------------


def full_payload_to(address: str) -> Any:
    alice, george = wallet("alice@alicevasp.us"), wallet("george@bobvasp.co.uk")
    payload = build_payload(alice, george, partial=False, amount=1.0, sent_at=SENT_AT)
    tx = unpack_transaction(payload)
    tx.beneficiary = address
    payload.transaction.Pack(tx)
    return payload


def test_unknown_wallet_is_rejected() -> None:
    george = wallet("george@bobvasp.co.uk")
    assert isinstance(
        handler_for(BOB.common_name)(incoming(full_payload_to(george.address))), Accept
    )
    unknown = wallet_address("nobody@bobvasp.co.uk")
    outcome = handler_for(BOB.common_name)(incoming(full_payload_to(unknown)))
    assert isinstance(outcome, Reject)
    assert (outcome.code, outcome.retry) == (E.UNKNOWN_WALLET_ADDRESS, False)
    assert unknown not in outcome.message


@pytest.mark.parametrize("index", range(4))
def test_bob_wallet_sent_to_charlie_is_rejected(index: int) -> None:
    """Scenario 25: the beneficiary wallet belongs to another VASP."""
    originator = first_with(ALICE, op="SendFull")
    bob_wallet = BOOK.wallets_of(BOB.common_name)[index]
    sent = originator_payload(originator, bob_wallet, sent_at=SENT_AT)
    assert isinstance(sent, api_pb2.Payload)
    outcome = handler_for(CHARLIE.common_name)(incoming(sent))
    assert isinstance(outcome, Reject)
    assert (outcome.code, outcome.retry) == (E.UNKNOWN_WALLET_ADDRESS, False)
    # the twin: the same payload at Bob's handler is not refused for the address
    at_bob = handler_for(BOB.common_name)(incoming(sent))
    assert not (isinstance(at_bob, Reject) and at_bob.code == E.UNKNOWN_WALLET_ADDRESS)


def test_named_beneficiary_mismatch_is_unknown_beneficiary() -> None:
    alice, george = wallet("alice@alicevasp.us"), wallet("george@bobvasp.co.uk")
    larry = wallet("larry@bobvasp.co.uk")
    payload = build_payload(alice, george, partial=False, amount=1.0, sent_at=SENT_AT)
    ident = unpack_identity(payload)
    ident.beneficiary.beneficiary_persons[0].CopyFrom(natural_person(larry))
    payload.identity.Pack(ident)
    outcome = handler_for(BOB.common_name)(incoming(payload))
    assert isinstance(outcome, Reject)
    assert (outcome.code, outcome.retry) == (E.UNKOWN_BENEFICIARY, False)
    # case and spacing do not matter
    name = ident.beneficiary.beneficiary_persons[0].natural_person.name.name_identifiers[0]
    name.primary_identifier, name.secondary_identifier = "  WHITAKER ", "george"
    payload.identity.Pack(ident)
    assert isinstance(handler_for(BOB.common_name)(incoming(payload)), Accept)


def garbage_identities() -> list[Any]:
    wrong_type = any_of(transaction_pb2.Transaction(txid="x"))
    bad_bytes = any_of(identity_pb2.IdentityPayload())
    bad_bytes.value = b"\xff\xff\xff\xff"
    unknown_url = any_of(identity_pb2.IdentityPayload())
    unknown_url.type_url = "type.googleapis.com/example.Nope"
    return [wrong_type, bad_bytes, unknown_url, None]


def any_of(message: Any) -> Any:
    payload = api_pb2.Payload()
    payload.identity.Pack(message)
    return payload.identity


@pytest.mark.parametrize("garbage", garbage_identities(), ids=["type", "bytes", "url", "missing"])
def test_garbage_identity_is_unparseable(garbage: Any) -> None:
    payload = full_payload_to(wallet("mary@alicevasp.us").address)
    if garbage is None:
        payload.ClearField("identity")
    else:
        payload.identity.CopyFrom(garbage)
    outcome = handler_for(ALICE.common_name)(incoming(payload))
    assert isinstance(outcome, Reject)
    assert (outcome.code, outcome.retry) == (E.UNPARSEABLE_IDENTITY, True)
    assert not is_complete_beneficiary(payload)


def test_garbage_transaction_is_unparseable() -> None:
    payload = full_payload_to(wallet("mary@alicevasp.us").address)
    payload.transaction.Pack(identity_pb2.IdentityPayload())
    outcome = handler_for(ALICE.common_name)(incoming(payload))
    assert isinstance(outcome, Reject)
    assert (outcome.code, outcome.retry) == (E.UNPARSEABLE_TRANSACTION, True)


def test_missing_beneficiary_address() -> None:
    outcome = handler_for(ALICE.common_name)(incoming(full_payload_to("")))
    assert isinstance(outcome, Reject)
    assert (outcome.code, outcome.retry) == (E.MISSING_FIELDS, True)


def test_pending_transaction_is_understood() -> None:
    """A Pending carrying the transaction (async echo) is read like a Transaction."""
    jane, robert = wallet("jane@alicevasp.us"), wallet("robert@bobvasp.co.uk")
    payload = build_payload(jane, robert, partial=True, amount=1.0, sent_at=SENT_AT)
    pending = transaction_pb2.Pending(
        envelope_id="2b3b4c95-0a78-4f2a-a9fa-041970f97144",
        message="pending",
        transaction=unpack_transaction(payload),
    )
    payload.transaction.Pack(pending)
    outcome = handler_for(BOB.common_name)(incoming(payload))
    assert isinstance(outcome, Accept)


# -- follow-up rounds (async workflow) -------------------------------------------------------


def test_follow_up_states_echo_without_new_pending() -> None:
    jane, larry = wallet("jane@alicevasp.us"), wallet("larry@bobvasp.co.uk")
    sent = originator_payload(jane, larry, sent_at=SENT_AT)
    handle = handler_for(BOB.common_name)
    first = handle(incoming(sent))
    assert isinstance(first, Pending) and first.callback is not None
    accepted = first.callback(incoming(sent))
    assert isinstance(accepted, Accept) and accepted.payload is not None
    for state in (api_pb2.TransferState.ACCEPTED, api_pb2.TransferState.COMPLETED):
        echo = handle(incoming(accepted.payload, state))
        assert echo == Accept()

    # AsyncReject wallets never complete; incomplete follow-ups are sent back to repair
    fred = wallet("fred@bobvasp.co.uk")
    to_fred = originator_payload(jane, fred, sent_at=SENT_AT)
    refused = handle(incoming(to_fred, api_pb2.TransferState.COMPLETED))
    assert isinstance(refused, Reject) and refused.code == E.REJECTED
    partial = build_payload(jane, larry, partial=True, amount=1.0, sent_at=SENT_AT)
    incomplete = handle(incoming(partial, api_pb2.TransferState.COMPLETED))
    assert isinstance(incomplete, Reject)
    assert (incomplete.code, incomplete.retry) == (E.INCOMPLETE_IDENTITY, True)


def test_handler_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        beneficiary_handler(BOOK, "nobody.vasp.test")
    with pytest.raises(ValueError):
        beneficiary_handler(BOOK, BOB.common_name, async_delay=timedelta(seconds=-1))


def test_expected_outcome_table() -> None:
    table = {
        (o.originator_policy, b.beneficiary_policy): expected_outcome(o, b)
        for o in BOOK.wallets_of(ALICE.common_name)
        for b in BOOK.wallets_of(BOB.common_name)
    }
    assert table == {
        ("SendPartial", "SyncRepair"): "accept",
        ("SendPartial", "SyncRequire"): "reject",
        ("SendPartial", "AsyncRepair"): "accept",
        ("SendPartial", "AsyncReject"): "reject",
        ("SendFull", "SyncRepair"): "accept",
        ("SendFull", "SyncRequire"): "accept",
        ("SendFull", "AsyncRepair"): "accept",
        ("SendFull", "AsyncReject"): "reject",
        ("SendError", "SyncRepair"): "reject",
        ("SendError", "SyncRequire"): "reject",
        ("SendError", "AsyncRepair"): "reject",
        ("SendError", "AsyncReject"): "reject",
    }


def test_rvasp_handler_answers_for_a_vasp_of_the_cast() -> None:
    """``serve --policy rvasp`` on Bob's name: Bob's wallet rules (a SyncRepair wallet
    accepts a full payload)."""
    handle = rvasp_handler(BOB.common_name)
    sender = first_with(ALICE, op="SendFull")
    receiver = first_with(BOB, bp="SyncRepair")
    payload = originator_payload(sender, receiver, sent_at=SENT_AT)
    assert isinstance(handle(incoming(payload)), Accept)


def test_rvasp_handler_refuses_a_name_outside_the_cast_in_one_line() -> None:
    with pytest.raises(ConfigurationError) as err:
        rvasp_handler("carol.vasp.test")
    message = str(err.value)
    assert "\n" not in message
    assert "only for the demo's robot VASPs" in message and "'carol.vasp.test'" in message
    assert "use review, accept or reject" in message
