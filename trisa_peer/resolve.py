"""Steps 1, 6 and 7 (offline part) on the client side (Alice verifying Bob).

:class:`PeerResolver` turns a common name (or id) into a :class:`ConnectionPlan`:

* step 1 -- look the peer up (endpoint and registered certificate);
* step 6 -- check offline that the *registered* leaf chains to a TRISA root as a server
  certificate for the endpoint host, and is not on a CRL;
* step 7 -- the record is coherent (not revoked, CN == endpoint host); the TLS channel
  then pins that very leaf as its only trust anchor, so the handshake itself refuses any
  other certificate. :func:`trisa_peer.transport.status.dial_error` names the step
  when it does.

During a planned reissue's grace the record also carries the *superseded* certificate
(:class:`~trisa_peer.records.SupersededCertificate`): it passes steps 6 and 7 the same
way and is pinned next to the current one until ``grace_until``
(:attr:`ConnectionPlan.pin_until`), when the connector re-plans and drops a channel
pinned to it. A superseded certificate past its grace is not pinned.

Pure: imports neither grpc nor the generated protobuf code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .binding import bind
from .certs import certs_to_pem
from .errors import DirectoryError, DirectoryMismatchError, HandshakeError
from .lookup import lookup_peer
from .records import DirectoryLookup, PeerRecord
from .steps import HandshakeStep, Reason
from .trace import HandshakeTrace
from .verify import ChainVerifier, VerifiedChain

__all__ = ["ConnectionPlan", "PeerResolver"]

Step = HandshakeStep


@dataclass(frozen=True)
class ConnectionPlan:
    """What a client needs to dial a verified peer: the pin and the names to use.

    ``pin_pem`` is the registered leaf (PEM), given to gRPC as the *only* trust anchor;
    ``target_name`` is the name the server certificate must carry (the endpoint host);
    ``address`` is where to connect (``--resolve`` may map the endpoint elsewhere).
    ``pin_until`` is set when ``pin_pem`` also holds the superseded certificate: the
    end of its grace, after which this plan must not be used.
    """

    record: PeerRecord
    verified: VerifiedChain
    pin_pem: bytes
    target_name: str
    address: str
    pin_until: datetime | None = None

    @property
    def endpoint(self) -> str:
        return self.record.endpoint


class PeerResolver:
    """Steps 1, 6 and 7 (offline part) for an outgoing connection."""

    def __init__(
        self,
        verifier: ChainVerifier,
        directory: DirectoryLookup,
        *,
        resolve: dict[str, str] | None = None,
    ) -> None:
        self.verifier = verifier
        self.directory = directory
        # Kept by reference: entries added later (e.g. a peer that just registered) apply.
        self.resolve: dict[str, str] = resolve if resolve is not None else {}

    def plan(
        self,
        common_name_or_id: str,
        *,
        trace: HandshakeTrace | None = None,
        fresh: bool = False,
    ) -> ConnectionPlan:
        trace = trace if trace is not None else HandshakeTrace()
        name = common_name_or_id
        with trace.step(Step.LOOKUP_PEER) as note:
            record = _lookup(self.directory, name, fresh=fresh)
            note[0] = f"{record.common_name} at {record.endpoint} (id {record.id})"
        leaf = record.identity_certificate
        with trace.step(Step.VERIFY_SERVER_CHAIN) as note:
            if leaf is None:
                raise DirectoryMismatchError(
                    f"the directory record of {record.common_name!r} holds no identity "
                    "certificate to verify",
                    step=Step.BIND_SERVER_RECORD,
                    peer=record.common_name,
                    reason=Reason.NO_CERTIFICATE_ON_RECORD,
                )
            verified = self.verifier.verify_server(
                leaf, record.identity_chain, host=record.host, peer=record.common_name
            )
            note[0] = f"registered leaf chains to {verified.chain[-1].subject.rfc4514_string()}"
        pins = [leaf]
        old = record.superseded
        now = self.verifier.clock()
        with trace.step(Step.BIND_SERVER_RECORD) as note:
            bind(leaf, record, step=Step.BIND_SERVER_RECORD, now=now)
            note[0] = f"pinning registered certificate sha256 {verified.fingerprint[:16]}..."
            if old is not None and now < old.grace_until:
                try:  # steps 6 and 7 for it too; one that fails is simply not pinned
                    prior = self.verifier.verify_server(
                        old.certificate, old.chain, host=record.host, peer=record.common_name)
                    match = bind(old.certificate, record, step=Step.BIND_SERVER_RECORD, now=now)
                except HandshakeError as exc:
                    note[0] += f"; superseded certificate not pinned: {exc}"
                else:
                    pins.append(old.certificate)
                    note[0] += (f" and the superseded certificate sha256 "
                                f"{prior.fingerprint[:16]}... ({match.describe()})")
        address = self.resolve.get(record.endpoint.lower(), record.endpoint)
        return ConnectionPlan(
            record=record,
            verified=verified,
            pin_pem=certs_to_pem(pins),
            target_name=record.host,
            address=address,
            pin_until=old.grace_until if len(pins) > 1 and old is not None else None,
        )


def _lookup(directory: DirectoryLookup, name: str, *, fresh: bool) -> PeerRecord:
    """Step 1. When the directory cannot answer, this node's user gets its cause and
    fix (refused, timeout, TLS on one side only, ...: the directory client's message);
    a server refusing a caller keeps that detail to its own log instead."""
    try:
        return lookup_peer(directory, name, step=Step.LOOKUP_PEER, fresh=fresh)
    except HandshakeError as exc:
        cause = exc.__cause__
        if exc.reason != Reason.DIRECTORY_UNAVAILABLE or not isinstance(cause, DirectoryError):
            raise
        detail = str(cause).removeprefix(f"directory lookup of {name}: ")
        raise HandshakeError(
            f"directory unavailable while looking up {name!r}: {detail}",
            step=exc.step, peer=exc.peer, reason=exc.reason,
        ) from cause
