"""The eight handshake steps, and where each one is decided.

One module per concern; this one names them and re-exports their public types, so
``from trisa_peer.handshake import PeerAuthenticator`` keeps working:

* :mod:`trisa_peer.steps` -- :class:`HandshakeStep` (1-8) and :class:`Reason`;
* :mod:`trisa_peer.lookup` -- steps 1 and 4's directory query, failing closed;
* :mod:`trisa_peer.authenticate` -- the server side, steps 2-4
  (:class:`PeerAuthenticator`, :class:`VerifiedPeer`);
* :mod:`trisa_peer.resolve` -- the client side, steps 1, 6 and 7 offline
  (:class:`PeerResolver`, :class:`ConnectionPlan`);
* :mod:`trisa_peer.trace` -- :class:`HandshakeTrace`, the steps as they happened;
* :mod:`trisa_peer.verify` (chains, CRL) and :mod:`trisa_peer.binding` (certificate to
  record) hold the individual checks.

What the TLS layer reports (a failed dial's text, gRPC status codes) is interpreted in
:mod:`trisa_peer.transport.status`, never here.

Pure: imports neither grpc nor the generated protobuf code.
"""

from __future__ import annotations

from .authenticate import PeerAuthenticator, VerifiedPeer
from .resolve import ConnectionPlan, PeerResolver
from .steps import HandshakeStep, Reason
from .trace import HandshakeTrace, StepRecord

__all__ = [
    "ConnectionPlan",
    "HandshakeStep",
    "HandshakeTrace",
    "PeerAuthenticator",
    "PeerResolver",
    "Reason",
    "StepRecord",
    "VerifiedPeer",
]
