"""The one boundary between gRPC errors and trisa-peer errors, in both directions.

Out (a server refusing a call): :func:`status_for` maps a project error to a
``grpc.StatusCode``; :func:`abort` ends the call with it and the error's one-line text
(which starts with ``step N (...)`` for a :class:`~trisa_peer.errors.HandshakeError`).

In (a client whose call failed): :func:`rpc_status` reads the code and details of a
``grpc.RpcError``; from those, :func:`dial_error` names the handshake step that failed
a pinned dial, :func:`directory_error` makes a directory RPC's failure a
:class:`~trisa_peer.errors.DirectoryError`, :func:`transfer_error` a Transfer's or
KeyExchange's a :class:`~trisa_peer.errors.TransferError`.

gRPC reports every TLS failure as ``UNAVAILABLE`` with BoringSSL's text in
``details()``, never with a code of its own. :data:`TLS_TEXT` is the one table of the
phrases that text is recognised by; :func:`classify_tls` reads it, first match wins.
A channel that never opened (refused, DNS, timeout, TLS on one side only, not a gRPC
server, untrusted certificate) is read from :data:`CONNECT_TEXT` by
:func:`classify_connect`: a directory's failure then names its cause and the fix, and a
peer's unreachable endpoint says whether ``--resolve`` matched it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc

from ..errors import (
    CertificateError,
    ChainVerificationError,
    ChannelBrokenError,
    ConfigurationError,
    DirectoryError,
    DirectoryMismatchError,
    DirectoryNotFoundError,
    HandshakeError,
    PeerNotRegisteredError,
    RevokedError,
    StoreError,
    TransferError,
    TransportSecurityError,
    TrisaPeerError,
)
from ..steps import HandshakeStep, Reason

__all__ = [
    "CONNECT_TEXT",
    "TLS_TEXT",
    "ConnectFailure",
    "TlsFailure",
    "abort",
    "abort_undecodable",
    "abort_unverified",
    "classify_connect",
    "classify_tls",
    "closed_channel_error",
    "dial_error",
    "directory_error",
    "directory_reply_error",
    "rpc_status",
    "status_for",
    "tls_error",
    "transfer_error",
]

Step = HandshakeStep


class TlsFailure(enum.Enum):
    """What BoringSSL's error text (as gRPC relays it) says went wrong."""

    PEER_CLOSED = "the peer closed the connection during the handshake"
    NOT_PINNED = "the server's certificate is not the pinned one"
    HOSTNAME = "the server's certificate does not name the host"
    EXPIRED = "a certificate has expired"
    NOT_YET_VALID = "a certificate is not valid yet"
    REVOKED = "a certificate is revoked"
    OTHER = "another TLS failure"


# (lower-case phrases, failure), in the order they are tried. With the registered leaf as
# the only trust anchor, "unable to get local issuer" or "self signed certificate in
# certificate chain" mean the server presented another certificate than the pinned one.
# An mTLS server that rejects the client chain just closes the connection.
TLS_TEXT: tuple[tuple[tuple[str, ...], TlsFailure], ...] = (
    (("socket closed", "connection reset"), TlsFailure.PEER_CLOSED),
    (("local issuer", "self signed", "self-signed"), TlsFailure.NOT_PINNED),
    (("hostname", "host name", "subject alt"), TlsFailure.HOSTNAME),
    (("expired",), TlsFailure.EXPIRED),
    (("not yet valid",), TlsFailure.NOT_YET_VALID),
    (("revoked",), TlsFailure.REVOKED),
    (("ssl", "tls", "handshake", "certificate"), TlsFailure.OTHER),
)


