"""Decision logic of the handshake without a network: steps 1-7, cache, re-query."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
from pki import MemoryDirectory, identity, pool, record_for

from trisa_peer.binding import bind
from trisa_peer.controls import PeerControls
from trisa_peer.errors import (
    ChainVerificationError,
    DirectoryMismatchError,
    HandshakeError,
    PeerNotRegisteredError,
    RevokedError,
    TransportSecurityError,
)
from trisa_peer.handshake import (
    HandshakeTrace,
    PeerAuthenticator,
    PeerResolver,
)
from trisa_peer.lookup import lookup_peer
from trisa_peer.steps import HandshakeStep
from trisa_peer.verify import ChainVerifier


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def authenticator(directory: MemoryDirectory, clock: Clock | None = None,
                  grace: float = 0.0) -> PeerAuthenticator:
    return PeerAuthenticator(
        ChainVerifier(pool()), directory, decision_ttl=60, negative_ttl=5,
        monotonic=clock or Clock(), controls=PeerControls(grace=grace),
    )


def pem(name: str) -> bytes:
    return identity(name).chain_pem()


# -------------------------------------------------------------------- server side


def test_registered_peer_accepted_with_trace() -> None:
    auth = authenticator(MemoryDirectory(record_for("alice")))
    trace = HandshakeTrace()
    peer = auth.authenticate(identity("alice").leaf, identity("alice").chain, trace=trace)
    assert peer.common_name == "alice.vasp.test"
    assert peer.record.id == "id-alice"
    steps = [(r.step, r.outcome) for r in trace.records]
    assert steps == [
        (HandshakeStep.PRESENT_CLIENT_CERT, "pass"),
        (HandshakeStep.VERIFY_CLIENT_CHAIN, "pass"),
        (HandshakeStep.BIND_CLIENT_RECORD, "pass"),
    ]


def test_unregistered_peer_rejected_at_step_4() -> None:
    auth = authenticator(MemoryDirectory(record_for("alice")))
    with pytest.raises(PeerNotRegisteredError) as err:
        auth.authenticate_pem(pem("mallory"))
    assert err.value.step == HandshakeStep.BIND_CLIENT_RECORD
    assert "no VERIFIED directory record" in str(err.value)


def test_registered_but_not_verified_names_the_status() -> None:
    directory = MemoryDirectory()
    directory.statuses["alice.vasp.test"] = "PENDING_REVIEW"
    with pytest.raises(PeerNotRegisteredError) as err:
        authenticator(directory).authenticate_pem(pem("alice"))
    assert err.value.reason == "not-verified"
    assert "PENDING_REVIEW" in str(err.value)


def test_no_certificate_is_step_2() -> None:
    with pytest.raises(TransportSecurityError) as err:
        authenticator(MemoryDirectory()).authenticate_pem(None)
    assert err.value.step == HandshakeStep.PRESENT_CLIENT_CERT
    assert "peer did not return a certificate" in str(err.value)


def test_chain_failure_is_step_3_before_any_lookup() -> None:
    directory = MemoryDirectory(record_for("alice"))
    with pytest.raises(ChainVerificationError) as err:
        authenticator(directory).authenticate_pem(pem("evil"))
    assert err.value.step == HandshakeStep.VERIFY_CLIENT_CHAIN
    assert directory.calls == []


def test_impostor_same_name_same_ca_rejected_after_one_fresh_query() -> None:
    # bob-reissued is a valid certificate for bob.vasp.test from the right CA, but it
    # is not the one on record: the directory is asked once more, then it is refused.
    directory = MemoryDirectory(record_for("bob"))
    with pytest.raises(DirectoryMismatchError) as err:
        authenticator(directory).authenticate_pem(pem("bob-reissued"))
    assert err.value.step == HandshakeStep.BIND_CLIENT_RECORD
    assert directory.calls == [("bob.vasp.test", False), ("bob.vasp.test", True)]
    fields = {row[0] for row in err.value.mismatches}
    assert fields == {"fingerprint", "serial", "public-key-sha256"}


def test_rotation_accepted_after_fresh_query() -> None:
    # The cached copy still has the old certificate; the directory already has the new.
    directory = MemoryDirectory(record_for("bob-reissued"))
    directory.stale["bob.vasp.test"] = record_for("bob")
    peer = authenticator(directory).authenticate_pem(pem("bob-reissued"))
    assert peer.fingerprint == identity("bob-reissued").fingerprint
    assert directory.calls[-1] == ("bob.vasp.test", True)


def test_revoked_in_directory_rejected() -> None:
    directory = MemoryDirectory(record_for("alice", identity_revoked=True))
    with pytest.raises(RevokedError) as err:
        authenticator(directory).authenticate_pem(pem("alice"))
    assert err.value.reason == "directory-revoked"
    assert err.value.step == HandshakeStep.BIND_CLIENT_RECORD


def test_decisions_are_cached_per_certificate() -> None:
    directory = MemoryDirectory(record_for("alice"))
    clock = Clock()
    auth = authenticator(directory, clock)
    first = auth.authenticate_pem(pem("alice"))
    assert auth.authenticate_pem(pem("alice")) is first
    assert len(directory.calls) == 1
    clock.now += 61  # past the TTL: decided again
    auth.authenticate_pem(pem("alice"))
    assert len(directory.calls) == 2


def test_directory_down_known_peer_within_ttl_unknown_refused() -> None:
    directory = MemoryDirectory(record_for("alice"), record_for("charlie"))
    clock = Clock()
    auth = authenticator(directory, clock)
    auth.authenticate_pem(pem("alice"))
    directory.down = True
    assert auth.authenticate_pem(pem("alice")).common_name == "alice.vasp.test"
    with pytest.raises(HandshakeError) as err:
        auth.authenticate_pem(pem("charlie"))
    assert err.value.reason == "directory-unavailable"
    clock.now += 61  # the cached decision expired, no grace (0): fail closed
    with pytest.raises(HandshakeError):
        auth.authenticate_pem(pem("alice"))
    directory.down = False  # recovers by itself, and the failure was not cached
    assert auth.authenticate_pem(pem("charlie")).common_name == "charlie.vasp.test"


def test_rejections_cached_briefly_then_reconsidered() -> None:
    directory = MemoryDirectory()
    clock = Clock()
    auth = authenticator(directory, clock)
    for _ in range(3):
        with pytest.raises(PeerNotRegisteredError):
            auth.authenticate_pem(pem("alice"))
    assert len(directory.calls) == 1
    directory.put(record_for("alice"))
    clock.now += 6
    assert auth.authenticate_pem(pem("alice")).common_name == "alice.vasp.test"


def test_cache_is_bounded() -> None:
    directory = MemoryDirectory(record_for("alice"), record_for("bob"), record_for("charlie"))
    auth = PeerAuthenticator(ChainVerifier(pool()), directory, max_entries=2)
    for name in ("alice", "bob", "charlie"):
        auth.authenticate_pem(pem(name))
    assert auth.cached_decisions() == 2


def test_decision_logged_without_key_material(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trisa_peer.handshake")
    auth = authenticator(MemoryDirectory(record_for("alice")))
    auth.authenticate_pem(pem("alice"))
    with pytest.raises(PeerNotRegisteredError):
        auth.authenticate_pem(pem("mallory"))
    lines = [r.getMessage() for r in caplog.records]
    assert any("peer=alice.vasp.test" in m and "outcome=accept" in m for m in lines)
    assert any("peer=mallory.vasp.test" in m and "outcome=reject" in m and "step=4" in m
               for m in lines)
    assert not any("PRIVATE KEY" in m or "BEGIN CERTIFICATE" in m for m in lines)


# -------------------------------------------------------------------- client side


def resolver(directory: MemoryDirectory) -> PeerResolver:
    resolve = {"bob.vasp.test:443": "127.0.0.1:9"}
    return PeerResolver(ChainVerifier(pool()), directory, resolve=resolve)


def test_plan_pins_the_registered_leaf() -> None:
    trace = HandshakeTrace()
    plan = resolver(MemoryDirectory(record_for("bob"))).plan("bob.vasp.test", trace=trace)
    assert plan.pin_pem == identity("bob").leaf.public_bytes(__import__(
        "cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.PEM)
    assert plan.target_name == "bob.vasp.test"
    assert plan.address == "127.0.0.1:9"  # --resolve applied
    assert [r.step for r in trace.records] == [
        HandshakeStep.LOOKUP_PEER, HandshakeStep.VERIFY_SERVER_CHAIN,
        HandshakeStep.BIND_SERVER_RECORD,
    ]


def test_plan_unknown_peer_fails_step_1() -> None:
    with pytest.raises(PeerNotRegisteredError) as err:
        resolver(MemoryDirectory()).plan("bob.vasp.test")
    assert err.value.step == HandshakeStep.LOOKUP_PEER


@pytest.mark.parametrize(
    ("name", "reason"),
    [("expired", "expired"), ("clientauth-only", "eku"), ("weak-rsa1024", "weak-key"),
     ("evil", "unknown-issuer")],
)
def test_plan_registered_leaf_must_pass_step_6(name: str, reason: str) -> None:
    with pytest.raises(ChainVerificationError) as err:
        resolver(MemoryDirectory(record_for(name))).plan(identity(name).common_name)
    assert err.value.step == HandshakeStep.VERIFY_SERVER_CHAIN
    assert err.value.reason == reason


def test_plan_endpoint_host_must_match_certificate() -> None:
    record = record_for("bob", endpoint="bob.other.test:443")
    with pytest.raises(ChainVerificationError) as err:
        resolver(MemoryDirectory(record)).plan("bob.vasp.test")
    assert err.value.reason == "san-mismatch"
    # SAN naming the host but CN different from it: refused at step 7.
    san = record_for("san-mismatch", endpoint="other.vasp.test:443")
    with pytest.raises(DirectoryMismatchError) as mismatch:
        resolver(MemoryDirectory(san)).plan("sanmismatch.vasp.test")
    assert mismatch.value.step == HandshakeStep.BIND_SERVER_RECORD
    assert mismatch.value.reason == "endpoint-mismatch"


def test_plan_revoked_record_fails_step_7() -> None:
    with pytest.raises(RevokedError) as err:
        resolver(MemoryDirectory(record_for("bob", identity_revoked=True))).plan("bob.vasp.test")
    assert err.value.step == HandshakeStep.BIND_SERVER_RECORD


def test_bind_requires_a_certificate_on_record() -> None:
    record = replace(record_for("bob"), identity_certificate=None)
    with pytest.raises(DirectoryMismatchError, match="holds no identity certificate"):
        bind(identity("bob").leaf, record, step=HandshakeStep.BIND_SERVER_RECORD)


# ------------------------------------------------------------- review fixes


def test_decision_made_across_a_rotation_is_not_cached() -> None:
    class Rotating(MemoryDirectory):
        auth: PeerAuthenticator | None = None

        def lookup(self, **kw: object) -> object:  # type: ignore[override]
            if self.auth is not None:
                self.auth.forget()  # the trust pool / CRL changes mid-decision
            return super().lookup(**kw)  # type: ignore[arg-type]

    directory = Rotating(record_for("alice"))
    auth = authenticator(directory)
    directory.auth = auth
    auth.authenticate_pem(pem("alice"))
    directory.auth = None
    auth.authenticate_pem(pem("alice"))
    assert len(directory.calls) == 2  # decided again: the first decision was not kept
    auth.authenticate_pem(pem("alice"))
    assert len(directory.calls) == 2  # the twin: an undisturbed decision is cached


def test_refresh_hook_runs_at_most_every_interval() -> None:
    clock = Clock()
    calls: list[float] = []
    auth = PeerAuthenticator(ChainVerifier(pool()), MemoryDirectory(record_for("alice")),
                             monotonic=clock, refresh=lambda: calls.append(clock.now),
                             refresh_interval=5)
    for _ in range(10):
        auth.authenticate_pem(pem("alice"))
    clock.now += 6
    auth.authenticate_pem(pem("alice"))
    assert len(calls) == 2


def test_cached_rejection_is_raised_as_a_fresh_exception() -> None:
    auth = authenticator(MemoryDirectory())
    seen = []
    for _ in range(3):
        try:
            auth.authenticate_pem(pem("mallory"))
        except PeerNotRegisteredError as exc:
            seen.append(exc)
    assert len({id(e) for e in seen}) == 3
    assert seen[1].step == seen[2].step and str(seen[1]) == str(seen[2])
    depth = 0
    tb = seen[2].__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    assert depth < 10  # does not accumulate one frame per call


def test_lookup_of_an_empty_common_name_is_refused_cleanly() -> None:
    directory = MemoryDirectory(record_for("alice"))
    with pytest.raises(PeerNotRegisteredError) as err:
        lookup_peer(directory, "", step=HandshakeStep.BIND_CLIENT_RECORD)
    assert err.value.reason == "no-common-name"
    assert directory.calls == []  # never sent to the directory
    assert lookup_peer(directory, "alice.vasp.test", step=HandshakeStep.BIND_CLIENT_RECORD)


def test_malformed_record_endpoint_is_a_mismatch_not_a_crash() -> None:
    record = replace(record_for("alice"), endpoint="no-port-here")
    auth = authenticator(MemoryDirectory(record))
    with pytest.raises(DirectoryMismatchError) as err:
        auth.authenticate_pem(pem("alice"))
    assert err.value.reason == "invalid-record"
