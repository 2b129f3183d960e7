"""The grace of issue 11 section 5 in the pure core (PeerAuthenticator over an in-memory
directory, injected clock): what it counts from, and that nothing else extends it."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from outage_net import FakeClock
from pki import MemoryDirectory, identity, pool, record_for

from trisa_peer.authenticate import PeerAuthenticator
from trisa_peer.controls import PeerControls
from trisa_peer.errors import HandshakeError
from trisa_peer.records import PeerRecord
from trisa_peer.steps import Reason
from trisa_peer.verify import ChainVerifier

TTL, GRACE = 60.0, 30.0


def make(directory: MemoryDirectory, clock: FakeClock, **kw: object) -> PeerAuthenticator:
    return PeerAuthenticator(ChainVerifier(pool()), directory, decision_ttl=TTL,
                             controls=PeerControls(grace=GRACE, monotonic=clock, **kw))  # type: ignore[arg-type]


def alice() -> bytes:
    return identity("alice").chain_pem()


def test_grace_counts_from_the_last_positive_answer_and_is_not_extended() -> None:
    directory, clock = MemoryDirectory(record_for("alice")), FakeClock()
    auth = make(directory, clock)
    auth.authenticate_pem(alice())
    directory.down = True
    clock.now += TTL + 1
    assert auth.authenticate_pem(alice()).common_name == "alice.vasp.test"  # under grace
    clock.now += GRACE - 2  # repeated failures during the grace do not extend it
    assert auth.authenticate_pem(alice()).common_name == "alice.vasp.test"
    clock.now += 1.01  # TTL + grace after the answer
    with pytest.raises(HandshakeError) as err:
        auth.authenticate_pem(alice())
    assert err.value.reason == Reason.DIRECTORY_UNAVAILABLE
    assert auth.counts[Reason.ACCEPTED_UNDER_GRACE] == 2


def test_grace_is_not_shared_with_another_instance() -> None:
    directory, clock = MemoryDirectory(record_for("alice")), FakeClock()
    make(directory, clock).authenticate_pem(alice())
    directory.down = True
    with pytest.raises(HandshakeError):  # a new process knows nothing of the first one
        make(directory, clock).authenticate_pem(alice())


def test_an_answer_from_a_cache_counts_from_when_the_directory_gave_it() -> None:
    old = datetime.now(UTC) - timedelta(seconds=20)
    record = replace(record_for("alice"), fetched_at=old)
    directory, clock = MemoryDirectory(record), FakeClock()
    auth = make(directory, clock)
    auth.authenticate_pem(alice())
    directory.down = True
    clock.now += TTL + GRACE - 21  # twin: still within TTL + grace of the real answer
    assert auth.authenticate_pem(alice()).common_name == "alice.vasp.test"
    clock.now += 2  # TTL + grace - 19 s after our look-up, but past it from the answer
    with pytest.raises(HandshakeError):
        auth.authenticate_pem(alice())


class HeldDirectory(MemoryDirectory):
    """Look-ups of ``held`` names block until released (a directory that hangs)."""

    def __init__(self, *records: PeerRecord) -> None:
        super().__init__(*records)
        self.held: set[str] = set()
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def lookup(self, *, common_name: str | None = None, vasp_id: str | None = None,
               fresh: bool = False) -> PeerRecord:
        if common_name in self.held:
            self.entered.release()
            self.release.wait(10)
        return super().lookup(common_name=common_name, vasp_id=vasp_id, fresh=fresh)


def test_over_the_bound_a_known_peer_gets_its_grace_an_unknown_one_is_refused() -> None:
    directory = HeldDirectory(record_for("alice"), record_for("bob"), record_for("charlie"))
    clock = FakeClock()
    auth = make(directory, clock, max_lookups=1)
    auth.authenticate_pem(alice())
    clock.now += TTL + 1
    directory.held.add("bob.vasp.test")
    hung = threading.Thread(target=lambda: auth.authenticate_pem(identity("bob").chain_pem()))
    hung.start()
    assert directory.entered.acquire(timeout=5)  # the one slot is held
    try:
        with pytest.raises(HandshakeError) as err:
            auth.authenticate_pem(identity("charlie").chain_pem())
        assert err.value.reason == Reason.DIRECTORY_BUSY
        assert auth.authenticate_pem(alice()).common_name == "alice.vasp.test"  # grace
    finally:
        directory.release.set()
        hung.join(5)
    clock.now += 1  # twin: with the slot free again, Charlie is decided normally
    assert auth.authenticate_pem(identity("charlie").chain_pem()).common_name == (
        "charlie.vasp.test")
