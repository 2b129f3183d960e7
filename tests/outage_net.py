"""A real directory server that can be stopped and restarted on the same loopback port,
and nodes with an injected monotonic clock: the fixture of the outage/grace tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from pki import identity, pool

from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, api_pb2_grpc
from trisa_peer.certs import Identity, certs_to_pem
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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class OutageNet:
    def __init__(self, tmp: Path) -> None:
        self.store = SQLiteStore(tmp / "gds.db")
        self.port = free_port()
        self.gds: DirectoryServer | None = None
        self.resolve: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self.nodes: list[TrisaNode] = []
        self.clients: list[DirectoryClient] = []
        self.clock = FakeClock()
        self.start_directory()

    def start_directory(self) -> None:
        self.gds = DirectoryServer(self.store, listen=f"127.0.0.1:{self.port}")
        self.gds.start()

    def stop_directory(self) -> None:
        assert self.gds is not None
        self.gds.stop()

    @property
    def directory(self) -> Any:
        assert self.gds is not None
        return self.gds.directory

    def register(self, ident: Identity, port: int) -> str:
        cn = ident.common_name
        vasp = self.directory.add(common_name=cn, endpoint=f"{cn}:{port}",
                                  certificates=[ident.leaf, *ident.chain], name=cn)
        self.resolve[f"{cn}:{port}"] = f"127.0.0.1:{port}"
        self.ids[cn] = str(vasp.id)
        return str(vasp.id)

    def node(self, name: str, *, register: bool = True, start: bool = True,
             decision_ttl: float = 60.0, directory: str = "", max_workers: int = 16,
             **controls: Any) -> TrisaNode:
        port = free_port()
        ident = identity(name)
        if register:
            self.register(ident, port)
        client = DirectoryClient(directory or f"127.0.0.1:{self.port}", insecure=True,
                                 timeout=2, cache_ttl=0)
        self.clients.append(client)
        node = TrisaNode(
            StaticMaterial(Material(ident, pool(), None, 1)), client,
            store=TransferStore(":memory:"), handler=lambda incoming: Accept(),
            listen=f"127.0.0.1:{port}", resolve=self.resolve, timeout=5,
            decision_ttl=decision_ttl, max_workers=max_workers,
            controls=PeerControls(monotonic=self.clock, **controls),
        )
        if start:
            node.start()
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for node in self.nodes:
            node.stop(grace=None)
        for client in self.clients:
            client.close()
        if self.gds is not None:
            self.gds.stop()


def payload() -> Any:
    return originator_payload(BOOK.wallets_of("alice.vasp.test")[1],
                              BOOK.wallets_of("bob.vasp.test")[0], sent_at=datetime.now(UTC))


def probe(caller: str | Identity, server: TrisaNode, timeout: float = 5) -> grpc.StatusCode:
    """One TRISAHealth/Status call to ``server`` with ``caller``'s identity (a fixture
    name or an Identity): what the server decides about the caller alone."""
    ident = identity(caller) if isinstance(caller, str) else caller
    leaf = server.material.current().identity.leaf
    creds = grpc.ssl_channel_credentials(
        root_certificates=certs_to_pem([leaf]), private_key=ident.key_pem(),
        certificate_chain=ident.chain_pem())
    cn = server.common_name
    with grpc.secure_channel(f"127.0.0.1:{server.port}", creds, options=[
            ("grpc.ssl_target_name_override", cn), ("grpc.default_authority", cn)]) as ch:
        try:
            api_pb2_grpc.TRISAHealthStub(ch).Status(api_pb2.HealthCheck(), timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK
