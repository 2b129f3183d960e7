"""Shared parts of the directory-fault cases (``case_hung_directory``,
``case_directory_outage``): a real directory on loopback, fixture VASPs, nodes, and a
probe that shows what a server decides about one caller."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, api_pb2_grpc
from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import Identity, certs_to_pem, load_identity
from trisa_peer.controls import PeerControls
from trisa_peer.directory.client import DirectoryClient
from trisa_peer.directory.server import DirectoryServer
from trisa_peer.directory.store import SQLiteStore
from trisa_peer.network.handler import Accept
from trisa_peer.network.node import TrisaNode
from trisa_peer.network.store import TransferStore
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.network import free_port
from trisa_peer.testing.policies import originator_payload
from trisa_peer.transport.identity import Material
from trisa_peer.transport.material import StaticMaterial
from trisa_peer.trust import TrustPool

ROOT = Path(__file__).resolve().parent.parent
PKI = ROOT / "certs" / "fixtures"


def fixture(name: str) -> Identity:
    return load_identity(PKI / f"{name}.pem", key_path=PKI / f"{name}.key")


def trust() -> TrustPool:
    return TrustPool.load(PKI / "trust.pem")


def strangers(tmp: Path, n: int) -> list[Identity]:
    """``n`` never-registered identities (EC P-256) from the test TRISA CA (a copy)."""
    shutil.copytree(PKI / "ca", tmp / "ca")
    ca = CertificateAuthority.open(tmp / "ca")
    return [ca.issue(f"stranger{i}.vasp.test", key_type="ec") for i in range(n)]


class Gds:
    """The project's directory server on a fixed loopback port; stop and start again."""

    def __init__(self, tmp: Path) -> None:
        self.store = SQLiteStore(tmp / "gds.db")
        self.port = free_port()
        self.server: DirectoryServer | None = None
        self.resolve: dict[str, str] = {}
        self.ports: dict[str, int] = {}
        self.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = DirectoryServer(self.store, listen=self.endpoint)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def register(self, ident: Identity) -> int:
        assert self.server is not None
        cn, port = ident.common_name, free_port()
        self.server.directory.add(common_name=cn, endpoint=f"{cn}:{port}",
                                  certificates=[ident.leaf, *ident.chain], name=cn)
        self.resolve[f"{cn}:{port}"] = f"127.0.0.1:{port}"
        self.ports[cn] = port
        return port


def node(ident: Identity, directory: str, port: int, resolve: dict[str, str], *,
         decision_ttl: float = 300.0, cache_ttl: float = 30.0,
         controls: PeerControls | None = None, workers: int = 16) -> TrisaNode:
    client = DirectoryClient(directory, insecure=True, timeout=5, cache_ttl=cache_ttl)
    return TrisaNode(
        StaticMaterial(Material(ident, trust(), None, 1)), client,
        store=TransferStore(":memory:"), handler=lambda incoming: Accept(),
        listen=f"127.0.0.1:{port}", resolve=resolve, timeout=10,
        decision_ttl=decision_ttl, controls=controls, max_workers=workers,
    )


def payload() -> Any:
    from datetime import UTC, datetime

    return originator_payload(BOOK.wallets_of("alice.vasp.test")[1],
                              BOOK.wallets_of("bob.vasp.test")[0], sent_at=datetime.now(UTC))


def channel(ident: Identity, port: int, server_leaf_pem: bytes, cn: str) -> grpc.Channel:
    """A pinned mTLS channel to a node on loopback, presenting ``ident``."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=server_leaf_pem, private_key=ident.key_pem(),
        certificate_chain=ident.chain_pem())
    return grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[
        ("grpc.ssl_target_name_override", cn), ("grpc.default_authority", cn)])


def prober(ident: Identity, server: Identity, port: int) -> Callable[[], grpc.StatusCode]:
    """A function making one TRISAHealth/Status call as ``ident`` on one persistent channel."""
    ch = channel(ident, port, certs_to_pem([server.leaf]), server.common_name)
    stub = api_pb2_grpc.TRISAHealthStub(ch)

    def probe() -> grpc.StatusCode:
        try:
            stub.Status(api_pb2.HealthCheck(), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    return probe


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_until(fn: Callable[[], bool], timeout: float, step: float = 0.02) -> float | None:
    """Seconds until ``fn()`` held, or None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if fn():
            return time.monotonic() - start
        time.sleep(step)
    return None
