"""Issue 11 section 5: a hung directory (accepts, never answers) cannot hold the workers.

Directory look-ups for callers not yet decided are bounded (``max_lookups``); one over
the bound fails at once with UNAVAILABLE (fail closed), and peers with a cached
decision never wait on the directory at all. Real directory behind a loopback proxy
that is switched to "hang"; unknown callers hold never-seen certificates issued by the
test TRISA CA.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from helpers import PKI
from outage_net import OutageNet, payload, probe

from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import Identity
from trisa_peer.steps import Reason
from trisa_peer.testing.faults import HangingProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def net(tmp_path: Path) -> Iterator[OutageNet]:
    n = OutageNet(tmp_path)
    yield n
    n.close()


def strangers(tmp: Path, n: int) -> list[Identity]:
    shutil.copytree(PKI / "ca", tmp / "ca")
    ca = CertificateAuthority.open(tmp / "ca")
    return [ca.issue(f"stranger{i}.vasp.test", key_type="ec") for i in range(n)]


def timed(caller: str | Identity, node: object) -> tuple[grpc.StatusCode, float]:
    start = time.monotonic()
    code = probe(caller, node, timeout=10)  # type: ignore[arg-type]
    return code, time.monotonic() - start


def test_hung_directory_bounded_lookups_fail_fast_known_peer_unaffected(
        net: OutageNet, tmp_path: Path) -> None:
    proxy = HangingProxy(net.port)
    try:
        bob = net.node("bob", directory=proxy.endpoint, max_lookups=2, max_workers=8)
        alice = net.node("alice")
        assert alice.send("bob.vasp.test", payload()).state == "accepted"  # Bob knows Alice
        unknown = strangers(tmp_path, 8)
        proxy.hang()
        with ThreadPoolExecutor(len(unknown)) as pool:
            results = list(pool.map(lambda ident: timed(ident, bob), unknown))
            known = [timed("alice", bob) for _ in range(5)]  # while 2 look-ups hang
        codes = [code for code, _ in results]
        assert codes == [grpc.StatusCode.UNAVAILABLE] * len(unknown)  # fail closed
        slow = [t for _, t in results if t > 1.0]
        fast = [t for _, t in results if t <= 1.0]
        # twin: within the bound a look-up waits for the directory's timeout (2 s) ...
        assert 1 <= len(slow) <= 2, results
        # ... over the bound it fails at once, with its own reason
        assert len(fast) >= len(unknown) - 2 and max(fast) < 0.5, results
        assert bob.server.authenticator.counts[Reason.DIRECTORY_BUSY] >= len(unknown) - 2
        # the known peer is served from its cached decision, never waiting on the directory
        assert all(code == grpc.StatusCode.OK and t < 0.5 for code, t in known), known
    finally:
        proxy.close()
