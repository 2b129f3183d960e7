"""B5: resident memory of a TRISA node holding 10,000 cached peer decisions.

Runs in its own process so that VmRSS is the node's, not the benchmark harness's:
starts a real :class:`~trisa_peer.network.node.TrisaNode` (gRPC server listening on
127.0.0.1) with an EC identity, reads VmRSS, then pushes every leaf of ``leaves.pem``
through the server's :class:`~trisa_peer.handshake.PeerAuthenticator` (full step 3
and 4 verification: chain to the bench CA, directory record, binding), exactly what
the interceptor does for a new client certificate, and reads VmRSS again.

The directory is an in-process dict (PEM per common name) that builds a fresh
``PeerRecord`` per lookup, as a directory client would from a ``LookupReply``; the
records then live only in the decision cache.

Usage: ``b5_memory.py WORKDIR`` (WORKDIR holds trust.pem, node.pem, node.key,
leaves.pem); prints one JSON line. (An earlier ``--compact`` experiment -- one parsed
leaf per decision instead of two -- is now what the package does: 157 -> ~94 MB.)
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path
from typing import Any


def vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0  # kB -> MiB
    return 0.0


class DictDirectory:
    """DirectoryLookup over {common name: leaf PEM}; a new PeerRecord per lookup."""

    def __init__(self, leaves: dict[str, bytes], chain: tuple[Any, ...]) -> None:
        self.leaves = leaves
        self.chain = chain

    def lookup(
        self, *, common_name: str | None = None, vasp_id: str | None = None, fresh: bool = False
    ) -> Any:
        from cryptography import x509

        from trisa_peer.errors import DirectoryNotFoundError
        from trisa_peer.records import PeerRecord

        cn = (common_name or vasp_id or "").lower()
        pem = self.leaves.get(cn)
        if pem is None:
            raise DirectoryNotFoundError(f"no record for {cn}")
        return PeerRecord(
            id=cn,
            common_name=cn,
            endpoint=f"{cn}:443",
            identity_certificate=x509.load_pem_x509_certificate(pem),
            identity_chain=self.chain,
        )

    def verification_status(self, common_name: str) -> str | None:
        return None


def main(workdir: str, *options: str) -> int:
    from trisa_peer.certs import load_identity, parse_certificates
    from trisa_peer.network.handler import Reject
    from trisa_peer.network.node import TrisaNode
    from trisa_peer.network.store import TransferStore
    from trisa_peer.transport.identity import Material
    from trisa_peer.transport.server import StaticMaterial
    from trisa_peer.trust import TrustPool

    work = Path(workdir)
    pool = TrustPool.load(work / "trust.pem")
    identity = load_identity(work / "node.pem", key_path=work / "node.key")
    node = TrisaNode(
        StaticMaterial(Material(identity, pool, None, 1)),
        DictDirectory({}, ()),
        store=TransferStore(work / "b5-node.db"),
        handler=lambda incoming: Reject(1, "benchmark node"),
        listen="127.0.0.1:0",
        max_workers=8,
    )
    node.start()
    gc.collect()
    idle = vm("VmRSS")

    # Split the PEM file into one bytes object per leaf (the cache keys, as gRPC gives them).
    marker = b"-----END CERTIFICATE-----\n"
    blobs = [b + marker for b in (work / "leaves.pem").read_bytes().split(marker) if b.strip()]
    leaves: dict[str, bytes] = {}
    for blob in blobs:
        cert = parse_certificates(blob, source="leaf")[0]
        cn = cert.subject.rfc4514_string().removeprefix("CN=").lower()
        leaves[cn] = blob
    del blobs
    issuing = tuple(c for c in pool.intermediates)
    node.directory = DictDirectory(leaves, issuing)
    authenticator = node.server.authenticator
    authenticator.directory = node.directory
    loaded = vm("VmRSS")

    start = time.perf_counter()
    accepted = 0
    for pem in leaves.values():
        peer = authenticator.authenticate_pem(pem, None)
        accepted += peer is not None
    took = time.perf_counter() - start
    # The directory's own copy of the PEMs is not node memory: drop it, keep the cache.
    node.directory.leaves = {}
    del leaves
    gc.collect()
    full = vm("VmRSS")
    # A second pass must be pure cache hits.
    hits_start = time.perf_counter()
    for key in list(authenticator._cache)[:1000]:
        authenticator.authenticate_pem(key, None)
    hit_us = (time.perf_counter() - hits_start) / 1000 * 1e6
    print(json.dumps({
        "rss_idle_mb": round(idle, 1),
        "rss_loaded_mb": round(loaded, 1),
        "rss_mb": round(full, 1),
        "hwm_mb": round(vm("VmHWM"), 1),
        "decisions": authenticator.cached_decisions(),
        "accepted": accepted,
        "fill_seconds": round(took, 2),
        "verify_us_per_peer": round(took / max(accepted, 1) * 1e6, 1),
        "cache_hit_us": round(hit_us, 2),
    }))
    node.stop(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
