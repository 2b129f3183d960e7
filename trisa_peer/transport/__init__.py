"""gRPC adapters: mTLS credentials, the verifying interceptor, the server and the client.

Thin by design: they gather inputs (auth context, dial errors) and map the decisions of
:mod:`trisa_peer.handshake` onto gRPC status codes -- all of that mapping, both ways, in
:mod:`trisa_peer.transport.status`; they never re-implement a step.
"""
