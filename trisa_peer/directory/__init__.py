"""The TRISA Global Directory Service: storage, service, gRPC server, client, issuance.

- :class:`DirectoryClient` — the handshake's :class:`~trisa_peer.records.DirectoryLookup`
  over gRPC (cached, bounded timeouts).
- :class:`DirectoryServer` — a TRISADirectory gRPC server (+ health, reflection) over a
  :class:`Directory` (the behaviour) over a :class:`DirectoryStore` (:class:`SQLStore`:
  SQLite by default, PostgreSQL by URL).
- :mod:`.issuance` — review acceptance, reissue and revocation through Sectigo.
- :mod:`.convert` — ``LookupReply`` ↔ :class:`~trisa_peer.records.PeerRecord`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import DirectoryClient, SearchResult
    from .convert import certificate_proto, lookup_reply, peer_record
    from .issuance import IssuanceResult, accept, certificate_zip, reissue, revoke
    from .server import DirectoryServer, DirectoryServicer
    from .service import DEFAULT_DIRECTORY_ID, Directory, RegisterResult, state_name
    from .store import Changes, DirectoryStore, SQLiteStore, SQLStore

# Each name is loaded from its module on first use (PEP 562): a node that only needs the
# client (``trisa-peer serve``) does not load the directory's server, store and issuance
# code (and Sectigo's client) just by importing a submodule of this package.
_WHERE = {
    "DirectoryClient": "client", "SearchResult": "client",
    "certificate_proto": "convert", "lookup_reply": "convert", "peer_record": "convert",
    "IssuanceResult": "issuance", "accept": "issuance", "certificate_zip": "issuance",
    "reissue": "issuance", "revoke": "issuance",
    "DirectoryServer": "server", "DirectoryServicer": "server",
    "DEFAULT_DIRECTORY_ID": "service", "Directory": "service", "RegisterResult": "service",
    "state_name": "service",
    "Changes": "store", "DirectoryStore": "store", "SQLiteStore": "store", "SQLStore": "store",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_DIRECTORY_ID",
    "Changes",
    "Directory",
    "DirectoryClient",
    "DirectoryServer",
    "DirectoryServicer",
    "DirectoryStore",
    "IssuanceResult",
    "RegisterResult",
    "SQLStore",
    "SQLiteStore",
    "SearchResult",
    "accept",
    "certificate_proto",
    "certificate_zip",
    "lookup_reply",
    "peer_record",
    "reissue",
    "revoke",
    "state_name",
]
