"""Child process of ``case_kill9`` and ``case_pending_restart``: one beneficiary node.

Configured by a JSON file (``cert``, ``key``, ``trust``, ``directory``, ``resolve``,
``store``, ``runs``); prints ``READY <port>``, serves until its stdin closes or it gets
SIGTERM. Its handler accepts every transfer and appends ``<key> <attempt>`` to the
``runs`` file with fsync before returning, so the parent counts handler runs exactly.

Test-only fault hook (this script, never the library): ``TRISA_SOAK_KILL=POINT:N``
sends SIGKILL to this process at the N-th time it reaches POINT:

- ``received``: an envelope arrived, nothing done yet;
- ``claimed``: the claim is committed, the handler has not run;
- ``handled``: the handler returned (its run is on disk), the reply is not committed;
- ``committed``: the reply is committed, not yet sent.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections import Counter
from typing import Any

_hits: Counter[str] = Counter()
_lock = threading.Lock()


def _spec() -> tuple[str, int] | None:
    text = os.environ.get("TRISA_SOAK_KILL", "")
    if not text:
        return None
    point, _, n = text.partition(":")
    return point, int(n or "1")


SPEC = _spec()


def point(name: str) -> None:
    if SPEC is None or SPEC[0] != name:
        return
    with _lock:
        _hits[name] += 1
        if _hits[name] == SPEC[1]:
            os.kill(os.getpid(), signal.SIGKILL)


def _install_hooks() -> None:
    from trisa_peer.network import service, store

    process = service.Exchange.process
    claim = store.TransferStore.claim
    add_reply = store.TransferStore.add_reply

    def hooked_process(self: Any, *args: Any, **kw: Any) -> Any:
        point("received")
        return process(self, *args, **kw)

    def hooked_claim(self: Any, *args: Any, **kw: Any) -> Any:
        result = claim(self, *args, **kw)
        if result.reply is None:
            point("claimed")
        return result

    def hooked_add_reply(self: Any, *args: Any, **kw: Any) -> Any:
        result = add_reply(self, *args, **kw)
        if kw.get("direction") == "outgoing":
            point("committed")
        return result

    service.Exchange.process = hooked_process  # type: ignore[method-assign]
    store.TransferStore.claim = hooked_claim  # type: ignore[method-assign]
    store.TransferStore.add_reply = hooked_add_reply  # type: ignore[method-assign]


def main(path: str) -> int:
    config = json.loads(open(path, encoding="utf-8").read())
    _install_hooks()

    from trisa_peer.certs import load_identity
    from trisa_peer.directory.client import DirectoryClient
    from trisa_peer.network.handler import Accept, Incoming, Pending
    from trisa_peer.network.node import TrisaNode
    from trisa_peer.network.store import TransferStore
    from trisa_peer.transport.identity import Material
    from trisa_peer.transport.server import StaticMaterial
    from trisa_peer.trust import TrustPool

    runs = open(config["runs"], "a", encoding="utf-8")
    runs_lock = threading.Lock()

    def handler(incoming: Incoming) -> Any:
        with runs_lock:
            runs.write(f"{incoming.idempotency_key} {incoming.attempt} {incoming.envelope_id}\n")
            runs.flush()
            os.fsync(runs.fileno())
        if config.get("pending_resolver"):
            return Pending(resolver=config["pending_resolver"],
                           window=_seconds(config.get("pending_window", 60)))
        point("handled")
        return Accept()

    identity = load_identity(config["cert"], key_path=config["key"])
    pool = TrustPool.load(config["trust"])
    directory = DirectoryClient(config["directory"], insecure=True, timeout=5, cache_ttl=30)
    node = TrisaNode(
        StaticMaterial(Material(identity, pool, None, 1)),
        directory,
        store=TransferStore(config["store"]),
        handler=handler,
        listen="127.0.0.1:0",
        resolve=config.get("resolve", {}),
        timeout=5,
        max_workers=4,
    )
    if config.get("pending_resolver"):
        decisions = config.get("decisions", {})
        after = float(config.get("resolve_after", 0))

        def resolve(transfer: Any) -> Any:
            # A resolver by name: asked again after every restart until it decides.
            import time

            from trisa_peer.network.handler import Reject

            decision = decisions.get(transfer.envelope_id, "accept")
            if time.time() < after or decision == "wait":
                return None
            return Accept() if decision == "accept" else Reject(int(decision), "rejected")

        node.resolvers[config["pending_resolver"]] = resolve
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    port = node.start()
    print(f"READY {port}", flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    node.stop(1.0)
    node.close()
    directory.close()
    return 0


def _seconds(value: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=float(value))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
