"""Run one TRISA node in its own process (its own GIL), configured from a JSON file.

Used by ``bench/run.py`` to put the beneficiary (Bob) in a separate process for the
throughput figure. The config names files written by the parent::

    {"cert": "bob.pem", "key": "bob.key", "trust": "trust.pem",
     "listen": "127.0.0.1:0", "directory": "127.0.0.1:PORT",
     "resolve": {"alice.vasp.test:PORT": "127.0.0.1:PORT"},
     "store": "bob.db", "workers": 8, "store_sync": "FULL"}

With ``"role": "directory"`` it serves a GDS (``DirectoryServer``) over the SQLite file
``"db"`` instead. Prints ``READY <port>`` once serving, then serves until its stdin is closed.
``store_sync`` other than FULL is an *experiment* (the package always uses FULL); it is
applied by wrapping ``SQLiteDatabase._connect`` so the package is not modified.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Any


def _store_sync(mode: str) -> None:
    from trisa_peer.storage import database as db_mod

    original = db_mod.SQLiteDatabase._connect

    def _connect(self: Any) -> Any:
        conn = original(self)
        conn.execute(f"PRAGMA synchronous={mode}")
        return conn

    db_mod.SQLiteDatabase._connect = _connect  # type: ignore[method-assign]


def main(path: str) -> int:
    config = json.loads(open(path, encoding="utf-8").read())
    mode = str(config.get("store_sync", "FULL")).upper()
    if mode != "FULL":
        _store_sync(mode)

    if config.get("role") == "directory":
        return _directory(config)

    from trisa_peer.certs import load_identity
    from trisa_peer.directory.client import DirectoryClient
    from trisa_peer.network.node import TrisaNode
    from trisa_peer.network.store import TransferStore
    from trisa_peer.testing.cast import BOOK
    from trisa_peer.testing.policies import beneficiary_handler
    from trisa_peer.transport.identity import Material
    from trisa_peer.transport.server import StaticMaterial
    from trisa_peer.trust import TrustPool

    identity = load_identity(config["cert"], key_path=config["key"])
    pool = TrustPool.load(config["trust"])
    directory = DirectoryClient(config["directory"], insecure=True, timeout=5, cache_ttl=30)
    node = TrisaNode(
        StaticMaterial(Material(identity, pool, None, 1)),
        directory,
        store=TransferStore(config["store"]),
        handler=beneficiary_handler(
            BOOK, identity.common_name, async_delay=timedelta(seconds=0.2)
        ),
        listen=config.get("listen", "127.0.0.1:0"),
        resolve=config.get("resolve", {}),
        timeout=10,
        max_workers=int(config.get("workers", 8)),
    )
    port = node.start()
    print(f"READY {port}", flush=True)
    try:
        sys.stdin.read()  # the parent closes our stdin to stop us
    finally:
        node.stop(0.5)
        directory.close()
    return 0


def _directory(config: dict[str, Any]) -> int:
    from trisa_peer.directory.server import DirectoryServer
    from trisa_peer.directory.store import SQLiteStore

    server = DirectoryServer(
        SQLiteStore(config["db"]), listen="127.0.0.1:0", max_workers=int(config.get("workers", 8))
    )
    port = server.start()
    print(f"READY {port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
