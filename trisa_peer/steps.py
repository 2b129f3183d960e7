"""The eight logical steps of the TRISA mutual-authentication handshake.

Numbering follows the TRISA documentation (Alice is the caller, Bob the callee):

1. Alice looks Bob up in the directory (endpoint and certificate).
2. Alice presents her identity certificate to Bob over mTLS.
3. Bob verifies that Alice's certificate chains to the TRISA root CA.
4. Bob looks Alice up in the directory and binds her certificate to the record.
5. Bob presents his identity certificate to Alice.
6. Alice verifies that Bob's certificate chains to the TRISA root CA.
7. Alice confirms that Bob's certificate matches his directory record.
8. The Travel Rule exchange proceeds in secure envelopes.

Steps 2, 3, 5 and 6 happen inside one TLS handshake; the numbering is logical.

:class:`Reason` is the closed set of machine-readable codes a
:class:`~trisa_peer.errors.HandshakeError` carries (``.reason``); logs, the trace and
the CLI print its value. Add a reason here, never as a string literal elsewhere.
"""

from __future__ import annotations

import enum

__all__ = ["HandshakeStep", "Reason"]


class HandshakeStep(enum.IntEnum):
    """One step of the handshake; ``int(step)`` is its number in the documentation."""

    LOOKUP_PEER = 1
    PRESENT_CLIENT_CERT = 2
    VERIFY_CLIENT_CHAIN = 3
    BIND_CLIENT_RECORD = 4
    PRESENT_SERVER_CERT = 5
    VERIFY_SERVER_CHAIN = 6
    BIND_SERVER_RECORD = 7
    EXCHANGE = 8

    @property
    def title(self) -> str:
        return _TITLES[self]

    def __str__(self) -> str:
        return f"step {int(self)} ({self.title})"


_TITLES = {
    HandshakeStep.LOOKUP_PEER: "look the peer up in the directory",
    HandshakeStep.PRESENT_CLIENT_CERT: "client presents its certificate",
    HandshakeStep.VERIFY_CLIENT_CHAIN: "server verifies the client chain",
    HandshakeStep.BIND_CLIENT_RECORD: "server binds the client to its directory record",
    HandshakeStep.PRESENT_SERVER_CERT: "server presents its certificate",
    HandshakeStep.VERIFY_SERVER_CHAIN: "client verifies the server chain",
    HandshakeStep.BIND_SERVER_RECORD: "client binds the server to its directory record",
    HandshakeStep.EXCHANGE: "Travel Rule exchange",
}


class Reason(enum.StrEnum):
    """Why a handshake step failed (or ``VERIFIED`` when it passed): a bounded label set.

    The value is what logs, the trace and the CLI print; it is stable across releases.
    """

    # generic, the default of each HandshakeError subclass
    HANDSHAKE_FAILED = "handshake-failed"
    TLS_FAILED = "tls-failed"
    CHAIN_INVALID = "chain-invalid"
    CERTIFICATE_MISMATCH = "certificate-mismatch"
    REVOKED = "revoked"
    NOT_REGISTERED = "not-registered"
    # step 1 / 4: the directory
    NOT_VERIFIED = "not-verified"
    NO_COMMON_NAME = "no-common-name"
    DIRECTORY_UNAVAILABLE = "directory-unavailable"
    # more callers awaiting a directory look-up than the bound allows: refused at once
    DIRECTORY_BUSY = "directory-busy"
    INVALID_RECORD = "invalid-record"
    NO_CERTIFICATE_ON_RECORD = "no-certificate-on-record"
    DIRECTORY_REVOKED = "directory-revoked"
    NAME_MISMATCH = "name-mismatch"
    ENDPOINT_MISMATCH = "endpoint-mismatch"
    # steps 2, 3, 6: the certificate and its chain
    NO_CLIENT_CERTIFICATE = "no-client-certificate"
    UNPARSEABLE = "unparseable"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    WEAK_KEY = "weak-key"
    EKU = "eku"
    SAN_MISMATCH = "san-mismatch"
    UNKNOWN_ISSUER = "unknown-issuer"
    CRL_STALE = "crl-stale"
    CRL_REVOKED = "crl-revoked"
    # the dial, as the client sees it
    REFUSED_BY_PEER = "refused-by-peer"
    PEER_DIRECTORY_UNAVAILABLE = "peer-directory-unavailable"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    PROBE_FAILED = "probe-failed"
    # operator controls: the local deny-list, per-peer limits
    DENIED = "denied"
    RATE_LIMITED = "rate-limited"
    TOO_MANY_CONCURRENT = "too-many-concurrent"
    # the decision log line of an accepted peer
    VERIFIED = "verified"
    # accepted while the directory is unreachable, within the grace after the decision
    # TTL of its last positive answer (issue 11, section 5)
    ACCEPTED_UNDER_GRACE = "accepted-under-grace"
