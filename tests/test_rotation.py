"""Issue 14 section 2: a reissue rolls out with zero failed transfers; a compromise is
refused on both sides within the stated bound (docs/rotation.md).

Core tests use the fixture PKI and an in-memory directory with an injected clock; the
network tests use the simulated network (real directory, real Sectigo-compatible
issuance, real TLS on 127.0.0.1) with the grace and TTLs shortened by parameters.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import PKI
from pki import MemoryDirectory, identity, pool, record_for

from trisa_peer._pb.trisa.api.v1beta1 import api_pb2
from trisa_peer.authenticate import PeerAuthenticator
from trisa_peer.binding import bind
from trisa_peer.certs import certs_to_pem, fingerprint
from trisa_peer.controls import PeerControls
from trisa_peer.directory.client import DirectoryClient
from trisa_peer.directory.convert import certificate_proto
from trisa_peer.directory.grace import (
    GRACE_UNTIL_METADATA,
    SUPERSEDED_METADATA,
    parse_grace,
    superseded_from_metadata,
    superseded_in_grace,
)
from trisa_peer.directory.issuance import reissue
from trisa_peer.errors import (
    DirectoryError,
    DirectoryMismatchError,
    HandshakeError,
    RevokedError,
    TrisaPeerError,
)
from trisa_peer.network.node import TrisaNode
from trisa_peer.network.store import TransferStore
from trisa_peer.records import SupersededCertificate
from trisa_peer.resolve import PeerResolver
from trisa_peer.steps import HandshakeStep, Reason
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.network import SimulatedNetwork
from trisa_peer.testing.policies import originator_payload
from trisa_peer.trace import HandshakeTrace
from trisa_peer.transport.identity import FileMaterial
from trisa_peer.verify import ChainVerifier

STEP = HandshakeStep.BIND_CLIENT_RECORD
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def reissued_record(until: datetime) -> Any:
    """Bob's record after a planned reissue: bob-reissued current, bob superseded."""
    old = identity("bob")
    return replace(record_for("bob-reissued"),
                   superseded=SupersededCertificate(old.leaf, old.chain, until))


# ---------------------------------------------------------------- binding (pure)


def test_the_superseded_certificate_binds_within_its_grace() -> None:
    record = reissued_record(T0 + timedelta(hours=24))
    match = bind(identity("bob").leaf, record, step=STEP, now=T0)
    assert match.superseded and match.describe() == "superseded, grace until 2026-06-02T12:00:00Z"
    assert bind(identity("bob-reissued").leaf, record, step=STEP, now=T0).describe() == "current"


def test_the_superseded_certificate_is_refused_once_its_grace_ended() -> None:
    record = reissued_record(T0 + timedelta(hours=24))
    with pytest.raises(DirectoryMismatchError, match="superseded and its grace ended at "
                       "2026-06-02T12:00:00Z") as info:
        bind(identity("bob").leaf, record, step=STEP, now=T0 + timedelta(hours=24))
    assert info.value.reason == Reason.CERTIFICATE_MISMATCH


def test_a_revoked_record_refuses_the_superseded_certificate_too() -> None:
    record = replace(reissued_record(T0 + timedelta(hours=24)), identity_revoked=True)
    with pytest.raises(RevokedError):
        bind(identity("bob").leaf, record, step=STEP, now=T0)


def test_another_certificate_is_no_superseded_one() -> None:
    record = reissued_record(T0 + timedelta(hours=24))
    with pytest.raises(DirectoryMismatchError, match="is not the one registered"):
        bind(identity("evil-bob").leaf, record, step=STEP, now=T0)


# ---------------------------------------------------------- both sides (pure core)


