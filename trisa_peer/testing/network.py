"""A simulated TRISA network on loopback: the demo, and the backing of ``trisa_network``.

:class:`SimulatedNetwork` starts, in one process and on ``127.0.0.1`` only:

* a local TRISA certificate authority and the local Sectigo-compatible service backed
  by it;
* a Global Directory Service (SQLite) whose operator issues certificates through that
  service;
* VASP nodes: Alice, Bob and Charlie, registered through the directory's real
  registration -> contact verification -> review -> issuance flow; Mallory, with a valid
  certificate from the TRISA CA but never registered; Evil, under a foreign CA; and an
  impostor holding a valid TRISA certificate for Bob's name that was never registered.

Names are the real TRISA common names (``alice.vasp.test``...). Each node dials the
others through ``--resolve``-style overrides, so every name is verified as it would be
on the Internet while all traffic stays on loopback.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from .._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from .._pb.trisa.gds.models.v1beta1 import models_pb2
from ..ca import CertificateAuthority
from ..certs import Identity
from ..directory.client import DirectoryClient
from ..directory.issuance import certificate_zip, open_zip
from ..directory.server import DirectoryServer
from ..directory.store import SQLiteStore
from ..errors import ConfigurationError
from ..network.handler import Handler
from ..network.node import TrisaNode
from ..network.store import TransferStore
from ..sectigo.client import SectigoClient
from ..sectigo.emulator import SectigoEmulator
from ..transport.identity import Material
from ..transport.server import StaticMaterial
from ..trust import TrustPool
from .cast import (
    ALICE,
    BOB,
    BOOK,
    CHARLIE,
    EVIL,
    MALLORY,
    PostalAddress,
    VaspProfile,
    lei_with_check_digits,
)
from .policies import beneficiary_handler

__all__ = ["SimNode", "SimulatedNetwork", "free_port"]

Progress = Callable[[str], None]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS may reuse it later; loopback only)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SimNode:
    """One simulated VASP: its profile, identity, node and (if registered) record id."""

    name: str
    profile: VaspProfile
    identity: Identity
    node: TrisaNode
    port: int
    vasp_id: str = ""
    pkcs12password: str = field(default="", repr=False)

    @property
    def common_name(self) -> str:
        return self.profile.common_name

    @property
    def endpoint(self) -> str:
        return f"{self.common_name}:{self.port}"

    def send(self, peer: str, payload: Any, **kw: Any) -> Any:
        return self.node.send(peer, payload, **kw)


class SimulatedNetwork:
    """Start with :meth:`start` (or use as a context manager); :meth:`stop` stops all."""

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        key_size: int = 2048,
        async_delay: float = 0.2,
        progress: Progress | None = None,
        handler_factory: Callable[[str], Handler] | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="trisa-sim-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key_size = key_size
        self.async_delay = async_delay
        self.progress = progress or (lambda message: None)
        self.handler_factory = handler_factory or self._rvasp_handler
        self.nodes: dict[str, SimNode] = {}
        self.resolve: dict[str, str] = {}
        self._stoppers: list[Callable[[], None]] = []
        self.ca: CertificateAuthority
        self.pool: TrustPool
        self.directory: DirectoryServer
        self.sectigo: SectigoEmulator
        self.impostor: TrisaNode | None = None
        self.impostor_port = 0

    def _rvasp_handler(self, common_name: str) -> Handler:
        return beneficiary_handler(
            BOOK, common_name, async_delay=timedelta(seconds=self.async_delay)
        )

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> SimulatedNetwork:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for stop in reversed(self._stoppers):
            try:
                stop()
            except Exception:  # noqa: S110 - best effort shutdown of every part
                pass
        self._stoppers.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def start(self) -> SimulatedNetwork:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        say = self.progress
        say("creating the TRISA certificate authority")
        self.ca = CertificateAuthority.init(
            self.workdir / "trisa-ca", name="TRISA Simulated Root CA", key_size=self.key_size
        )
        self.pool = TrustPool.from_certificates([self.ca.root, self.ca.issuing])

        say("starting the local Sectigo-compatible service")
        username, password = "operator", secrets.token_urlsafe(16)
        self.sectigo = SectigoEmulator(
            ca_dir=self.workdir / "trisa-ca",
            state_path=self.workdir / "sectigo-state.json",
            username=username,
            password=password,
            key_size=self.key_size,
        )
        sectigo_url = self.sectigo.start(host="127.0.0.1", port=0)
        self._stoppers.append(self.sectigo.stop)
        client = SectigoClient(sectigo_url, username, password, cache_path=False, timeout=10)

        say("starting the Global Directory Service")
        store = SQLiteStore(self.workdir / "gds.db")
        self.directory = DirectoryServer(store, listen="127.0.0.1:0", sectigo=client)
        self.directory.start()
        self._stoppers.append(self.directory.stop)
        self.directory_endpoint = self.directory.endpoint

        ports = {p.common_name: free_port() for p in (ALICE, BOB, CHARLIE, EVIL, MALLORY)}
        for cn, port in ports.items():
            self.resolve[f"{cn}:{port}"] = f"127.0.0.1:{port}"

        for profile in (ALICE, BOB, CHARLIE):
            say(f"registering {profile.common_name}: register, verify contact, review, issue")
            identity, vasp_id, pkcs12 = self._register(profile, ports[profile.common_name])
            self._add_node(profile, identity, ports[profile.common_name], vasp_id, pkcs12)

        say("mallory.vasp.test: a valid TRISA certificate, never registered")
        mallory = self.ca.issue(MALLORY.common_name, key_size=self.key_size)
        self._add_node(MALLORY, mallory, ports[MALLORY.common_name])

        say("evil.vasp.test: a certificate from a foreign CA")
        evil_ca = CertificateAuthority.init(
            self.workdir / "evil-ca", name="Evil Root CA", key_size=self.key_size
        )
        evil = evil_ca.issue(EVIL.common_name, key_size=self.key_size)
        self._add_node(EVIL, evil, ports[EVIL.common_name])

        say("an impostor with a valid TRISA certificate for bob.vasp.test")
        fake_bob = self.ca.issue(BOB.common_name, key_size=self.key_size)
        self.impostor_port = free_port()
        self.impostor = self._node(fake_bob, self.impostor_port, BOB.common_name)
        self.impostor.start()
        self._stoppers.append(self.impostor.stop)

    def _register(self, profile: VaspProfile, port: int) -> tuple[Identity, str, str]:
        client = DirectoryClient(self.directory_endpoint, insecure=True, timeout=10)
        try:
            request = gds_pb2.RegisterRequest(
                common_name=profile.common_name,
                trisa_endpoint=f"{profile.common_name}:{port}",
                website=f"https://{profile.common_name}",
                business_category=models_pb2.PRIVATE_ORGANIZATION,
                vasp_categories=["Exchange"],
                established_on="2020-01-01",
            )
            request.entity.CopyFrom(profile.legal_person())
            request.contacts.technical.name = f"{profile.short_name} Compliance"
            request.contacts.technical.email = f"compliance@{profile.common_name}"
            reply = client.register(request)
            for token in self.directory.store.tokens_for(reply.id):
                client.verify_contact(reply.id, token.token)
        finally:
            client.close()
        self.directory.accept(reply.id, poll_interval=0.05, timeout=30)
        _, data = certificate_zip(self.directory.directory, reply.id)
        identity = open_zip(data, reply.pkcs12password.encode())
        return identity, reply.id, reply.pkcs12password

    def directory_client(self) -> DirectoryClient:
        return DirectoryClient(self.directory_endpoint, insecure=True, timeout=5, cache_ttl=30)

    def _node(
        self, identity: Identity, port: int, common_name: str, handler: Handler | None = None
    ) -> TrisaNode:
        material = StaticMaterial(Material(identity, self.pool, None, 1))
        directory = self.directory_client()
        self._stoppers.append(directory.close)
        return TrisaNode(
            material,
            directory,
            store=TransferStore(self.workdir / f"{common_name}-{port}.db"),
            handler=handler if handler is not None else self.handler_factory(common_name),
            listen=f"127.0.0.1:{port}",
            resolve=self.resolve,
            timeout=10,
            max_workers=8,
        )

    def _add_node(
        self,
        profile: VaspProfile,
        identity: Identity,
        port: int,
        vasp_id: str = "",
        pkcs12password: str = "",
        handler: Handler | None = None,
    ) -> SimNode:
        node = self._node(identity, port, profile.common_name, handler)
        node.start()
        self._stoppers.append(node.stop)
        name = _short_name(profile.common_name)
        sim = SimNode(name, profile, identity, node, port, vasp_id, pkcs12password)
        self.nodes[name] = sim
        return sim

    def join(
        self, common_name: str, handler: Handler, *, profile: VaspProfile | None = None
    ) -> SimNode:
        """Register ``common_name`` and start its node with ``handler``: your own VASP.

        The VASP goes through the same flow as the cast (register, contact
        verification, review, issuance through the Sectigo-compatible service), gets a
        node on 127.0.0.1 that every other node can dial by name, and is then
        ``network.<first label>`` (``carol.vasp.test`` -> ``network.carol``).
        ``profile`` is its IVMS101 identity; by default an invented one named after
        the first label. Raises :class:`~trisa_peer.errors.ConfigurationError` if the
        network is not started or the name (or its first label) is taken; the
        directory refuses a name that is not a valid TRISA common name.
        """
        if not hasattr(self, "directory_endpoint"):
            raise ConfigurationError("start the simulated network before joining it")
        name = _short_name(common_name)
        taken = {n.common_name for n in self.nodes.values()}
        if common_name in taken or name in self.nodes or BOOK.has_vasp(common_name):
            raise ConfigurationError(f"{common_name!r} is already a VASP of this network")
        profile = profile or _invented_profile(common_name)
        if profile.common_name != common_name:
            raise ConfigurationError(
                f"the profile is {profile.common_name!r}, not {common_name!r}")
        port = free_port()
        self.progress(f"registering {common_name}: register, verify contact, review, issue")
        identity, vasp_id, pkcs12 = self._register(profile, port)
        self.resolve[f"{common_name}:{port}"] = f"127.0.0.1:{port}"
        return self._add_node(profile, identity, port, vasp_id, pkcs12, handler)

    def __getattr__(self, name: str) -> SimNode:
        nodes = self.__dict__.get("nodes", {})
        if name in nodes:
            return nodes[name]  # type: ignore[no-any-return]
        raise AttributeError(name)

    @contextmanager
    def impersonating_bob(self, node: SimNode) -> Iterator[None]:
        """Make ``node`` reach Bob's registered endpoint at the impostor (DNS hijack)."""
        if self.impostor is None:
            raise ConfigurationError("the network is not started")
        resolver = node.node.resolver
        key = BOB.common_name + ":" + str(self.nodes["bob"].port)
        saved = resolver.resolve.get(key)
        resolver.resolve[key] = f"127.0.0.1:{self.impostor_port}"
        node.node.connector.forget(BOB.common_name)
        try:
            yield
        finally:
            if saved is None:
                resolver.resolve.pop(key, None)
            else:
                resolver.resolve[key] = saved
            node.node.connector.forget(BOB.common_name)

    def wait_for_state(
        self, node: SimNode, envelope_id: str, states: set[str], *, timeout: float = 10.0
    ) -> str:
        """Poll ``node``'s store until the exchange it started reaches one of ``states``."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            origin = node.node.store.initiated(envelope_id)
            state = origin.state if origin is not None else ""
            if state in states:
                return state
            time.sleep(0.02)
        return state


def _short_name(common_name: str) -> str:
    """``carol.vasp.test`` -> ``carol``: the attribute a node is reached by."""
    return common_name.split(".", 1)[0]


def _invented_profile(common_name: str) -> VaspProfile:
    """An IVMS101 identity for a VASP the cast does not know (all invented, valid LEI)."""
    label = _short_name(common_name)
    stem = hashlib.sha256(common_name.encode()).hexdigest()[:14].upper()
    return VaspProfile(
        common_name=common_name,
        legal_name=f"{label.capitalize()} VASP Ltd",
        short_name=f"{label.capitalize()} VASP",
        country="GB",
        lei=lei_with_check_digits(f"9845{stem}"),
        address=PostalAddress("High Street", "1", "EC1A 1BB", "London", "GB"),
    )
