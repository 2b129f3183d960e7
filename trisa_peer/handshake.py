"""The order of the eight handshake steps, and the decisions each side takes.

This module owns the *sequence*; the individual checks live in
:mod:`trisa_peer.verify` (chains, CRL) and :mod:`trisa_peer.matching` (certificate to
record). Transport adapters gather inputs (the peer's PEM from gRPC's auth context,
the TLS error text of a failed dial) and hand them here.

Server side (Bob verifying Alice), :class:`PeerAuthenticator`:

* step 2 -- the client presented a certificate at all;
* step 3 -- it chains to a TRISA root as a *client* certificate (:class:`ChainVerifier`),
  and is not on a configured CRL;
* step 4 -- the directory holds a VERIFIED record for its common name, and the
  presented leaf is that record's identity certificate (:func:`~trisa_peer.matching.bind`);
  on a mismatch the directory is asked once more with the cache bypassed (the peer may
  have rotated) before the call is refused.

Decisions are cached per leaf certificate (its PEM bytes) for ``decision_ttl`` seconds,
so the per-call cost is a dictionary look-up. A cached *acceptance* is the only way a
peer gets in while the directory is unreachable: fail closed otherwise.

Client side (Alice verifying Bob), :class:`PeerResolver`:

* step 1 -- look the peer up (endpoint and registered certificate);
* step 6 -- check offline that the *registered* leaf chains to a TRISA root as a server
  certificate for the endpoint host, and is not on a CRL;
* step 7 -- the record is coherent (not revoked, CN == endpoint host); the TLS channel
  then pins that very leaf as its only trust anchor, so the handshake itself refuses any
  other certificate (see DESIGN.md 2.3). :func:`classify_dial_failure` names the step
  when it does.

Pure: imports neither grpc nor the generated protobuf code.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime

from cryptography import x509

from .certs import certs_to_pem, fingerprint, parse_certificates
from .errors import (
    CertificateError,
    ChainVerificationError,
    DirectoryError,
    DirectoryMismatchError,
    DirectoryNotFoundError,
    HandshakeError,
    PeerNotRegisteredError,
    RevokedError,
    TransportSecurityError,
    TrisaPeerError,
)
from .matching import bind
from .records import DirectoryLookup, PeerRecord
from .steps import HandshakeStep
from .verify import ChainVerifier, VerifiedChain, common_name, dns_names

__all__ = [
    "ConnectionPlan",
    "HandshakeTrace",
    "PeerAuthenticator",
    "PeerResolver",
    "StepRecord",
    "VerifiedPeer",
    "classify_dial_failure",
]

log = logging.getLogger("trisa_peer.handshake")

Step = HandshakeStep


# --------------------------------------------------------------------------- trace


@dataclass(frozen=True)
class StepRecord:
    """One step's outcome: ``pass``, ``fail`` or ``skip``, with a reason and duration."""

    step: HandshakeStep
    outcome: str
    detail: str = ""
    reason: str = ""
    duration_ms: float = 0.0


@dataclass
class HandshakeTrace:
    """The eight steps as they happened, in order, for display and logs."""

    records: list[StepRecord] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, step: HandshakeStep, detail: str = "") -> Iterator[list[str]]:
        """Time a step; yields a one-element list the caller may set to a detail text.

        A :class:`HandshakeError` escaping the block is recorded as a failure of the
        step *it* names (which may be a later step) and re-raised.
        """
        note = [detail]
        start = time.perf_counter()
        try:
            yield note
        except HandshakeError as exc:
            ms = (time.perf_counter() - start) * 1000
            self.records.append(StepRecord(exc.step, "fail", str(exc), exc.reason, ms))
            raise
        ms = (time.perf_counter() - start) * 1000
        self.records.append(StepRecord(step, "pass", note[0], "", ms))

    def add(self, step: HandshakeStep, outcome: str, detail: str = "", reason: str = "") -> None:
        self.records.append(StepRecord(step, outcome, detail, reason))

    @property
    def ok(self) -> bool:
        steps = {r.step for r in self.records if r.outcome == "pass"}
        return all(r.outcome != "fail" for r in self.records) and steps == set(HandshakeStep)

    def failed(self) -> StepRecord | None:
        return next((r for r in self.records if r.outcome == "fail"), None)

    def render(self) -> str:
        """A fixed-width table of the eight steps (missing ones shown as not reached)."""
        by_step: dict[HandshakeStep, StepRecord] = {}
        for rec in self.records:
            by_step[rec.step] = rec
        lines = []
        for step in HandshakeStep:
            found = by_step.get(step)
            if found is None:
                lines.append(f"  [ -- ] {int(step)} {step.title:<48} not reached")
                continue
            rec = found
            mark = {"pass": " ok ", "fail": "FAIL", "skip": "skip"}.get(rec.outcome, rec.outcome)
            took = f"{rec.duration_ms:7.1f} ms" if rec.duration_ms else " " * 10
            lines.append(f"  [{mark}] {int(step)} {step.title:<48} {took}  {rec.detail}")
        return "\n".join(lines)


# --------------------------------------------------------------------- server side


@dataclass(frozen=True)
class VerifiedPeer:
    """A counterparty that passed steps 2-4: what a handler is given.

    ``record`` is the directory record the certificate was bound to.
    """

    common_name: str
    fingerprint: str
    serial_hex: str
    record: PeerRecord
    chain: VerifiedChain
    verified_at: datetime

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain.leaf


@dataclass
class _Decision:
    peer: VerifiedPeer | None
    error: HandshakeError | None
    expires: float


class PeerAuthenticator:
    """Steps 2-4 for an incoming connection, with a per-certificate decision cache."""

    def __init__(
        self,
        verifier: ChainVerifier,
        directory: DirectoryLookup,
        *,
        decision_ttl: float = 300.0,
        negative_ttl: float = 5.0,
        max_entries: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
        refresh: Callable[[], object] | None = None,
        refresh_interval: float = 5.0,
    ) -> None:
        self.verifier = verifier
        self.directory = directory
        self.decision_ttl = decision_ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._now = monotonic
        self._cache: dict[bytes, _Decision] = {}
        self._unchecked: dict[bytes, VerifiedPeer] = {}
        self._lock = threading.Lock()
        # ``refresh`` (e.g. FileMaterial.current) is called at most every
        # ``refresh_interval`` seconds, so a CRL or trust pool written to disk applies
        # even while every peer keeps its connection open (no new TLS handshake).
        self._refresh = refresh
        self._refresh_interval = refresh_interval
        self._refreshed = float("-inf")
        # Bumped by forget(): a decision computed under an older trust pool or CRL is
        # never cached (nor served) after a rotation.
        self._generation = 0
        self._inserts = 0

    # The hot path: one dict look-up per RPC once a certificate has been decided.
    def authenticate_pem(
        self, leaf_pem: bytes | None, chain_pem: bytes | None = None
    ) -> VerifiedPeer:
        """Decide on a peer from the PEM that gRPC's auth context reports."""
        if not leaf_pem:
            raise TransportSecurityError(
                "peer did not return a certificate",
                step=Step.PRESENT_CLIENT_CERT,
                reason="no-client-certificate",
            )
        now = self._now()
        if self._refresh is not None and now - self._refreshed >= self._refresh_interval:
            self._refreshed = now
            self._refresh()
        hit = self._cache.get(leaf_pem)
        if hit is not None and hit.expires > now:
            if hit.error is not None:
                raise _fresh(hit.error)
            assert hit.peer is not None
            return hit.peer
        generation = self._generation
        try:
            leaf, *rest = parse_certificates(leaf_pem, source="peer certificate")
            presented = parse_certificates(chain_pem, source="peer chain") if chain_pem else []
        except (CertificateError, ValueError) as exc:
            raise ChainVerificationError(
                f"cannot parse the peer's certificate: {exc}",
                step=Step.VERIFY_CLIENT_CHAIN,
                reason="unparseable",
            ) from exc
        try:
            peer = self.authenticate(leaf, [*rest, *presented])
        except HandshakeError as exc:
            if exc.reason != "directory-unavailable":
                expires = self._now() + self.negative_ttl
                self._remember(leaf_pem, _Decision(None, _fresh(exc), expires), generation)
            raise
        self._remember(leaf_pem, _Decision(peer, None, self._now() + self.decision_ttl),
                       generation)
        return peer

    def _remember(self, key: bytes, decision: _Decision, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # decided under material that has since been replaced
            self._cache.pop(key, None)
            self._cache[key] = decision
            self._inserts += 1
            if self._inserts % 1024 == 0:  # drop expired entries now and then
                now = self._now()
                for stale in [k for k, d in self._cache.items() if d.expires <= now]:
                    del self._cache[stale]
            while len(self._cache) > self.max_entries:
                self._cache.pop(next(iter(self._cache)))

    def identify_pem(self, leaf_pem: bytes | None) -> VerifiedPeer:
        """Reference mode (``verify_peers=False``): who is calling, *without* steps 3-4.

        Only the TLS layer has checked the chain; the TRISA policy, the directory binding
        and revocation are not checked. The record is looked up by the certificate's
        common name so that replies can be sealed. For measuring what verification
        costs and for parity with the Go reference; never for production.
        """
        if not leaf_pem:
            raise TransportSecurityError(
                "peer did not return a certificate",
                step=Step.PRESENT_CLIENT_CERT,
                reason="no-client-certificate",
            )
        hit = self._unchecked.get(leaf_pem)
        if hit is not None:
            return hit
        leaf = parse_certificates(leaf_pem, source="peer certificate")[0]
        cn = common_name(leaf)
        record = _lookup(self.directory, cn, step=Step.BIND_CLIENT_RECORD)
        chain = VerifiedChain(leaf, (leaf,), fingerprint(leaf), cn, dns_names(leaf),
                              self.verifier.clock())
        peer = VerifiedPeer(cn, chain.fingerprint, chain.serial_hex, record, chain,
                            chain.verified_at)
        with self._lock:
            if len(self._unchecked) >= self.max_entries:
                self._unchecked.clear()
            self._unchecked[leaf_pem] = peer
        return peer

    def cached_decisions(self) -> int:
        return len(self._cache)

    def forget(self) -> None:
        """Drop every cached decision (e.g. after the trust pool or CRL changed)."""
        with self._lock:
            self._generation += 1
            self._cache.clear()
            self._unchecked.clear()

    def authenticate(
        self,
        leaf: x509.Certificate,
        presented: list[x509.Certificate] | tuple[x509.Certificate, ...] = (),
        *,
        trace: HandshakeTrace | None = None,
    ) -> VerifiedPeer:
        """Steps 3 and 4 without the cache; logs one line with the decision."""
        trace = trace if trace is not None else HandshakeTrace()
        cn = common_name(leaf)
        try:
            trace.add(Step.PRESENT_CLIENT_CERT, "pass", f"client presented {cn!r}")
            with trace.step(Step.VERIFY_CLIENT_CHAIN) as note:
                chain = self.verifier.verify_client(leaf, presented, peer=cn)
                note[0] = f"chains to {chain.chain[-1].subject.rfc4514_string()}"
            with trace.step(Step.BIND_CLIENT_RECORD) as note:
                record = self._bind(leaf, cn, note)
        except TrisaPeerError as exc:
            if not isinstance(exc, HandshakeError):  # e.g. a malformed directory record
                exc = DirectoryMismatchError(
                    f"cannot bind {cn!r} to its directory record: {exc}",
                    step=Step.BIND_CLIENT_RECORD, peer=cn, reason="invalid-record",
                )
                _log_decision(cn, leaf, exc.step, "reject", exc.reason, str(exc))
                raise exc from None
            _log_decision(cn, leaf, exc.step, "reject", exc.reason, str(exc))
            raise
        # bind() proved the presented leaf and the registered one are the same DER:
        # keep one parsed copy (the record's) so each cached decision holds one leaf.
        registered = record.identity_certificate
        if registered is not None:
            chain = replace(chain, leaf=registered, chain=(registered, *chain.chain[1:]))
        peer = VerifiedPeer(
            common_name=cn,
            fingerprint=chain.fingerprint,
            serial_hex=chain.serial_hex,
            record=record,
            chain=chain,
            verified_at=chain.verified_at,
        )
        _log_decision(cn, leaf, Step.BIND_CLIENT_RECORD, "accept", "verified", "")
        return peer

    def _bind(self, leaf: x509.Certificate, cn: str, note: list[str]) -> PeerRecord:
        step = Step.BIND_CLIENT_RECORD
        record = _lookup(self.directory, cn, step=step)
        try:
            bind(leaf, record, step=step)
        except DirectoryMismatchError:
            # The directory keeps only the current certificate and our copy may be
            # stale (rotation): ask once more, bypassing every cache, then decide.
            record = _lookup(self.directory, cn, step=step, fresh=True)
            bind(leaf, record, step=step)
            note[0] = f"bound to record {record.id} after a fresh directory query"
            return record
        note[0] = f"bound to directory record {record.id}"
        return record


def _log_decision(
    cn: str, leaf: x509.Certificate, step: HandshakeStep, outcome: str, reason: str, detail: str
) -> None:
    log.info(
        "peer=%s fingerprint=%s serial=%X step=%d outcome=%s reason=%s%s",
        cn or "-",
        fingerprint(leaf),
        leaf.serial_number,
        int(step),
        outcome,
        reason,
        f" detail={detail!r}" if detail else "",
    )


def _fresh(exc: HandshakeError) -> HandshakeError:
    """A new exception object with the same class and fields but no traceback, so a
    cached rejection re-raised many times does not grow (or pin) a traceback chain."""
    clone = exc.__class__.__new__(exc.__class__)
    clone.__dict__.update(exc.__dict__)
    clone.args = exc.args
    return clone


def _lookup(
    directory: DirectoryLookup, cn: str, *, step: HandshakeStep, fresh: bool = False
) -> PeerRecord:
    if not cn.strip():
        raise PeerNotRegisteredError(
            "the certificate has no common name to look up", step=step, reason="no-common-name"
        )
    try:
        return directory.lookup(common_name=cn, fresh=fresh)
    except DirectoryNotFoundError as exc:
        status = None
        with contextlib.suppress(DirectoryError):
            status = directory.verification_status(cn)
        why = (
            f"is registered but not VERIFIED (status {status})"
            if status and status != "VERIFIED"
            else "has no VERIFIED directory record"
        )
        raise PeerNotRegisteredError(
            f"{cn!r} {why}",
            step=step,
            peer=cn,
            reason="not-verified" if status and status != "VERIFIED" else "not-registered",
        ) from exc
    except DirectoryError as exc:
        # The detail (addresses, gRPC text) goes to our log, not to the peer.
        log.warning("directory unavailable while looking up %s: %s", cn, exc)
        raise HandshakeError(
            f"directory unavailable while looking up {cn!r}; try again later",
            step=step,
            peer=cn,
            reason="directory-unavailable",
        ) from exc
    except TrisaPeerError as exc:  # e.g. a name the directory client refuses
        raise PeerNotRegisteredError(
            f"cannot look {cn!r} up in the directory: {exc}", step=step, peer=cn,
            reason="not-registered",
        ) from exc


# --------------------------------------------------------------------- client side


@dataclass(frozen=True)
class ConnectionPlan:
    """What a client needs to dial a verified peer: the pin and the names to use.

    ``pin_pem`` is the registered leaf (PEM), given to gRPC as the *only* trust anchor;
    ``target_name`` is the name the server certificate must carry (the endpoint host);
    ``address`` is where to connect (``--resolve`` may map the endpoint elsewhere).
    """

    record: PeerRecord
    verified: VerifiedChain
    pin_pem: bytes
    target_name: str
    address: str

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
            record = _lookup(self.directory, name, step=Step.LOOKUP_PEER, fresh=fresh)
            note[0] = f"{record.common_name} at {record.endpoint} (id {record.id})"
        leaf = record.identity_certificate
        with trace.step(Step.VERIFY_SERVER_CHAIN) as note:
            if leaf is None:
                raise DirectoryMismatchError(
                    f"the directory record of {record.common_name!r} holds no identity "
                    "certificate to verify",
                    step=Step.BIND_SERVER_RECORD,
                    peer=record.common_name,
                    reason="no-certificate-on-record",
                )
            verified = self.verifier.verify_server(
                leaf, record.identity_chain, host=record.host, peer=record.common_name
            )
            note[0] = f"registered leaf chains to {verified.chain[-1].subject.rfc4514_string()}"
        with trace.step(Step.BIND_SERVER_RECORD) as note:
            bind(leaf, record, step=Step.BIND_SERVER_RECORD)
            note[0] = f"pinning registered certificate sha256 {verified.fingerprint[:16]}..."
        address = self.resolve.get(record.endpoint.lower(), record.endpoint)
        return ConnectionPlan(
            record=record,
            verified=verified,
            pin_pem=certs_to_pem([leaf]),
            target_name=record.host,
            address=address,
        )


def classify_dial_failure(details: str, *, peer: str) -> HandshakeError:
    """Turn the text of a failed pinned TLS dial into the step that failed.

    With the registered leaf as the only anchor, "unable to get local issuer" or
    "self signed certificate in certificate chain" mean the server presented another
    certificate than the registered one (step 7); a hostname failure or an expired
    certificate is a chain-level failure (step 6); a refused connection is transport.
    """
    text = details.lower()
    if "local issuer" in text or "self signed" in text or "self-signed" in text:
        return DirectoryMismatchError(
            "the server presented a certificate other than the one registered in the "
            f"directory ({_tls_reason(details)})",
            step=Step.BIND_SERVER_RECORD,
            peer=peer,
            reason="certificate-mismatch",
        )
    if "hostname" in text or "host name" in text or "subject alt" in text:
        return ChainVerificationError(
            f"server certificate does not match the endpoint host ({_tls_reason(details)})",
            step=Step.VERIFY_SERVER_CHAIN,
            peer=peer,
            reason="san-mismatch",
        )
    if "expired" in text or "not yet valid" in text:
        return ChainVerificationError(
            f"server certificate is outside its validity period ({_tls_reason(details)})",
            step=Step.VERIFY_SERVER_CHAIN,
            peer=peer,
            reason="expired" if "expired" in text else "not-yet-valid",
        )
    if "revoked" in text:
        return RevokedError(
            f"server certificate revoked ({_tls_reason(details)})",
            step=Step.VERIFY_SERVER_CHAIN,
            peer=peer,
        )
    return TransportSecurityError(
        f"could not establish a TLS connection: {_tls_reason(details)}",
        step=Step.PRESENT_SERVER_CERT,
        peer=peer,
        reason="tls-failed",
    )


def _tls_reason(details: str) -> str:
    text = " ".join(details.split())
    return text if len(text) <= 300 else text[:297] + "..."
