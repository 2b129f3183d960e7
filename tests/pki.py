"""Helpers for tests: load fixture identities and an in-memory directory.

``MemoryDirectory`` implements the ``DirectoryLookup`` protocol over a dict; it is
used only by the pure-core tests of the handshake logic. Transport tests use the
project's real directory server on loopback.
"""

from __future__ import annotations

import threading
from functools import cache

from helpers import PKI

from trisa_peer.certs import Identity, load_identity
from trisa_peer.errors import DirectoryError, DirectoryNotFoundError
from trisa_peer.records import PeerRecord
from trisa_peer.trust import TrustPool


@cache
def identity(name: str) -> Identity:
    return load_identity(PKI / f"{name}.pem", key_path=PKI / f"{name}.key")


@cache
def pool() -> TrustPool:
    return TrustPool.load(PKI / "trust.pem")


def record_for(name: str, *, endpoint: str | None = None, **kw: object) -> PeerRecord:
    ident = identity(name)
    cn = ident.common_name
    return PeerRecord(
        id=f"id-{name}",
        common_name=cn,
        endpoint=endpoint or f"{cn}:443",
        identity_certificate=ident.leaf,
        identity_chain=ident.chain,
        **kw,  # type: ignore[arg-type]
    )


class MemoryDirectory:
    """A dict of VERIFIED records; ``stale`` serves an old copy until ``fresh=True``."""

    def __init__(self, *records: PeerRecord) -> None:
        self.records = {r.common_name: r for r in records}
        self.stale: dict[str, PeerRecord] = {}
        self.statuses: dict[str, str] = {}
        self.down = False
        self.calls: list[tuple[str, bool]] = []
        self._lock = threading.Lock()

    def put(self, record: PeerRecord) -> None:
        self.records[record.common_name] = record

    def lookup(
        self, *, common_name: str | None = None, vasp_id: str | None = None, fresh: bool = False
    ) -> PeerRecord:
        with self._lock:
            self.calls.append((common_name or vasp_id or "", fresh))
        if self.down:
            raise DirectoryError("directory unreachable (test)")
        key = common_name or ""
        if not fresh and key in self.stale:
            return self.stale[key]
        try:
            return self.records[key]
        except KeyError:
            raise DirectoryNotFoundError(f"{key} not found") from None

    def verification_status(self, common_name: str) -> str | None:
        return self.statuses.get(common_name)


__all__ = ["MemoryDirectory", "identity", "pool", "record_for"]