class Mono:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_server_side_accepts_the_superseded_leaf_and_its_trace_says_so() -> None:
    wall = [datetime.now(UTC)]
    directory = MemoryDirectory(reissued_record(wall[0] + timedelta(seconds=30)))
    mono = Mono()
    auth = PeerAuthenticator(ChainVerifier(pool(), clock=lambda: wall[0]), directory,
                             decision_ttl=300, monotonic=mono,
                             controls=PeerControls(monotonic=mono))
    trace = HandshakeTrace()
    peer = auth.authenticate(identity("bob").leaf, identity("bob").chain, trace=trace)
    assert peer.fingerprint == fingerprint(identity("bob").leaf)
    bound = [r.detail for r in trace.records if r.step == STEP]
    assert "(certificate superseded, grace until " in bound[0]
    # cached decision: it holds until the end of the grace (30 s), not the TTL (300 s)
    old_pem = identity("bob").chain_pem()
    auth.authenticate_pem(old_pem)
    mono.now += 29
    auth.authenticate_pem(old_pem)
    mono.now += 2
    wall[0] += timedelta(seconds=31)
    with pytest.raises(DirectoryMismatchError, match="grace ended"):
        auth.authenticate_pem(old_pem)
    # the twin: the current certificate is still accepted at that time
    assert auth.authenticate_pem(identity("bob-reissued").chain_pem()).common_name == (
        "bob.vasp.test")


def test_a_directory_outage_does_not_extend_the_reissue_grace() -> None:
    wall = [datetime.now(UTC)]
    directory = MemoryDirectory(reissued_record(wall[0] + timedelta(seconds=30)))
    mono = Mono()
    auth = PeerAuthenticator(ChainVerifier(pool(), clock=lambda: wall[0]), directory,
                             decision_ttl=10, monotonic=mono,
                             controls=PeerControls(grace=300, monotonic=mono))
    old_pem, new_pem = identity("bob").chain_pem(), identity("bob-reissued").chain_pem()
    auth.authenticate_pem(old_pem)
    auth.authenticate_pem(new_pem)
    directory.down = True
    mono.now += 20  # past the decision TTL: the outage grace applies to both
    wall[0] += timedelta(seconds=20)
    auth.authenticate_pem(old_pem)
    mono.now += 11  # past the reissue grace (30 s), well within the outage grace
    wall[0] += timedelta(seconds=11)
    with pytest.raises(HandshakeError) as info:
        auth.authenticate_pem(old_pem)
    assert info.value.reason == Reason.DIRECTORY_UNAVAILABLE
    # the twin: the current certificate is still kept under the outage grace
    assert auth.authenticate_pem(new_pem).common_name == "bob.vasp.test"
    assert auth.counts[Reason.ACCEPTED_UNDER_GRACE] >= 2


def test_client_side_pins_both_during_the_grace_and_the_current_one_after() -> None:
    wall = [datetime.now(UTC)]
    until = wall[0] + timedelta(seconds=30)
    directory = MemoryDirectory(reissued_record(until))
    resolver = PeerResolver(ChainVerifier(pool(), clock=lambda: wall[0]), directory)
    trace = HandshakeTrace()
    plan = resolver.plan("bob.vasp.test", trace=trace)
    assert plan.pin_pem == certs_to_pem([identity("bob-reissued").leaf, identity("bob").leaf])
    assert plan.pin_until == until
    assert any("superseded, grace until" in r.detail for r in trace.records)
    wall[0] = until
    after = resolver.plan("bob.vasp.test")
    assert after.pin_pem == certs_to_pem([identity("bob-reissued").leaf])
    assert after.pin_until is None


# ------------------------------------------------------------- wire headers


def _headers(until: str) -> list[tuple[str, str | bytes]]:
    old = identity("bob")
    proto = certificate_proto(old.leaf, tuple(old.chain))
    return [(SUPERSEDED_METADATA, proto.SerializeToString()), (GRACE_UNTIL_METADATA, until)]


def test_the_grace_headers_carry_the_superseded_certificate() -> None:
    found = superseded_from_metadata(_headers("2026-06-02T12:00:00+00:00"), source="t")
    assert found is not None and found.grace_until == T0 + timedelta(hours=24)
    assert fingerprint(found.certificate) == fingerprint(identity("bob").leaf)
    assert superseded_from_metadata([("other", "x")], source="t") is None


