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

from .client import DirectoryClient, SearchResult
from .convert import certificate_proto, lookup_reply, peer_record
from .issuance import IssuanceResult, accept, certificate_zip, reissue, revoke
from .server import DirectoryServer, DirectoryServicer
from .service import DEFAULT_DIRECTORY_ID, Directory, RegisterResult, state_name
from .store import Changes, DirectoryStore, SQLiteStore, SQLStore

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
