"""gRPC metadata keys trisa-peer nodes send each other (both sides use these names).

``BINDING_METADATA`` is response metadata by which a trisa-peer server states what it
bound this call's caller to: ``"<sha256 fingerprint of the caller's leaf> <directory
record id>"``, sent on the ``TRISAHealth/Status`` probe a dialling node makes first (not
on every Transfer). The caller can read it but not verify it: it is the server's own
statement, shown by ``trisa-peer check`` as "claimed by the peer", never as confirmed.
Upstream Go servers send nothing of the kind (they do not bind callers at all).
"""

from __future__ import annotations

__all__ = ["BINDING_METADATA"]

BINDING_METADATA = "trisa-peer-bound"