def test_unreadable_grace_headers_fail_closed() -> None:
    with pytest.raises(DirectoryError, match="unreadable superseded certificate"):
        superseded_from_metadata(_headers("tomorrow"), source="t")


@pytest.mark.parametrize(("text", "seconds"), [("24h", 86400), ("90m", 5400), ("0", 0),
                                               ("2d", 172800), ("1.5s", 1.5)])
def test_grace_durations(text: str, seconds: float) -> None:
    assert parse_grace(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["-1h", "soon", "", "infh"])
def test_grace_durations_refused(text: str) -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        parse_grace(text)


# ------------------------------------------------------------ simulated network

GRACE = 6.0  # seconds of reissue grace in the network tests
TTL = 1.0  # decision TTL, channel re-check and directory cache, seconds
RATE = 5.0  # transfers per second in each direction


@pytest.fixture(scope="module")
def net() -> Iterator[SimulatedNetwork]:
    with SimulatedNetwork(key_size=2048, async_delay=0.05) as network:
        yield network


def _wait(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Wait for ``condition`` (a safety limit only; no speed is asserted)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class Pair:
    """Alice and Bob rebuilt from the simulated network's identities with short TTLs;
    Bob's identity comes from files (FileMaterial), swapped and polled like a node."""

    def __init__(self, net: SimulatedNetwork, tmp: Path, *, alice_directory: str = "",
                 alice_crl: Path | None = None, alice_controls: PeerControls | None = None,
                 directory_timeout: float = 5.0) -> None:
        self.net = net
        trust = tmp / "trust.pem"
        trust.write_bytes(certs_to_pem([net.ca.root, net.ca.issuing]))
        self.files: dict[str, tuple[Path, Path]] = {}
        self.nodes: dict[str, TrisaNode] = {}
        for name in ("alice", "bob"):
            sim = net.nodes[name]
            sim.node.stop(grace=0)
            cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
            self.files[name] = (cert, key)
            self.install(name, sim.identity.chain_pem(), sim.identity.key_pem(), poll=False)
            alice = name == "alice"
            crl = [alice_crl] if alice and alice_crl is not None else []
            material = FileMaterial(cert, key, [trust], crl=crl)
            endpoint = (alice_directory if alice else "") or net.directory_endpoint
            directory = DirectoryClient(endpoint, insecure=True, timeout=directory_timeout,
                                        cache_ttl=TTL)
            node = TrisaNode(material, directory, store=TransferStore(tmp / f"{name}.db"),
                             handler=net.handler_factory(sim.common_name),
                             listen=f"127.0.0.1:{sim.port}", resolve=net.resolve, timeout=10,
                             decision_ttl=TTL, max_workers=8,
                             controls=alice_controls if alice else None)
            node.connector.channel_ttl = TTL
            assert node.server.interceptor is not None
            node.server.interceptor.streams.interval = 0.2
            node.start()
            self.nodes[name] = node
        self.cn = {n: net.nodes[n].common_name for n in ("alice", "bob")}

    def install(self, name: str, chain: bytes, key: bytes, *, poll: bool = True) -> None:
        cert_path, key_path = self.files[name]
        key_path.write_bytes(key)
        key_path.chmod(0o600)
        cert_path.write_bytes(chain)
        if poll:
            material = self.nodes[name].material
            assert isinstance(material, FileMaterial)
            material.poll()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop(grace=0)
            node.directory.close()  # type: ignore[attr-defined]


def _payload(sender: str, receiver: str) -> api_pb2.Payload:
    return originator_payload(BOOK.wallets_of(sender)[1], BOOK.wallets_of(receiver)[0],
                              sent_at=datetime.now(UTC))


class Traffic:
    """One thread per direction sending ``RATE`` transfers a second; every outcome is
    counted per phase, and every channel retry inside ``send`` too."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.phase = "before"
        self.ok: Counter[tuple[str, str]] = Counter()
        self.failed: list[tuple[str, str, str]] = []
        self.retried: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(a, b), daemon=True)
                         for a, b in (("alice", "bob"), ("bob", "alice"))]
        for name in ("alice", "bob"):
            self._count_retries(name)

    def _count_retries(self, name: str) -> None:
        node = self.pair.nodes[name]
        inner = node._transfer

        def counted(*args: Any, **kw: Any) -> Any:
            try:
                return inner(*args, **kw)
            except TrisaPeerError:
                self.retried.append((name, self.phase))  # send retries a broken channel
                raise
        node._transfer = counted  # type: ignore[method-assign]

    def _run(self, sender: str, receiver: str) -> None:
        node, peer = self.pair.nodes[sender], self.pair.cn[receiver]
        scn = self.pair.cn[sender]
        while not self._stop.is_set():
            start = time.monotonic()
            phase = self.phase
            try:
                result = node.send(peer, _payload(scn, peer))
                if result.state == "accepted":
                    self.ok[(sender, phase)] += 1
                else:
                    self.failed.append((sender, phase, f"state {result.state}"))
            except TrisaPeerError as exc:
                self.failed.append((sender, phase, str(exc)))
            self._stop.wait(max(0.0, 1 / RATE - (time.monotonic() - start)))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def run_phase(self, phase: str, minimum: int = 3) -> None:
        """Enter ``phase``; return once both directions completed ``minimum`` in it."""
        self.phase = phase
        _wait(lambda: min(self.ok[("alice", phase)], self.ok[("bob", phase)]) >= minimum
              or bool(self.failed), f"transfers in phase {phase}")


def _presented(node: TrisaNode, cn: str) -> str:
    """What a ``check`` trace says about the certificate the peer presented."""
    trace = HandshakeTrace()
    node.connector.connect(cn, trace=trace)
    return next(r.detail for r in trace.records if r.step == HandshakeStep.PRESENT_SERVER_CERT)


def _pin_until(node: TrisaNode, cn: str) -> datetime | None:
    peer = node.connector._channels.get(cn)
    return None if peer is None else peer.plan.pin_until


@pytest.mark.slow
def test_a_reissue_rolls_out_with_zero_failed_transfers(
    net: SimulatedNetwork, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trisa_peer.handshake")
    pair = Pair(net, tmp_path)
    alice, bob = pair.nodes["alice"], pair.nodes["bob"]
    directory, sectigo = net.directory.directory, net.directory.sectigo
    assert sectigo is not None
    old_leaf = net.nodes["bob"].identity.leaf
    try:
        with Traffic(pair) as traffic:
            traffic.run_phase("before")
            # 1. the directory reissues Bob's certificate; Bob still presents the old one
            result = reissue(directory, net.nodes["bob"].vasp_id, sectigo, poll_interval=0.05,
                             grace=timedelta(seconds=GRACE))
            assert result.identity is not None
            grace_end = datetime.now(UTC) + timedelta(seconds=GRACE)
            traffic.phase = "reissued"
            # Alice's channel to Bob re-plans (channel TTL) and pins both certificates;
            # Alice's server decides on Bob's old certificate again (decision TTL) and
            # binds it as the superseded one
            _wait(lambda: _pin_until(alice, pair.cn["bob"]) is not None, "the double pin")
            _wait(lambda: any("certificate superseded, grace until" in r.getMessage()
                              for r in caplog.records), "the server binding the old leaf")
            traffic.run_phase("reissued")
            assert "(superseded, grace until " in _presented(alice, pair.cn["bob"])
            # 2. Bob installs the new certificate: file swap, then the poll (SIGHUP's)
            pair.install("bob", result.identity.chain_pem(), result.identity.key_pem())
            net.nodes["bob"].identity = result.identity  # for the tests that follow
            assert bob.material.current().identity.leaf.serial_number == result.leaf.serial_number
            assert _presented(alice, pair.cn["bob"]).endswith("(current)")  # the twin
            traffic.run_phase("installed")
            # 3. the grace ends: Alice re-pins the current certificate alone
            _wait(lambda: datetime.now(UTC) > grace_end + timedelta(seconds=2 * TTL)
                  and _pin_until(alice, pair.cn["bob"]) is None, "the end of the grace")
            traffic.run_phase("after-grace")
        assert traffic.failed == [] and traffic.retried == []
        phases = ("before", "reissued", "installed", "after-grace")
        assert all(traffic.ok[(side, p)] >= 3 for side in ("alice", "bob") for p in phases)
        # the old certificate is refused now on both sides (the twin of the acceptance)
        auth = alice.server.authenticator
        with pytest.raises(DirectoryMismatchError, match=r"grace ended|is not the one registered"):
            auth.authenticate(old_leaf, net.nodes["bob"].identity.chain)
        plan = alice.resolver.plan(pair.cn["bob"], fresh=True)
        assert plan.pin_pem == certs_to_pem([result.leaf])
        print(f"\nrollout: {dict(traffic.ok)} at {RATE}/s each way; failed 0, retried 0")
    finally:
        pair.stop()


@pytest.mark.slow
def test_without_a_grace_the_same_reissue_refuses_the_node_until_it_installs(
    net: SimulatedNetwork, tmp_path: Path
) -> None:
    """The twin of the rollout: grace 0, and Bob (still on the old certificate) is
    refused by Alice's server once its decision expires."""
    pair = Pair(net, tmp_path)
    alice, bob = pair.nodes["alice"], pair.nodes["bob"]
    directory, sectigo = net.directory.directory, net.directory.sectigo
    assert sectigo is not None
    cn = pair.cn
    try:
        assert bob.send(cn["alice"], _payload(cn["bob"], cn["alice"])).state == "accepted"
        result = reissue(directory, net.nodes["bob"].vasp_id, sectigo, poll_interval=0.05,
                         grace=timedelta(0))
        assert result.identity is not None
        errors: list[TrisaPeerError] = []

        def refused() -> bool:
            try:
                bob.send(cn["alice"], _payload(cn["bob"], cn["alice"]))
            except TrisaPeerError as exc:
                errors.append(exc)
                return True
            return False

        _wait(refused, "alice refusing bob's superseded certificate")
        assert "PERMISSION_DENIED: step 4" in str(errors[0])
        assert "is not the one registered for 'bob.vasp.test'" in str(errors[0])
        pair.install("bob", result.identity.chain_pem(), result.identity.key_pem())
        net.nodes["bob"].identity = result.identity
        bob.connector.reset()
        assert bob.send(cn["alice"], _payload(cn["bob"], cn["alice"])).state == "accepted"
        assert alice.send(cn["bob"], _payload(cn["alice"], cn["bob"])).state == "accepted"
    finally:
        pair.stop()


def _stream(node: TrisaNode, peer: str) -> tuple[Any, threading.Event]:
    """A TransferStream from ``node`` to ``peer``, kept open (one message sent first)."""
    channel = node.connect(peer)
    sent = threading.Event()
    done = threading.Event()

    def requests() -> Iterator[api_pb2.SecureEnvelope]:
        yield api_pb2.SecureEnvelope(id="not-a-transfer")
        sent.set()
        done.wait(120)

    call = channel.network.TransferStream(requests(), timeout=120)
    return call, done


@pytest.mark.slow
def test_a_compromised_certificate_is_refused_on_both_sides_and_its_stream_cut(
    net: SimulatedNetwork, tmp_path: Path
) -> None:
    pair = Pair(net, tmp_path)
    alice, bob = pair.nodes["alice"], pair.nodes["bob"]
    directory, sectigo = net.directory.directory, net.directory.sectigo
    assert sectigo is not None
    vasp_id = net.nodes["bob"].vasp_id
    # the previous test may have reissued Bob: install what the directory holds now
    cn = pair.cn
    try:
        assert bob.send(cn["alice"], _payload(cn["bob"], cn["alice"])).state == "accepted"
        assert alice.send(cn["bob"], _payload(cn["alice"], cn["bob"])).state == "accepted"
        call, release = _stream(bob, cn["alice"])
        first = next(call)  # the stream is open and answered (a BAD_REQUEST envelope)
        assert first.HasField("error")
        ended: list[tuple[float, grpc.RpcError | None]] = []

        def drain() -> None:
            try:
                for _ in call:
                    pass
            except grpc.RpcError as exc:
                ended.append((time.monotonic(), exc))
            else:
                ended.append((time.monotonic(), None))

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        revoked_at = time.monotonic()
        with pytest.raises(TrisaPeerError, match=r"contact verification|contact"):
            reissue(directory, vasp_id, sectigo, compromise=True, poll_interval=0.05)
        assert directory.get(vasp_id).identity_certificate.revoked
        cut: dict[str, float] = {}

        def refused(side: str, attempt: Callable[[], object]) -> bool:
            try:
                attempt()
            except (HandshakeError, TrisaPeerError):
                cut.setdefault(side, time.monotonic() - revoked_at)
                return True
            return False

        # Alice as client: the record is revoked (steps 1/7)
        _wait(lambda: refused("alice dials bob", lambda: alice.send(
            cn["bob"], _payload(cn["alice"], cn["bob"]))), "alice refusing to dial bob")
        # Alice as server: Bob's certificate is refused (step 4), on new calls ...
        _wait(lambda: refused("alice serves bob", lambda: bob.send(
            cn["alice"], _payload(cn["bob"], cn["alice"]))), "alice refusing bob")
        # ... and on the stream Bob opened before the revocation (idle since)
        drainer.join(60)
        release.set()
        assert ended and ended[0][1] is not None, "the open stream was not cut"
        cut["open stream"] = ended[0][0] - revoked_at
        assert ended[0][1].code() == grpc.StatusCode.CANCELLED
        assert alice.server.interceptor is not None
        assert alice.server.interceptor.streams.cut >= 1
        # the twin: Charlie, not compromised, still reaches Alice
        charlie = net.nodes["charlie"]
        assert charlie.send(cn["alice"], _payload(charlie.common_name, cn["alice"])).state == (
            "accepted")
        print(f"\ncompromise: refusal after {', '.join(f'{k} {v:.2f}s' for k, v in cut.items())}"
              f" (decision TTL {TTL}s, directory cache {TTL}s, stream re-check 0.2s)")
    finally:
        pair.stop()


OUTAGE = 5.0  # the outage grace (issue 9/11) in the unreachable-directory test, seconds


@pytest.mark.slow
def test_a_compromise_while_the_directory_is_unreachable(
    net: SimulatedNetwork, tmp_path: Path
) -> None:
    """Alice cannot reach the directory when Bob's certificate is revoked. Until a CRL
    says so she keeps Bob as the outage rules allow (decision TTL + outage grace); once
    the new CRL is loaded she refuses Bob as a server (step 3; Bob's open stream is cut
    too) and as a client (the reload drops her channels, and none is re-made without
    the directory: fail closed)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from trisa_peer.testing.faults import HangingProxy

    directory, sectigo = net.directory.directory, net.directory.sectigo
    assert sectigo is not None
    vasp_id = net.nodes["bob"].vasp_id
    if directory.get(vasp_id).identity_certificate.revoked:  # the compromise test ran
        result = reissue(directory, vasp_id, sectigo, poll_interval=0.05,
                         contact_token=_reissue_token(net, vasp_id))
        assert result.identity is not None
        net.nodes["bob"].identity = result.identity
    ca = net.sectigo.ca
    crl_path = tmp_path / "trisa.crl"
    crl_path.write_bytes(ca.crl().public_bytes(Encoding.PEM))
    proxy = HangingProxy(int(net.directory_endpoint.rsplit(":", 1)[1]))
    controls = PeerControls(grace=OUTAGE, grace_recheck=0.2, max_lookups=8)
    pair = Pair(net, tmp_path, alice_directory=proxy.endpoint, alice_crl=crl_path,
                alice_controls=controls, directory_timeout=0.3)
    alice, bob = pair.nodes["alice"], pair.nodes["bob"]
    cn = pair.cn
    try:
        assert bob.send(cn["alice"], _payload(cn["bob"], cn["alice"])).state == "accepted"
        assert alice.send(cn["bob"], _payload(cn["alice"], cn["bob"])).state == "accepted"
        call, release = _stream(bob, cn["alice"])
        assert next(call).HasField("error")
        ended: list[float] = []

        def drain() -> None:
            with contextlib.suppress(grpc.RpcError):
                for _ in call:
                    pass
            ended.append(time.monotonic())

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        proxy.hang()
        alice.directory.clear_cache()  # type: ignore[attr-defined]
        revoked_at = time.monotonic()
        with pytest.raises(TrisaPeerError, match="contact"):
            reissue(directory, vasp_id, sectigo, compromise=True, poll_interval=0.05)
        # before the CRL: Alice (client) keeps her channel to Bob under the outage rules
        time.sleep(TTL)  # past the channel re-check: the directory is asked and is silent
        assert alice.connect(cn["bob"]).common_name == cn["bob"]
        # ... and as a server, Bob's calls still get in (no answer from the directory)
        assert bob.send(cn["alice"], _payload(cn["bob"], cn["alice"])).state == "accepted"
        # the CA publishes its CRL; Alice's node loads it (what its reload poll does)
        crl_path.write_bytes(ca.crl().public_bytes(Encoding.PEM))
        material = alice.material
        assert isinstance(material, FileMaterial)
        material.poll()
        with pytest.raises(TrisaPeerError, match="PERMISSION_DENIED: step 3") as info:
            bob.send(cn["alice"], _payload(cn["bob"], cn["alice"]))
        server_side = time.monotonic() - revoked_at
        assert "is on the CRL" in str(info.value)
        drainer.join(60)
        release.set()
        assert ended, "the open stream was not cut"
        # the twin: Charlie, on a certificate the CRL does not list, is not refused for
        # revocation (the directory is unreachable: he is refused as unknown, fail closed)
        charlie = net.nodes["charlie"]
        with pytest.raises(TrisaPeerError) as twin:
            charlie.send(cn["alice"], _payload(charlie.common_name, cn["alice"]))
        assert "is on the CRL" not in str(twin.value)
        # client side
        refusal: list[HandshakeError] = []

        def alice_refuses() -> bool:
            try:
                alice.connect(cn["bob"])
            except HandshakeError as exc:
                refusal.append(exc)
                return True
            return False

        _wait(alice_refuses, "alice dropping her channel to bob")
        client_side = time.monotonic() - revoked_at
        # the CRL reload dropped her channels; without the directory none is re-made
        assert refusal[0].reason in (Reason.DIRECTORY_UNAVAILABLE, Reason.DIRECTORY_BUSY)
        print(f"\ncompromise, directory unreachable: server refuses after {server_side:.2f}s "
              f"(CRL loaded), open stream cut after {ended[0] - revoked_at:.2f}s, client "
              f"drops its channel after {client_side:.2f}s (channel re-check {TTL}s)")
    finally:
        pair.stop()
        proxy.close()


def _reissue_token(net: SimulatedNetwork, vasp_id: str) -> str:
    """The contact-verification token of a reissue after a revocation (from the
    directory's outbox, as the VASP's contact would read it)."""
    directory, sectigo = net.directory.directory, net.directory.sectigo
    assert sectigo is not None
    with pytest.raises(TrisaPeerError, match="contact"):
        reissue(directory, vasp_id, sectigo, poll_interval=0.05)
    mail = [e for e in directory.store.emails(vasp_id=vasp_id) if "Token: " in e.body][-1]
    return mail.body.split("Token: ", 1)[1].split()[0]


# ------------------------------------------------------------------------ CLI


def _gds(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from trisa_peer.cli.main import main

    code = main(["gds", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_the_record_shows_both_certificates_during_the_grace_and_none_after_a_revocation(
    net: SimulatedNetwork, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from trisa_peer.directory.issuance import revoke

    directory, sectigo = net.directory.directory, net.directory.sectigo
    assert sectigo is not None
    vasp_id = net.nodes["bob"].vasp_id
    if directory.get(vasp_id).identity_certificate.revoked:
        reissue(directory, vasp_id, sectigo, poll_interval=0.05,
                contact_token=_reissue_token(net, vasp_id))
    old = directory.get(vasp_id).identity_certificate
    result = reissue(directory, vasp_id, sectigo, poll_interval=0.05,
                     grace=timedelta(hours=1))
    db = str(net.workdir / "gds.db")
    client = ("--directory", net.directory_endpoint, "--directory-insecure")
    code, out, _ = _gds(capsys, "list", "--db", db, "--status", "VERIFIED", "--json")
    assert code == 0
    bob = next(d for d in json.loads(out) if d["id"] == vasp_id)
    statuses = {c["serial"]: c["status"] for c in bob["certificates"]}
    old_serial = format(int.from_bytes(bytes(old.serial_number), "big"), "X")
    assert statuses[result.serial] == "current"
    assert statuses[old_serial.zfill(len(old_serial) + len(old_serial) % 2)].startswith(
        "superseded, grace until ")
    code, out, _ = _gds(capsys, "lookup", "--common-name", "bob.vasp.test", *client)
    assert code == 0 and "superseded certificate: serial" in out
    # the twin: a revocation ends the grace at once
    revoke(directory, vasp_id, "key compromise", sectigo=sectigo)
    code, out, _ = _gds(capsys, "lookup", "--common-name", "bob.vasp.test", *client, "--json")
    assert code == 0 and json.loads(out)["superseded"] is None
    assert json.loads(out)["revoked"] is True


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "message"), [
    (("--reason", "compromise", "--grace", "1h"), "--reason compromise leaves no grace"),
    (("--grace", "soon"), "must be a duration"),
])
def test_reissue_flags_refused(net: SimulatedNetwork, capsys: pytest.CaptureFixture[str],
                               argv: tuple[str, ...], message: str) -> None:
    code, _, err = _gds(capsys, "reissue", "--id", net.nodes["alice"].vasp_id,
                          "--db", str(net.workdir / "gds.db"), *argv)
    assert code == 2 and message in err.strip().splitlines()[-1] and "Traceback" not in err


def test_update_cert_starts_the_grace_like_a_planned_reissue(
        trisa_peer_cli: Callable[..., Any], tmp_path: Path) -> None:
    """`gds update-cert` (an operator's planned rotation) keeps the replaced certificate
    acceptable for --grace; --grace 0 gives none (the twin); a revoked one gets none."""
    from trisa_peer.directory.convert import serial_hex
    from trisa_peer.directory.service import Directory
    from trisa_peer.directory.store import SQLStore

    db = str(tmp_path / "gds.db")
    added = trisa_peer_cli("gds", "add", "--db", db, "--json", "--common-name",
                           "bob.vasp.test", "--endpoint", "bob.vasp.test:443",
                           "--cert", str(PKI / "bob.pem"))
    assert added.returncode == 0, added.stderr
    vasp_id = json.loads(added.stdout)["id"]

    def in_grace() -> Any:
        with Directory(SQLStore(db)) as directory:
            current = bytes(directory.get(vasp_id).identity_certificate.serial_number)
            return superseded_in_grace(directory, vasp_id, serial_hex(current))

    out = trisa_peer_cli("gds", "update-cert", "--db", db, "--id", vasp_id,
                         "--cert", str(PKI / "bob-reissued.pem"), "--grace", "2h")
    assert out.returncode == 0, out.stderr
    found = in_grace()
    assert found is not None
    assert timedelta(hours=1.9) < found[1] - datetime.now(UTC) <= timedelta(hours=2)
    back = trisa_peer_cli("gds", "update-cert", "--db", db, "--id", vasp_id,
                          "--cert", str(PKI / "bob.pem"), "--grace", "0")
    assert back.returncode == 0, back.stderr
    assert in_grace() is None