def classify_tls(details: str) -> TlsFailure | None:
    """The TLS failure ``details`` describes, or None when it is not about TLS (a name
    that does not resolve -- "hostname lookup error" -- or a refused connection)."""
    if classify_connect(grpc.StatusCode.UNAVAILABLE, details) in _NOT_TLS:
        return None
    text = details.lower()
    for phrases, failure in TLS_TEXT:
        if any(phrase in text for phrase in phrases):
            return failure
    return None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rpc_status(exc: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    """The status code (None if the error has none) and one-line details of ``exc``."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    return code, " ".join(str(details).split())


def _name(code: grpc.StatusCode | None) -> str:
    return code.name if code is not None else "UNKNOWN"


# ------------------------------------------------------------------------------ out


def status_for(
    exc: TrisaPeerError, *, conflict: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION
) -> grpc.StatusCode:
    """The status a server answers for ``exc``.

    A peer that failed the handshake: cannot tell who it is -> UNAUTHENTICATED; who it
    is not (not registered, mismatch, revoked) -> PERMISSION_DENIED; our directory could
    not answer (or too many look-ups are in flight) -> UNAVAILABLE (try again); over a
    per-peer limit -> RESOURCE_EXHAUSTED (retry later); on the deny-list ->
    PERMISSION_DENIED. A directory request: no such record ->
    NOT_FOUND; bad input -> INVALID_ARGUMENT; refused -> ``conflict``; storage failed ->
    UNAVAILABLE.
    """
    if isinstance(exc, HandshakeError):
        if exc.reason in (Reason.DIRECTORY_UNAVAILABLE, Reason.DIRECTORY_BUSY):
            return grpc.StatusCode.UNAVAILABLE
        if exc.reason in (Reason.RATE_LIMITED, Reason.TOO_MANY_CONCURRENT):
            return grpc.StatusCode.RESOURCE_EXHAUSTED  # a per-peer limit: retry later
        if isinstance(exc, TransportSecurityError | ChainVerificationError):
            return grpc.StatusCode.UNAUTHENTICATED
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(exc, DirectoryNotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, ConfigurationError | CertificateError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, DirectoryError):
        return conflict
    if isinstance(exc, StoreError):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INTERNAL


def abort(
    context: Any,
    exc: TrisaPeerError,
    *,
    conflict: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION,
) -> NoReturn:
    """End the current call with the status for ``exc`` and its one-line message."""
    context.abort(status_for(exc, conflict=conflict), str(exc))
    raise AssertionError("grpc's context.abort returned")  # pragma: no cover


def abort_unverified(context: Any) -> NoReturn:
    """Refuse a call whose peer check failed unexpectedly (a bug, not a project error):
    fail closed, without telling the caller our internals."""
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "peer verification failed")
    raise AssertionError("grpc's context.abort returned")  # pragma: no cover


def abort_undecodable(context: Any, what: str) -> NoReturn:
    """Refuse a request whose body does not parse as the method's message ``what``
    (e.g. ``SecureEnvelope``): INVALID_ARGUMENT. Only ever sent after the peer check
    passed (or where there is none, as on the directory)."""
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request is not a valid {what}")
    raise AssertionError("grpc's context.abort returned")  # pragma: no cover


# ------------------------------------------------------------------------------- in

_STEP_PREFIX = re.compile(r"^step (\d) \([^)]*\):\s*")


class ConnectFailure(enum.Enum):
    """Why a channel could not be opened, as gRPC's text (or code) shows it."""

    REFUSED = "nothing listening (connection refused)"
    DNS = "the host name does not resolve"
    TIMEOUT = "no answer in time"
    NOT_TLS = "the server does not speak TLS"
    WANTS_TLS = "the server closed a plaintext connection (it expects TLS)"
    NOT_GRPC = "the server is not a gRPC server"
    UNTRUSTED = "the server's TLS certificate is not trusted"


# (lower-case phrases, failure), tried in order: what gRPC (C core 1.6x) writes into
# ``details()`` when a channel cannot be opened; seen on loopback against a closed port,
# a listener that never answers, a plaintext gRPC server dialled with TLS and the other
# way round, and an HTTP/1.1 server (tests/test_diagnostics.py).
CONNECT_TEXT: tuple[tuple[tuple[str, ...], ConnectFailure], ...] = (
    (("connection refused",), ConnectFailure.REFUSED),
    (("dns resolution failed", "errors resolving", "name or service not known",
      "domain name not found"), ConnectFailure.DNS),
    (("timed out", "deadline exceeded", "endpoint closing"), ConnectFailure.TIMEOUT),
    (("wrong_version_number", "wrong version number", "packet_length_too_long"),
     ConnectFailure.NOT_TLS),
    (("failed parsing http/2", "http1.x", "expected settings frame"), ConnectFailure.NOT_GRPC),
    (("local issuer", "self signed", "self-signed", "certificate_verify_failed"),
     ConnectFailure.UNTRUSTED),
)


#: connection failures that happen before any TLS, whatever words their text shares with it
_NOT_TLS = (ConnectFailure.REFUSED, ConnectFailure.DNS)


def classify_connect(
    code: grpc.StatusCode | None, details: str, *, insecure: bool = False
) -> ConnectFailure | None:
    """Why a connection failed (None: it is not a connection failure we recognise).

    ``insecure``: the channel was plaintext, so a peer that closes it before answering
    wants TLS (with TLS on our side, a closed socket says nothing so specific)."""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ConnectFailure.TIMEOUT
    if code != grpc.StatusCode.UNAVAILABLE:
        return None
    text = details.lower()
    for phrases, failure in CONNECT_TEXT:
        if any(phrase in text for phrase in phrases):
            return failure
    if insecure and ("socket closed" in text or "connection reset" in text):
        return ConnectFailure.WANTS_TLS
    return None


# What each failure means for a directory at {endpoint}, and the fix.
_DIRECTORY_FIX: dict[ConnectFailure, str] = {
    ConnectFailure.REFUSED:
        "nothing is listening at {endpoint} (connection refused); check the directory "
        "address and that the directory is running",
    ConnectFailure.DNS:
        "the host of {endpoint} does not resolve (DNS); check the directory address",
    ConnectFailure.TIMEOUT:
        "no answer from {endpoint}{within} (timeout); the directory may be down or "
        "overloaded: try again later, or check the address",
    ConnectFailure.NOT_TLS:
        "{endpoint} does not speak TLS (a plaintext server); for a plaintext directory "
        "add --directory-insecure, otherwise check the port",
    ConnectFailure.WANTS_TLS:
        "{endpoint} closed the plaintext connection: it expects TLS; remove "
        "--directory-insecure",
    ConnectFailure.NOT_GRPC:
        "{endpoint} is not a gRPC server (it answered in another protocol, e.g. "
        "HTTP/1.1); check the directory's host:port",
    ConnectFailure.UNTRUSTED:
        "the TLS certificate of {endpoint} is not trusted ({why}); give the CA that "
        "issued it with --directory-ca, or check the address",
}


def directory_error(
    code: grpc.StatusCode | None,
    details: str,
    what: str,
    *,
    endpoint: str = "",
    insecure: bool = False,
    timeout: float | None = None,
) -> DirectoryError:
    """A failed directory RPC: NOT_FOUND -> DirectoryNotFoundError, else DirectoryError.

    A channel that could not be opened to ``endpoint`` is named with its cause and fix
    (:func:`classify_connect`): refused, DNS, timeout, TLS on one side only, not a gRPC
    server, untrusted certificate. Anything else keeps gRPC's code and details.
    """
    if code == grpc.StatusCode.NOT_FOUND:
        return DirectoryNotFoundError(f"{what}: {details or 'not found'}")
    failure = classify_connect(code, details, insecure=insecure) if endpoint else None
    if failure is not None:
        within = f" within {timeout:g} s" if timeout else ""
        text = _DIRECTORY_FIX[failure].format(
            endpoint=endpoint, within=within, why=_one_line(_tls_reason(details), 120))
        return DirectoryError(f"{what}: {text}")
    return DirectoryError(f"{what}: {_name(code)}: {details or 'no details'}")


def _tls_reason(details: str) -> str:
    """BoringSSL's own words at the end of gRPC's text (``...: unable to get local
    issuer certificate: OK`` -> ``unable to get local issuer certificate``)."""
    parts = [p.strip() for p in details.split(":") if p.strip()]
    while parts and parts[-1] in ("OK", "Invalid certificate verification context"):
        parts.pop()
    return parts[-1] if parts else details


#: The ``error.code`` a directory puts inside an otherwise successful reply when it has
#: no such record: upstream's GDS uses HTTP-like codes there.
REPLY_NOT_FOUND = 404


def directory_reply_error(code: int, message: str, what: str) -> DirectoryError:
    """An error a directory answered inside its reply (``reply.error``), not as a status.

    404 is "no such record" (DirectoryNotFoundError: the peer is not registered), not an
    outage; any other code is a DirectoryError naming it.
    """
    text = f"{what}: directory error [{code}] {message or 'no message'}"
    if code == REPLY_NOT_FOUND:
        return DirectoryNotFoundError(text)
    return DirectoryError(text)


def transfer_error(code: grpc.StatusCode | None, details: str, what: str) -> TransferError:
    """A failed call on an open channel (Transfer, KeyExchange).

    :class:`~trisa_peer.errors.ChannelBrokenError` when the channel itself is no longer
    usable: its TLS failed (``retry``: the peer may have rotated; re-pin and send once
    more) or the peer refused this node (no retry).
    """
    message = f"{what}: {_name(code)}: {details}"
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return ChannelBrokenError(message, retry=False)
    tls = classify_tls(details)
    if code == grpc.StatusCode.UNAVAILABLE and tls not in (None, TlsFailure.PEER_CLOSED):
        return ChannelBrokenError(message, retry=True)
    return TransferError(message)


def dial_error(
    code: grpc.StatusCode | None,
    details: str,
    *,
    peer: str,
    address: str,
    endpoint: str = "",
    resolve_names: Sequence[str] = (),
) -> HandshakeError:
    """The handshake step a failed probe of a pinned dial to ``peer`` shows failing.

    A refusal by the server carries its step in the message (``step 4 (...): ...``, as
    :func:`abort` sends it); a failed TLS handshake is read from BoringSSL's text.
    ``endpoint`` is the one registered in the directory, ``address`` where it was
    dialled, ``resolve_names`` the endpoints ``--resolve`` maps: a name that does not
    resolve because no ``--resolve`` entry matched says so, not "DNS failed".
    """
    match = _STEP_PREFIX.match(details)
    if match and not 1 <= int(match.group(1)) <= 8:
        match = None  # a peer's text, not one of our step numbers
    if match and code == grpc.StatusCode.UNAVAILABLE:
        # The server could not decide (e.g. its directory is down): it failed closed.
        return HandshakeError(
            f"{peer} could not verify this node: {details[match.end():]}",
            step=Step(int(match.group(1))),
            peer=peer,
            reason=Reason.PEER_DIRECTORY_UNAVAILABLE,
        )
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        step = Step(int(match.group(1))) if match else Step.BIND_CLIENT_RECORD
        text = details[match.end() :] if match else details
        cls: type[HandshakeError] = (
            ChainVerificationError
            if code == grpc.StatusCode.UNAUTHENTICATED
            else PeerNotRegisteredError
        )
        return cls(f"{peer} refused this node: {text}", step=step, peer=peer,
                   reason=Reason.REFUSED_BY_PEER)
    if code == grpc.StatusCode.UNAVAILABLE:
        tls = classify_tls(details)
        if tls is None:
            return TransportSecurityError(
                _unreachable(details, peer=peer, address=address,
                             endpoint=endpoint or address, resolve_names=resolve_names),
                step=Step.PRESENT_CLIENT_CERT,
                peer=peer,
                reason=Reason.UNREACHABLE,
            )
        return tls_error(tls, details, peer=peer)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TransportSecurityError(
            f"no answer from {peer} at {address} within the timeout",
            step=Step.PRESENT_CLIENT_CERT,
            peer=peer,
            reason=Reason.TIMEOUT,
        )
    return TransportSecurityError(
        f"probe call to {peer} failed: {_name(code)}: {details}",
        step=Step.EXCHANGE,
        peer=peer,
        reason=Reason.PROBE_FAILED,
    )


def _unreachable(
    details: str, *, peer: str, address: str, endpoint: str, resolve_names: Sequence[str]
) -> str:
    """Why ``peer`` could not be reached, and the fix, for refused and DNS failures."""
    failure = classify_connect(grpc.StatusCode.UNAVAILABLE, details)
    mapped = address.lower() != endpoint.lower()
    if failure == ConnectFailure.DNS and not mapped and resolve_names:
        given = ", ".join(sorted(resolve_names))
        return (f"no --resolve entry matches {peer}'s registered endpoint {endpoint} "
                f"(--resolve given for {given}), so its host was looked up in DNS; "
                f"use --resolve {endpoint}:ADDRESS")
    if failure == ConnectFailure.DNS:
        return (f"the host of {peer}'s endpoint {endpoint} does not resolve (DNS); if it "
                f"is not in DNS, map it with --resolve {endpoint}:ADDRESS")
    if failure == ConnectFailure.REFUSED and mapped:
        return (f"nothing is listening at {address} (connection refused), where --resolve "
                f"maps {peer}'s endpoint {endpoint}; check the ADDRESS given with --resolve")
    if failure == ConnectFailure.REFUSED:
        return (f"nothing is listening at {address}, {peer}'s endpoint (connection "
                "refused); its node may be down")
    return f"cannot reach {peer} at {address}: {details}"


# What each TLS failure of a pinned dial means: (error class, step, reason, message).
# The message may use {peer}, {details} (gRPC's text) and {why} (the same, shortened).
_TLS_ERRORS: dict[TlsFailure, tuple[type[HandshakeError], HandshakeStep, Reason, str]] = {
    # Our side already accepted the pinned certificate; an mTLS server that rejects
    # the client chain (BoringSSL, step 3) just closes the connection.
    TlsFailure.PEER_CLOSED: (
        ChainVerificationError, Step.VERIFY_CLIENT_CHAIN, Reason.REFUSED_BY_PEER,
        "{peer} closed the connection during the TLS handshake: it did not accept this "
        "node's certificate chain ({details})"),
    TlsFailure.NOT_PINNED: (
        DirectoryMismatchError, Step.BIND_SERVER_RECORD, Reason.CERTIFICATE_MISMATCH,
        "the server presented a certificate other than the one registered in the "
        "directory ({why})"),
    TlsFailure.HOSTNAME: (
        ChainVerificationError, Step.VERIFY_SERVER_CHAIN, Reason.SAN_MISMATCH,
        "server certificate does not match the endpoint host ({why})"),
    TlsFailure.EXPIRED: (
        ChainVerificationError, Step.VERIFY_SERVER_CHAIN, Reason.EXPIRED,
        "server certificate is outside its validity period ({why})"),
    TlsFailure.NOT_YET_VALID: (
        ChainVerificationError, Step.VERIFY_SERVER_CHAIN, Reason.NOT_YET_VALID,
        "server certificate is outside its validity period ({why})"),
    TlsFailure.REVOKED: (
        RevokedError, Step.VERIFY_SERVER_CHAIN, Reason.REVOKED,
        "server certificate revoked ({why})"),
    TlsFailure.OTHER: (
        TransportSecurityError, Step.PRESENT_SERVER_CERT, Reason.TLS_FAILED,
        "could not establish a TLS connection: {why}"),
}


def tls_error(failure: TlsFailure, details: str, *, peer: str) -> HandshakeError:
    """The handshake error for a TLS failure of a dial that pinned the registered leaf."""
    cls, step, reason, message = _TLS_ERRORS[failure]
    text = message.format(peer=peer, details=details, why=_one_line(details))
    return cls(text, step=step, peer=peer, reason=reason)


def closed_channel_error(what: str) -> ChannelBrokenError:
    """grpc raises ``ValueError`` when a call starts on a channel another thread closed
    (the node stopping, or the channel forgotten after a failure): the channel is
    gone, not the peer; dial again."""
    return ChannelBrokenError(f"{what}: the channel was closed", retry=True)
