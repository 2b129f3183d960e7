"""The main job: the simulated network, every scenario run and checked.

:func:`run_demo` starts a :class:`~trisa_peer.testing.network.SimulatedNetwork` and runs,
printing as it goes:

1. the eight handshake steps for Alice -> Bob, ending with a real transfer;
2. the TestNet wallet-policy matrix in both directions (Alice -> Bob, Bob -> Alice),
   including asynchronous callbacks, each checked against the expected outcome;
3. Charlie receiving a transfer for one of Bob's wallets;
4. the impostors: Mallory (right CA, never registered) and Evil (foreign CA) dialling
   Bob, Alice dialling each of them, and a valid TRISA certificate for Bob's name
   answering at Bob's address;

and ends with a summary table. It returns True only when every scenario behaved as
expected; ``trisa-peer demo`` exits 0 exactly then.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .._pb.trisa.api.v1beta1 import errors_pb2
from ..errors import HandshakeError, TrisaPeerError
from ..handshake import HandshakeTrace
from ..network.handler import Reject
from ..network.node import TransferResult
from ..steps import HandshakeStep
from .cast import BOOK, OriginatorPolicy, Wallet
from .network import SimNode, SimulatedNetwork
from .policies import expected_outcome, originator_payload

__all__ = ["Scenario", "run_demo"]

Out = Callable[[str], None]


@dataclass
class Scenario:
    name: str
    expected: str
    observed: str

    @property
    def ok(self) -> bool:
        return self.expected == self.observed


def _code(result: TransferResult) -> str:
    if result.error is None:
        return ""
    return str(errors_pb2.Error.Code.Name(result.error.code))


class _Demo:
    def __init__(self, net: SimulatedNetwork, out: Out) -> None:
        self.net = net
        self.out = out
        self.results: list[Scenario] = []

    def record(self, name: str, expected: str, observed: str) -> None:
        scenario = Scenario(name, expected, observed)
        self.results.append(scenario)
        mark = "ok " if scenario.ok else "!! "
        self.out(f"  {mark} {name:<58} expected {expected:<22} got {observed}")

    # -------------------------------------------------------------- scenarios

    def eight_steps(self) -> None:
        net = self.net
        self.out("\n== The eight steps: alice.vasp.test -> bob.vasp.test ==")
        trace = HandshakeTrace()
        alice, bob = net.alice, net.bob
        mary = BOOK.wallets_of(alice.common_name)[1]  # SendFull
        robert = BOOK.wallets_of(bob.common_name)[0]  # SyncRepair
        payload = originator_payload(mary, robert, sent_at=datetime.now(UTC))
        observed = "refused"
        try:
            alice.node.connect(bob.common_name, trace=trace)
            with trace.step(HandshakeStep.EXCHANGE) as note:
                assert not isinstance(payload, Reject)
                result = alice.send(bob.common_name, payload)
                note[0] = f"Transfer {result.envelope_id[:8]}... answered {result.describe()}"
            observed = "all 8 steps passed" if trace.ok else "incomplete"
        except (HandshakeError, TrisaPeerError) as exc:
            observed = f"refused: {exc}"
        self.out(trace.render())
        self.record("alice -> bob: eight steps and a transfer", "all 8 steps passed", observed)

    def matrix(self, originator: SimNode, beneficiary: SimNode) -> None:
        self.out(f"\n== TestNet wallet policies: {originator.name} -> {beneficiary.name} ==")
        senders: dict[OriginatorPolicy, Wallet] = {}
        for wallet in BOOK.wallets_of(originator.common_name):
            senders.setdefault(wallet.originator_policy, wallet)
        receivers = BOOK.wallets_of(beneficiary.common_name)
        for policy in (OriginatorPolicy.SEND_PARTIAL, OriginatorPolicy.SEND_FULL,
                       OriginatorPolicy.SEND_ERROR):
            sender = senders[policy]
            for receiver in receivers:
                label = f"{policy.value} -> {receiver.beneficiary_policy.value}"
                expected = expected_outcome(sender, receiver)
                observed = self._transfer(originator, beneficiary, sender, receiver)
                self.record(f"{originator.name}->{beneficiary.name} {label}", expected, observed)

    def _transfer(self, originator: SimNode, beneficiary: SimNode, sender: Wallet,
                  receiver: Wallet) -> str:
        payload = originator_payload(sender, receiver, sent_at=datetime.now(UTC))
        try:
            if isinstance(payload, Reject):
                result = originator.node.send_error(beneficiary.common_name, payload.code,
                                                    payload.message)
                return "reject" if result.error is not None else "accept"
            result = originator.send(beneficiary.common_name, payload)
        except TrisaPeerError as exc:
            return f"error: {exc}"
        if result.state == "pending":
            final = self.net.wait_for_state(
                originator, result.envelope_id, {"accepted", "rejected", "expired"}
            )
            return "accept" if final == "accepted" else "reject"
        return "accept" if result.error is None else "reject"

    def wrong_vasp(self) -> None:
        self.out("\n== A transfer for one of Bob's wallets sent to Charlie ==")
        net = self.net
        sender = BOOK.wallets_of(net.alice.common_name)[1]
        robert = BOOK.wallets_of(net.bob.common_name)[0]
        payload = originator_payload(sender, robert, sent_at=datetime.now(UTC))
        assert not isinstance(payload, Reject)
        try:
            result = net.alice.send(net.charlie.common_name, payload)
            observed = _code(result) or result.state
        except TrisaPeerError as exc:
            observed = f"error: {exc}"
        self.record("alice -> charlie, beneficiary wallet is Bob's", "UNKNOWN_WALLET_ADDRESS",
                    observed)

    def impostors(self) -> None:
        self.out("\n== Impostors ==")
        net = self.net
        cases: list[tuple[str, SimNode, str, str]] = [
            ("mallory -> bob (right CA, never registered)", net.mallory, net.bob.common_name,
             "refused at step 4"),
            ("evil -> bob (foreign CA)", net.evil, net.bob.common_name, "refused at step 3"),
            ("alice -> mallory (not in the directory)", net.alice, net.mallory.common_name,
             "refused at step 1"),
            ("alice -> evil (not in the directory)", net.alice, net.evil.common_name,
             "refused at step 1"),
        ]
        for name, node, target, expected in cases:
            self.record(name, expected, self._dial(node, target))
        with net.impersonating_bob(net.alice):
            observed = self._dial(net.alice, net.bob.common_name)
        self.record("alice -> a valid TRISA cert for bob's name, unregistered", "refused at step 7",
                    observed)

    def _dial(self, node: SimNode, target: str) -> str:
        trace = HandshakeTrace()
        try:
            node.node.connect(target, trace=trace)
        except HandshakeError as exc:
            self.out(f"       {exc}")
            return f"refused at step {int(exc.step)}"
        finally:
            node.node.connector.forget(target)
        return "connected"

    def summary(self) -> bool:
        passed = sum(s.ok for s in self.results)
        self.out("\n== Summary ==")
        self.out(f"  {'scenario':<60} {'expected':<22} {'observed':<22} result")
        for s in self.results:
            observed = s.observed if len(s.observed) <= 22 else s.observed[:19] + "..."
            self.out(f"  {s.name:<60} {s.expected:<22} {observed:<22} "
                     f"{'PASS' if s.ok else 'FAIL'}")
        self.out(f"\n{passed} passed, {len(self.results) - passed} failed")
        return passed == len(self.results)


def run_demo(*, out: Out = print, workdir: Path | None = None, key_size: int = 2048) -> bool:
    """Run every scenario on a fresh simulated network; True when all behaved as expected."""
    start = time.perf_counter()

    def progress(message: str) -> None:
        out(f"[{time.perf_counter() - start:5.1f}s] {message}")

    progress("starting the simulated TRISA network on 127.0.0.1")
    with SimulatedNetwork(workdir, key_size=key_size, progress=progress) as net:
        demo = _Demo(net, out)
        demo.eight_steps()
        demo.matrix(net.alice, net.bob)
        demo.matrix(net.bob, net.alice)
        demo.wrong_vasp()
        demo.impostors()
        ok = demo.summary()
    out(f"finished in {time.perf_counter() - start:.1f}s")
    return ok


