"""Issue 11 section 8b: operator controls. Per-peer limits (requests/s, in flight) and
the local deny-list (by common name or SHA-256 fingerprint, reloadable). Unit tests of
the pure parts first, then over real mTLS on loopback (slow). Every refusal has an
accepted twin."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from helpers import PKI, CliResult
from outage_net import FakeClock, OutageNet, probe
from pki import MemoryDirectory, identity, pool, record_for

from trisa_peer.authenticate import PeerAuthenticator
from trisa_peer.controls import PeerControls
from trisa_peer.denylist import DenyList, parse_deny_list
from trisa_peer.errors import ConfigurationError, HandshakeError
from trisa_peer.peerlimits import PeerLimiter
from trisa_peer.steps import HandshakeStep, Reason
from trisa_peer.transport.status import status_for
from trisa_peer.verify import ChainVerifier

# ------------------------------------------------------------------ per-peer limits


def test_rate_limit_refuses_over_the_rate_and_admits_after_refill() -> None:
    clock = FakeClock()
    limits = PeerLimiter(rate=2, burst=2, monotonic=clock)
    limits.admit("alice")()
    limits.admit("alice")()
    with pytest.raises(HandshakeError) as err:
        limits.admit("alice")
    assert err.value.reason == Reason.RATE_LIMITED and err.value.step == HandshakeStep.EXCHANGE
    assert status_for(err.value) == grpc.StatusCode.RESOURCE_EXHAUSTED  # retryable
    limits.admit("bob")()  # twin: another peer has its own bucket
    clock.now += 0.5  # twin: one token back
    limits.admit("alice")()


def test_concurrency_limit_counts_calls_in_flight() -> None:
    limits = PeerLimiter(concurrent=2)
    first, second = limits.admit("alice"), limits.admit("alice")
    with pytest.raises(HandshakeError) as err:
        limits.admit("alice")
    assert err.value.reason == Reason.TOO_MANY_CONCURRENT
    assert status_for(err.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    first()
    first()  # releasing twice counts once
    limits.admit("alice")  # twin: a slot is free again
    with pytest.raises(HandshakeError):
        limits.admit("alice")
    second()


def test_limiter_memory_is_bounded() -> None:
    limits = PeerLimiter(rate=1, max_peers=100)
    for i in range(1000):
        limits.admit(f"peer{i}")()
    assert len(limits) == 100


def test_new_reasons_map_to_their_status() -> None:
    busy = HandshakeError("x", step=HandshakeStep.BIND_CLIENT_RECORD, reason=Reason.DIRECTORY_BUSY)
    denied = HandshakeError("x", step=HandshakeStep.BIND_CLIENT_RECORD, reason=Reason.DENIED)
    assert status_for(busy) == grpc.StatusCode.UNAVAILABLE
    assert status_for(denied) == grpc.StatusCode.PERMISSION_DENIED


def test_controls_refuse_bad_values() -> None:
    for bad in ({"grace": -1}, {"max_lookups": 0}, {"rate": -1}, {"concurrent": -2}):
        with pytest.raises(ConfigurationError):
            PeerControls(**bad)  # type: ignore[arg-type]
    PeerControls(grace=0)  # twin: 0 is allowed (no grace)


# ------------------------------------------------------------------ the deny-list

ALICE_FP = identity("alice").fingerprint


def test_deny_list_parses_names_and_fingerprints() -> None:
    colons = ":".join(ALICE_FP[i:i + 2] for i in range(0, 64, 2)).upper()
    rules = parse_deny_list(f"# comment\nMallory.VASP.test  # why\n\nsha256:{colons}\n")
    assert rules.names == {"mallory.vasp.test"} and rules.fingerprints == {ALICE_FP}
    with pytest.raises(ConfigurationError, match=r"deny-list:2: not a common name"):
        parse_deny_list("ok.vasp.test\nnot a name!\n")


def write(path: Path, text: str, bump: int) -> None:
    path.write_text(text)
    stamp = 1_700_000_000 + bump  # a distinct mtime whatever the file system's resolution
    os.utime(path, (stamp, stamp))


def test_deny_list_reloads_on_change_at_most_every_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "deny.txt"
    write(path, "", 0)
    deny = DenyList(path, check_interval=2.0, monotonic=clock)
    assert deny.match("alice.vasp.test", "") is None
    write(path, "alice.vasp.test\n", 1)
    clock.now += 1  # not yet re-checked
    assert deny.match("alice.vasp.test", "") is None
    clock.now += 1.5
    assert deny.match("ALICE.vasp.test", "") == "alice.vasp.test"
    assert deny.match("bob.vasp.test", "") is None  # twin
    write(path, "broken line !\n", 2)  # a bad edit keeps the previous list in force
    clock.now += 3
    assert deny.match("alice.vasp.test", "") == "alice.vasp.test"
    write(path, "", 3)
    assert deny.reload() and deny.match("alice.vasp.test", "") is None  # SIGHUP path
    with pytest.raises(ConfigurationError, match="cannot read the deny-list"):
        DenyList(tmp_path / "missing.txt")


def test_deny_list_refuses_a_cached_acceptance(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "deny.txt"
    write(path, "", 0)
    auth = PeerAuthenticator(
        ChainVerifier(pool()), MemoryDirectory(record_for("alice"), record_for("bob")),
        controls=PeerControls(deny_list=path, deny_check_interval=1.0, monotonic=clock))
    alice, bob = identity("alice").chain_pem(), identity("bob").chain_pem()
    assert auth.authenticate_pem(alice).common_name == "alice.vasp.test"
    write(path, f"sha256:{ALICE_FP}\n", 1)
    clock.now += 1
    with pytest.raises(HandshakeError) as err:  # cached acceptance, refused at once
        auth.authenticate_pem(alice)
    assert err.value.reason == Reason.DENIED
    assert status_for(err.value) == grpc.StatusCode.PERMISSION_DENIED
    assert auth.authenticate_pem(bob).common_name == "bob.vasp.test"  # twin
    write(path, "bob.vasp.test\n", 2)
    clock.now += 1
    assert auth.authenticate_pem(alice).common_name == "alice.vasp.test"  # lifted again
    with pytest.raises(HandshakeError):
        auth.authenticate_pem(bob)
    assert auth.counts[Reason.DENIED] == 2


# ------------------------------------------------------- over real mTLS (slow lane)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[OutageNet]:
    n = OutageNet(tmp_path)
    yield n
    n.close()


@pytest.mark.slow
def test_per_peer_rate_limit_over_mtls(net: OutageNet) -> None:
    bob = net.node("bob", rate=1, burst=1)
    net.node("alice", start=False)
    net.node("charlie", start=False)
    assert probe("alice", bob) == grpc.StatusCode.OK
    assert probe("alice", bob) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert probe("charlie", bob) == grpc.StatusCode.OK  # twin: per peer


@pytest.mark.slow
def test_deny_list_over_mtls_and_on_the_client_side(net: OutageNet, tmp_path: Path) -> None:
    path = tmp_path / "deny.txt"
    path.write_text("")
    bob = net.node("bob", deny_list=path)
    alice = net.node("alice", deny_list=path)
    net.node("charlie", start=False)
    assert probe("alice", bob) == grpc.StatusCode.OK
    alice.connect("bob.vasp.test")
    path.write_text("alice.vasp.test\nbob.vasp.test\n")
    assert bob.server.authenticator.deny is not None and bob.server.authenticator.deny.reload()
    assert alice.connector.deny is not None and alice.connector.deny.reload()
    assert probe("alice", bob) == grpc.StatusCode.PERMISSION_DENIED
    assert probe("charlie", bob) == grpc.StatusCode.OK  # twin
    with pytest.raises(HandshakeError) as err:  # Alice no longer sends to Bob either
        alice.connect("bob.vasp.test")
    assert err.value.reason == Reason.DENIED


def test_serve_control_options_refuse_bad_values(
        trisa_peer_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    base = ["serve", "--listen", "127.0.0.1:0", "--cert", str(PKI / "bob.pem"), "--key",
            str(PKI / "bob.key"), "--trust", str(PKI / "trust.pem"), "--directory",
            "127.0.0.1:1", "--directory-insecure"]
    out = trisa_peer_cli(*base, "--deny-list", str(tmp_path / "missing.txt"))
    assert out.returncode == 1 and "cannot read the deny-list" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    for option, bad in (("--grace", "-1"), ("--peer-rate", "nan"), ("--peer-burst", "-2"),
                        ("--peer-concurrency", "1.5"), ("--max-directory-lookups", "0")):
        out = trisa_peer_cli(*base, option, bad)  # a usage error: exit 2, one line
        assert out.returncode == 2, (option, out)
        assert option in out.stderr and "Traceback" not in out.stderr, option
