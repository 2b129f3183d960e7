"""Issue 11 section 5: a directory outage, both sides alike, within a grace that cannot be
abused. A real directory server on loopback is stopped and restarted on the same port;
time past the decision TTL is an injected monotonic clock (``OutageNet.clock``).

Decision TTL 60 s, grace 30 s: a peer is trusted without the directory until 90 s after
the directory's last positive answer for it, on the server side (Bob deciding Alice)
and on the client side (Alice's cached channel to Bob).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from helpers import PKI
from outage_net import OutageNet, payload, probe
from pki import identity, pool

from trisa_peer.ca import CertificateAuthority
from trisa_peer.directory.issuance import revoke
from trisa_peer.errors import HandshakeError
from trisa_peer.steps import Reason
from trisa_peer.verify import CrlChecker

pytestmark = pytest.mark.slow

OK, UNAVAILABLE, DENIED = (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE,
                           grpc.StatusCode.PERMISSION_DENIED)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[OutageNet]:
    n = OutageNet(tmp_path)
    yield n
    n.close()


def test_known_peer_served_under_grace_on_both_sides(
        net: OutageNet, caplog: pytest.LogCaptureFixture) -> None:
    bob = net.node("bob", grace=30)
    alice = net.node("alice", grace=30)
    net.node("charlie", grace=30, start=False)  # registered, never talked to Bob
    assert alice.send("bob.vasp.test", payload()).state == "accepted"
    net.stop_directory()
    net.clock.now += 70  # past the TTL (60), within the grace (30)
    with caplog.at_level(logging.INFO, logger="trisa_peer"):
        assert alice.send("bob.vasp.test", payload()).state == "accepted"
    assert bob.server.authenticator.counts[Reason.ACCEPTED_UNDER_GRACE] >= 1
    assert alice.connector.counts[Reason.ACCEPTED_UNDER_GRACE] >= 1
    lines = [r.getMessage() for r in caplog.records if "accepted-under-grace" in r.getMessage()]
    assert any("peer=alice.vasp.test" in line and "outcome=accept" in line for line in lines)
    assert any("peer=bob.vasp.test" in line for line in lines)
    # twin: an unknown peer stays refused, fail closed
    assert probe("charlie", bob) == UNAVAILABLE
    # twin: past the grace (TTL + grace = 90 s after the last answer) -> refused, both sides
    net.clock.now += 25
    assert probe("alice", bob) == UNAVAILABLE
    with pytest.raises(HandshakeError) as err:
        alice.connect("bob.vasp.test")
    assert err.value.reason == Reason.DIRECTORY_UNAVAILABLE
    # recovery: the directory returns; within about a second both sides work again
    net.start_directory()
    started = time.monotonic()
    while probe("alice", bob) != OK and time.monotonic() - started < 10:
        time.sleep(0.05)
        net.clock.now += 0.05  # the injected clock follows real time here
    recovered = time.monotonic() - started
    assert probe("alice", bob) == OK and recovered < 3, recovered
    assert alice.send("bob.vasp.test", payload()).state == "accepted"


def test_grace_zero_refuses_right_after_the_ttl(net: OutageNet) -> None:
    bob = net.node("bob", grace=0)
    alice = net.node("alice", grace=0)
    assert alice.send("bob.vasp.test", payload()).state == "accepted"
    net.stop_directory()
    net.clock.now += 50  # twin: within the TTL, served from the cached decision
    assert probe("alice", bob) == OK
    net.clock.now += 11
    assert probe("alice", bob) == UNAVAILABLE
    assert bob.server.authenticator.counts[Reason.ACCEPTED_UNDER_GRACE] == 0


def test_directory_answer_revoked_ends_the_grace_at_once(net: OutageNet) -> None:
    bob = net.node("bob", grace=30)
    alice = net.node("alice", grace=30)
    assert alice.send("bob.vasp.test", payload()).state == "accepted"
    revoke(net.directory, net.ids["alice.vasp.test"], "key compromise")
    net.clock.now += 61  # Bob's decision expired; the directory answers "revoked"
    assert probe("alice", bob) == DENIED
    net.stop_directory()  # and a later outage grants no grace any more
    net.clock.now += 6  # past the negative cache
    assert probe("alice", bob) == UNAVAILABLE
    assert bob.server.authenticator.counts[Reason.ACCEPTED_UNDER_GRACE] == 0


def test_client_side_directory_answer_revoked_drops_the_channel(net: OutageNet) -> None:
    net.node("bob", grace=30)
    alice = net.node("alice", grace=30)
    assert alice.send("bob.vasp.test", payload()).state == "accepted"
    revoke(net.directory, net.ids["bob.vasp.test"], "key compromise")
    net.clock.now += 61  # the channel is re-checked: revoked, refused within the grace
    with pytest.raises(HandshakeError) as err:
        alice.send("bob.vasp.test", payload())
    assert err.value.reason != Reason.DIRECTORY_UNAVAILABLE
    assert alice.connector.counts[Reason.ACCEPTED_UNDER_GRACE] == 0


def test_crl_still_applies_during_the_grace(net: OutageNet, tmp_path: Path) -> None:
    bob = net.node("bob", grace=30)
    net.node("alice", grace=30, start=False)
    assert probe("alice", bob) == OK
    net.stop_directory()
    net.clock.now += 61
    assert probe("alice", bob) == OK  # twin: under grace
    # a CRL naming Alice's serial arrives: step 3 refuses her although the grace lasts
    shutil.copytree(PKI / "ca", tmp_path / "ca")
    ca = CertificateAuthority.open(tmp_path / "ca")
    ca.revoke(identity("alice").leaf.serial_number, "keyCompromise")
    bob.server.verifier.update(pool(), CrlChecker((ca.crl(),)))
    bob.server.authenticator.forget()
    assert probe("alice", bob) == DENIED
    assert bob.server.authenticator.counts[Reason.CRL_REVOKED] == 1
