"""rVASP behaviour as pure functions: what the cast sends and how it answers (upstream
trisacrypto/testnet rVASPs).

Originator side: :func:`build_payload` makes a ``trisa.api.v1beta1.Payload`` (IVMS101
``IdentityPayload`` + generic ``Transaction``), and :func:`originator_payload` applies
the sending wallet's :class:`~.cast.OriginatorPolicy`.

Beneficiary side: :func:`beneficiary_handler` is a
:data:`~trisa_peer.network.handler.Handler` applying the receiving wallet's
:class:`~.cast.BeneficiaryPolicy`. Checks, in order, and the rejection each returns
(``retry`` follows Go's ``Errorf``: true for codes >= 150):

=====================================================  ==========================  =====
check                                                  code                        retry
=====================================================  ==========================  =====
identity is an ``ivms101.IdentityPayload`` that parses UNPARSEABLE_IDENTITY (151)   true
transaction is a generic ``Transaction`` (or a         UNPARSEABLE_TRANSACTION     true
``Pending`` carrying one) that parses                  (152)
``transaction.beneficiary`` is set                     MISSING_FIELDS (153)        true
the address is a wallet in the book                    UNKNOWN_WALLET_ADDRESS (51) false
the wallet belongs to *this* VASP (scenario 25)        UNKNOWN_WALLET_ADDRESS (51) false
a named beneficiary natural person is the holder       UNKOWN_BENEFICIARY (54)     false
SyncRequire: a complete beneficiary is present         INCOMPLETE_IDENTITY (154)   true
AsyncReject: the Pending callback                      REJECTED (50)               false
=====================================================  ==========================  =====

Choices where the spec leaves room: an address owned by another VASP is reported
exactly like an unknown one (UNKNOWN_WALLET_ADDRESS) so a peer cannot probe which VASP
holds an address; UNKOWN_BENEFICIARY (upstream spelling) is kept for an address we
hold whose named holder differs from the identity sent (name comparison on the LEGL
name, case-insensitive). Only natural-person names are compared; a beneficiary given
only as a legal person counts as incomplete (the cast's customers are all people).

The handler is stateless. Envelopes in a follow-up state (ACCEPTED, COMPLETED: the
second round of the async workflow, after the callback) pass the same checks and are
then echoed with :class:`~trisa_peer.network.handler.Accept` without re-running the
async policy; for an AsyncReject wallet they are refused with REJECTED, and an
incomplete beneficiary gets INCOMPLETE_IDENTITY. Tracking which envelopes were
accepted is the node's business.

This is test material (the demo's and the ``trisa_network`` fixture's default): the
production node imports it only for ``serve --policy rvasp`` (:func:`rvasp_handler`).

Nothing here logs, and no rejection message contains payload contents (names,
addresses, amounts): only field names and policy names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar, cast

from google.protobuf import any_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message

from .._pb.ivms101 import enum_pb2, identity_pb2
from .._pb.trisa.api.v1beta1 import api_pb2, errors_pb2
from .._pb.trisa.data.generic.v1beta1 import transaction_pb2
from ..envelope.timestamps import Clock, format_timestamp, utcnow
from ..errors import ConfigurationError
from ..network.handler import Accept, Handler, Incoming, Outcome, Pending, Reject
from .cast import (
    BOOK,
    BeneficiaryPolicy,
    OriginatorPolicy,
    VaspProfile,
    Wallet,
    WalletBook,
    natural_person,
)

__all__ = [
    "DEFAULT_AMOUNT",
    "beneficiary_handler",
    "build_payload",
    "expected_code",
    "expected_outcome",
    "is_complete_beneficiary",
    "originator_payload",
    "repair_payload",
    "rvasp_handler",
]

#: The amount :func:`originator_payload` sends unless told otherwise (as in the
#: upstream fixture).
DEFAULT_AMOUNT = 0.00206412

_E = errors_pb2.Error
_FOLLOW_UP_STATES = frozenset({api_pb2.TransferState.ACCEPTED, api_pb2.TransferState.COMPLETED})


# -- originator side ----------------------------------------------------------------


def _txid(originator: Wallet, beneficiary: Wallet, amount: float, sent_at: str) -> str:
    # A deterministic, realistic-looking 64-hex transaction hash: the simulation has
    # no chain, and tests want the same payload for the same inputs.
    seed = f"{originator.address}|{beneficiary.address}|{amount!r}|{sent_at}".encode()
    return hashlib.sha256(hashlib.sha256(seed).digest()).hexdigest()


def build_payload(
    originator: Wallet,
    beneficiary: Wallet,
    *,
    partial: bool,
    amount: float,
    network: str = "BTC",
    asset_type: str = "BTC",
    sent_at: datetime,
    txid: str | None = None,
    book: WalletBook = BOOK,
) -> api_pb2.Payload:
    """A ``trisa.api.v1beta1.Payload`` from ``originator`` to ``beneficiary``.

    ``identity`` packs an ``ivms101.IdentityPayload``: the originator's natural person
    and account number, the originating VASP's legal person, the beneficiary (only the
    account number when ``partial``, else the natural person too) and the beneficiary
    VASP's legal person. ``transaction`` packs a generic ``Transaction``; ``sent_at``
    (aware datetime) becomes RFC 3339 in UTC and is also the transaction timestamp.
    ``txid`` defaults to a hash of the inputs. VASPs are looked up in ``book``.
    """
    if amount <= 0:
        raise ValueError("amount must be positive")
    stamp = format_timestamp(sent_at)
    identity = identity_pb2.IdentityPayload(
        originator=identity_pb2.Originator(
            originator_persons=[natural_person(originator)],
            account_numbers=[originator.address],
        ),
        beneficiary=identity_pb2.Beneficiary(account_numbers=[beneficiary.address]),
        originating_vasp=identity_pb2.OriginatingVasp(
            originating_vasp=book.vasp(originator.vasp).person()
        ),
        beneficiary_vasp=identity_pb2.BeneficiaryVasp(
            beneficiary_vasp=book.vasp(beneficiary.vasp).person()
        ),
    )
    if not partial:
        identity.beneficiary.beneficiary_persons.append(natural_person(beneficiary))
    transaction = transaction_pb2.Transaction(
        txid=txid if txid is not None else _txid(originator, beneficiary, amount, stamp),
        originator=originator.address,
        beneficiary=beneficiary.address,
        amount=amount,
        network=network,
        timestamp=stamp,
        asset_type=asset_type,
    )
    payload = api_pb2.Payload(sent_at=stamp)
    payload.identity.Pack(identity)
    payload.transaction.Pack(transaction)
    return payload


def originator_payload(
    originator: Wallet,
    beneficiary: Wallet,
    *,
    sent_at: datetime,
    amount: float = DEFAULT_AMOUNT,
    network: str = "BTC",
    asset_type: str = "BTC",
    book: WalletBook = BOOK,
) -> api_pb2.Payload | Reject:
    """What ``originator``'s VASP sends to ``beneficiary``: a Payload, or a :class:`Reject`.

    SendPartial -> partial payload; SendFull -> full payload; SendError ->
    ``Reject(COMPLIANCE_CHECK_FAIL, retry=False)``, which the node sends as an error
    envelope (and then expects an error back). Returns ``api_pb2.Payload | Reject``.
    """
    policy = originator.originator_policy
    if policy is OriginatorPolicy.SEND_ERROR:
        return Reject(
            code=_E.COMPLIANCE_CHECK_FAIL,
            message="rVASP SendError policy: originator compliance check failed",
            retry=False,
        )
    return build_payload(
        originator,
        beneficiary,
        partial=policy is OriginatorPolicy.SEND_PARTIAL,
        amount=amount,
        network=network,
        asset_type=asset_type,
        sent_at=sent_at,
        book=book,
    )


def expected_outcome(originator: Wallet, beneficiary: Wallet) -> str:
    """``"accept"`` or ``"reject"``: the final outcome of the scenario-20 matrix."""
    return "accept" if expected_code(originator, beneficiary) is None else "reject"


def expected_code(originator: Wallet, beneficiary: Wallet) -> int | None:
    """The ``Error.Code`` the exchange ends with, or ``None`` when it is accepted.

    SendError -> COMPLIANCE_CHECK_FAIL (sent by the originator); SendPartial to
    SyncRequire -> INCOMPLETE_IDENTITY; anything to AsyncReject -> REJECTED (after a
    Pending). Assumes the beneficiary wallet is addressed to its own VASP.
    """
    if originator.originator_policy is OriginatorPolicy.SEND_ERROR:
        return int(_E.COMPLIANCE_CHECK_FAIL)
    policy = beneficiary.beneficiary_policy
    if policy is BeneficiaryPolicy.ASYNC_REJECT:
        return int(_E.REJECTED)
    if (
        policy is BeneficiaryPolicy.SYNC_REQUIRE
        and originator.originator_policy is OriginatorPolicy.SEND_PARTIAL
    ):
        return int(_E.INCOMPLETE_IDENTITY)
    return None


# -- parsing --------------------------------------------------------------------------


_M = TypeVar("_M", bound=Message)


def _unpack(message: any_pb2.Any, cls: type[_M]) -> _M | None:
    """``message`` (an Any) unpacked into ``cls``, or ``None`` if wrong type or bytes."""
    if not isinstance(message, any_pb2.Any) or not message.type_url:
        return None
    # types-protobuf types Message.DESCRIPTOR as a union with upb's own Descriptor,
    # which Any.Is accepts at run time.
    if not message.Is(cast(Descriptor, cls.DESCRIPTOR)):
        return None
    out = cls()
    try:
        out.ParseFromString(message.value)
    except DecodeError:
        return None
    return out


def _identity(payload: api_pb2.Payload) -> identity_pb2.IdentityPayload | None:
    if not isinstance(payload, api_pb2.Payload) or not payload.HasField("identity"):
        return None
    return _unpack(payload.identity, identity_pb2.IdentityPayload)


def _transaction(payload: api_pb2.Payload) -> transaction_pb2.Transaction | None:
    if not isinstance(payload, api_pb2.Payload) or not payload.HasField("transaction"):
        return None
    tx = _unpack(payload.transaction, transaction_pb2.Transaction)
    if tx is not None:
        return tx
    pending = _unpack(payload.transaction, transaction_pb2.Pending)
    if pending is not None and pending.HasField("transaction"):
        return pending.transaction
    return None


def _named_beneficiaries(identity: identity_pb2.IdentityPayload) -> list[tuple[str, str]]:
    """(primary, secondary) of every LEGL (else first) name of beneficiary natural persons."""
    names = []
    for person in identity.beneficiary.beneficiary_persons:
        if person.WhichOneof("person") != "natural_person":
            continue
        ids = [
            n for n in person.natural_person.name.name_identifiers if n.primary_identifier.strip()
        ]
        legal = [
            n for n in ids if n.name_identifier_type == enum_pb2.NATURAL_PERSON_NAME_TYPE_CODE_LEGL
        ]
        for n in legal or ids[:1]:
            names.append((n.primary_identifier, n.secondary_identifier))
    return names


def _complete(identity: identity_pb2.IdentityPayload) -> bool:
    return bool(_named_beneficiaries(identity))


def is_complete_beneficiary(payload: api_pb2.Payload) -> bool:
    """True if ``payload``'s identity names a beneficiary natural person.

    "Named" means a name identifier with a non-empty primary identifier (LEGL
    preferred). False for an unparseable or missing identity.
    """
    identity = _identity(payload)
    return identity is not None and _complete(identity)


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def _names_holder(identity: identity_pb2.IdentityPayload, wallet: Wallet) -> bool:
    names = _named_beneficiaries(identity)
    if not names:
        return True  # nothing named: nothing to contradict (repair or require decides)
    want = (_fold(wallet.last_name), _fold(wallet.first_name))
    return any((_fold(p), _fold(s)) == want for p, s in names)


# -- repair -------------------------------------------------------------------------


def repair_payload(
    payload: api_pb2.Payload,
    wallet: Wallet,
    vasp: VaspProfile,
    *,
    received_at: datetime | None = None,
) -> api_pb2.Payload:
    """A copy of ``payload`` with the beneficiary filled in (``payload`` is not modified).

    If no beneficiary natural person is named, the beneficiary persons become the
    holder of ``wallet``; the wallet address is added to the account numbers if
    missing; a missing beneficiary VASP becomes ``vasp``. Everything else is kept.
    ``received_at`` (if given) is stamped in RFC 3339. Raises :class:`ValueError` if
    the identity does not parse.
    """
    identity = _identity(payload)
    if identity is None:
        raise ValueError("payload identity is not an ivms101.IdentityPayload")
    if not _complete(identity):
        del identity.beneficiary.beneficiary_persons[:]
        identity.beneficiary.beneficiary_persons.append(natural_person(wallet))
    if wallet.address not in identity.beneficiary.account_numbers:
        identity.beneficiary.account_numbers.append(wallet.address)
    bvasp = identity.beneficiary_vasp.beneficiary_vasp
    if not identity.HasField("beneficiary_vasp") or bvasp.WhichOneof("person") is None:
        identity.beneficiary_vasp.beneficiary_vasp.CopyFrom(vasp.person())
    repaired = api_pb2.Payload()
    repaired.CopyFrom(payload)
    repaired.identity.Pack(identity)
    if received_at is not None:
        repaired.received_at = format_timestamp(received_at)
    return repaired


# -- beneficiary side ---------------------------------------------------------------


@dataclass(frozen=True)
class _Checked:
    identity: identity_pb2.IdentityPayload
    wallet: Wallet


def beneficiary_handler(
    book: WalletBook,
    own_cn: str,
    *,
    async_delay: timedelta = timedelta(seconds=0),
    window: timedelta = timedelta(minutes=60),
    clock: Clock = utcnow,
) -> Handler:
    """The handler (``Incoming -> Outcome``) of the simulated VASP ``own_cn`` (module doc).

    ``async_delay`` is when AsyncRepair/AsyncReject callbacks become due,
    ``window`` the reply window of the Pending; ``clock`` stamps ``received_at`` on
    repaired payloads. Raises :class:`ValueError` if ``own_cn`` is not in ``book`` or
    the durations are negative.
    """
    if not book.has_vasp(own_cn):
        raise ValueError(f"{own_cn!r} is not a VASP of the wallet book")
    if async_delay < timedelta(0) or window <= timedelta(0):
        raise ValueError("async_delay must be >= 0 and window > 0")
    own = book.vasp(own_cn)

    def check(incoming: Incoming) -> _Checked | Reject:
        identity = _identity(incoming.payload)
        transaction = _transaction(incoming.payload)
        if identity is None:
            return Reject(_E.UNPARSEABLE_IDENTITY,
                          "identity is not a parseable ivms101.IdentityPayload", retry=True)
        if transaction is None:
            return Reject(_E.UNPARSEABLE_TRANSACTION, "transaction is not a parseable "
                          "trisa.data.generic.v1beta1.Transaction", retry=True)
        if not transaction.beneficiary:
            return Reject(
                _E.MISSING_FIELDS, "transaction has no beneficiary wallet address", retry=True
            )
        wallet = book.by_address(transaction.beneficiary)
        if wallet is None or wallet.vasp != own_cn:
            # Another VASP's wallet is reported like an unknown one (scenario 25).
            return Reject(
                _E.UNKNOWN_WALLET_ADDRESS,
                f"beneficiary wallet address is not held by {own.legal_name}",
                retry=False,
            )
        if not _names_holder(identity, wallet):
            return Reject(
                _E.UNKOWN_BENEFICIARY,
                "named beneficiary does not hold the beneficiary wallet",
                retry=False,
            )
        return _Checked(identity=identity, wallet=wallet)

    def accept_repaired(incoming: Incoming) -> Accept | Reject:
        checked = check(incoming)
        if isinstance(checked, Reject):
            return checked
        return Accept(
            payload=repair_payload(incoming.payload, checked.wallet, own, received_at=clock())
        )

    def reject_async(incoming: Incoming) -> Accept | Reject:
        checked = check(incoming)
        if isinstance(checked, Reject):
            return checked
        return Reject(
            _E.REJECTED, "rVASP AsyncReject policy: transfer rejected after review", retry=False
        )

    def pending(message: str, callback: Callable[[Incoming], Accept | Reject]) -> Pending:
        return Pending(message=message, delay=async_delay, window=window, callback=callback)

    def handle(incoming: Incoming) -> Outcome:
        checked = check(incoming)
        if isinstance(checked, Reject):
            return checked
        policy = checked.wallet.beneficiary_policy
        complete = _complete(checked.identity)

        if incoming.transfer_state in _FOLLOW_UP_STATES:
            if policy is BeneficiaryPolicy.ASYNC_REJECT:
                return reject_async(incoming)
            if not complete:
                return Reject(
                    _E.INCOMPLETE_IDENTITY,
                    "follow-up transfer lacks a complete beneficiary identity",
                    retry=True,
                )
            return Accept()

        if policy is BeneficiaryPolicy.SYNC_REPAIR:
            return accept_repaired(incoming)
        if policy is BeneficiaryPolicy.SYNC_REQUIRE:
            if not complete:
                return Reject(
                    _E.INCOMPLETE_IDENTITY,
                    "rVASP SyncRequire policy: a complete beneficiary identity is required",
                    retry=True,
                )
            return accept_repaired(incoming)
        if policy is BeneficiaryPolicy.ASYNC_REPAIR:
            return pending(
                f"{own.legal_name} is reviewing the transfer and will reply shortly",
                accept_repaired,
            )
        return pending(f"{own.legal_name} flagged the transfer for compliance review", reject_async)

    return handle


def rvasp_handler(common_name: str, book: WalletBook = BOOK) -> Handler:
    """``serve --policy rvasp``: the :func:`beneficiary_handler` of ``common_name``.

    Raises :class:`~trisa_peer.errors.ConfigurationError` (one line naming the cast) if
    ``common_name`` is not a VASP of ``book``: the robot-VASP rules know only the
    demo's wallets, so any other node must choose review, accept or reject.
    """
    if not book.has_vasp(common_name):
        names = ", ".join(sorted(v.common_name for v in book.vasps))
        raise ConfigurationError(
            f"--policy rvasp answers only for the demo's robot VASPs ({names}), "
            f"not {common_name!r}: use review, accept or reject")
    return beneficiary_handler(book, common_name)
