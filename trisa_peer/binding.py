"""Binding a verified certificate to the peer's directory record (steps 4 and 7).

:func:`bind` checks, in this order:

1. the record holds an identity certificate at all;
2. the presented leaf *is* that certificate: equal SHA-256 fingerprints of the DER --
   or it is the record's *superseded* certificate (a planned reissue replaced it) and
   ``now`` is before the end of its grace (``record.superseded.grace_until``). The
   directory never offers a revoked certificate as superseded; a superseded one whose
   grace has ended is a mismatch that says so. Serial numbers and public keys are
   reported as diagnostics only -- serials collide across CAs (the upstream test
   leaves all carry serial 0x0799);
3. the directory has not flagged the certificate ``revoked``;
4. the record's endpoint host equals the leaf's common name and is among its SAN DNS
   names, and the record's common name equals the leaf's.

It does *not* check the chain, validity or key strength (:mod:`trisa_peer.verify` does)
and it does not talk to the directory (:mod:`trisa_peer.authenticate` and
:mod:`trisa_peer.resolve` decide when to re-query).

Pure: imports neither grpc nor the generated protobuf code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509

from .certs import common_name, fingerprint, format_serial, spki_der
from .errors import ConfigurationError, DirectoryMismatchError, RevokedError
from .records import PeerRecord
from .steps import HandshakeStep, Reason
from .verify import dns_names

__all__ = ["BindMatch", "bind", "describe_mismatch"]


@dataclass(frozen=True)
class BindMatch:
    """Which registered certificate the presented leaf is: the current one, or the
    superseded one until ``grace_until`` (what the ``check`` trace says)."""

    certificate: x509.Certificate
    grace_until: datetime | None = None

    @property
    def superseded(self) -> bool:
        return self.grace_until is not None

    def describe(self) -> str:
        if self.grace_until is None:
            return "current"
        return f"superseded, grace until {self.grace_until:%Y-%m-%dT%H:%M:%SZ}"


def _spki_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(spki_der(cert.public_key())).hexdigest()


def describe_mismatch(
    presented: x509.Certificate, registered: x509.Certificate
) -> tuple[tuple[str, str, str], ...]:
    """``(field, presented, registered)`` for fingerprint, serial and public key."""
    rows = [
        ("fingerprint", fingerprint(presented), fingerprint(registered)),
        ("serial", format_serial(presented.serial_number), format_serial(registered.serial_number)),
        ("public-key-sha256", _spki_sha256(presented), _spki_sha256(registered)),
    ]
    return tuple(rows)


def bind(
    leaf: x509.Certificate, record: PeerRecord, *, step: HandshakeStep,
    now: datetime | None = None,
) -> BindMatch:
    """Raise unless ``leaf`` is the registered, unrevoked identity certificate of
    ``record``, or its superseded one within the grace (at ``now``, default the wall
    clock); returns which one matched."""
    peer = record.common_name
    registered = record.identity_certificate
    match = BindMatch(registered) if registered is not None else None
    old = record.superseded
    if registered is None:
        raise DirectoryMismatchError(
            f"the directory record of {peer!r} holds no identity certificate",
            step=step,
            peer=peer,
            reason=Reason.NO_CERTIFICATE_ON_RECORD,
        )
    if fingerprint(leaf) != fingerprint(registered) and old is not None and (
            fingerprint(leaf) == fingerprint(old.certificate)):
        at = now if now is not None else datetime.now(UTC)
        if at >= old.grace_until:
            raise DirectoryMismatchError(
                f"presented certificate (serial {format_serial(leaf.serial_number)}) of "
                f"{peer!r} was superseded and its grace ended at "
                f"{old.grace_until:%Y-%m-%dT%H:%M:%SZ}",
                step=step, peer=peer,
                mismatches=describe_mismatch(leaf, registered),
            )
        match = BindMatch(old.certificate, old.grace_until)
    elif fingerprint(leaf) != fingerprint(registered):
        rows = describe_mismatch(leaf, registered)
        differing = [name for name, a, b in rows if a != b]
        raise DirectoryMismatchError(
            f"presented certificate (serial {rows[1][1]}, sha256 {rows[0][1][:16]}...) is not "
            f"the one registered for {peer!r} (serial {rows[1][2]}, sha256 {rows[0][2][:16]}...); "
            f"differs in {', '.join(differing)}",
            step=step,
            peer=peer,
            mismatches=rows,
        )
    if record.identity_revoked:
        raise RevokedError(
            f"the directory marks the certificate of {peer!r} (serial "
            f"{format_serial(leaf.serial_number)}) as revoked",
            step=step,
            peer=peer,
            reason=Reason.DIRECTORY_REVOKED,
        )
    cn = common_name(leaf)
    try:
        host = record.host
    except ConfigurationError:
        raise DirectoryMismatchError(
            f"the directory record of {peer!r} has an invalid endpoint {record.endpoint!r}",
            step=step, peer=peer, reason=Reason.INVALID_RECORD,
        ) from None
    if cn.lower() != record.common_name.lower():
        raise DirectoryMismatchError(
            f"certificate common name {cn!r} differs from the record's {record.common_name!r}",
            step=step,
            peer=peer,
            reason=Reason.NAME_MISMATCH,
            mismatches=(("common-name", cn, record.common_name),),
        )
    if host.lower() != cn.lower() or host.lower() not in (n.lower() for n in dns_names(leaf)):
        raise DirectoryMismatchError(
            f"registered endpoint host {host!r} does not match the certificate "
            f"(CN {cn!r}, SAN {', '.join(dns_names(leaf)) or 'none'})",
            step=step,
            peer=peer,
            reason=Reason.ENDPOINT_MISMATCH,
            mismatches=(("endpoint-host", cn, host),),
        )
    assert match is not None
    return match
