"""Server-side enforcement of steps 2-4 before any servicer code runs.

gRPC interceptors cannot see certificates (``HandlerCallDetails`` has only the method
and metadata), so :class:`PeerVerificationInterceptor` lets gRPC resolve the handler,
then rebuilds it with a behaviour that first reads ``context.auth_context()``, asks the
:class:`~trisa_peer.authenticate.PeerAuthenticator` (a dictionary hit once a certificate
has been decided) and aborts the call on rejection (:func:`~.status.abort`). All four
cardinalities are wrapped. Handlers obtain the verified counterparty with
:func:`peer_from_context`.

The handlers it wraps receive raw bytes (:mod:`~trisa_peer.transport.raw`), so a refused
caller's request is never parsed: the check runs first, the parse after it.

Streaming calls are checked again during their life (issue 14): before every message
and, while idle, every ``stream_recheck`` seconds (:mod:`.streamwatch`), so a stream
opened before a revocation or before the end of a reissue grace is cut once its
peer's cached decision expires.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from ..authenticate import PeerAuthenticator, VerifiedPeer
from ..controls import PeerControls
from ..errors import HandshakeError
from ..peerlimits import peer_limiter
from .metadata import BINDING_METADATA
from .status import abort, abort_unverified, status_for
from .streamwatch import DEFAULT_STREAM_RECHECK, StreamWatch

__all__ = [
    "BINDING_METADATA",
    "PeerVerificationInterceptor",
    "peer_from_context",
    "status_for",
    "verified_peer",
]

log = logging.getLogger("trisa_peer.transport")


def _first(ctx: dict[str, list[bytes]], key: str) -> bytes | None:
    values = ctx.get(key)
    return values[0] if values else None


def _authenticate(authenticator: PeerAuthenticator, context: grpc.ServicerContext) -> VerifiedPeer:
    ctx = context.auth_context()
    chain = ctx.get("x509_pem_cert_chain")
    return authenticator.authenticate_pem(
        _first(ctx, "x509_pem_cert"), b"".join(chain) if chain else None
    )


def peer_from_context(
    context: grpc.ServicerContext,
    identify: Callable[[bytes | None], VerifiedPeer] | None = None,
) -> VerifiedPeer:
    """The counterparty of the current call, as the interceptor verified it.

    On a server in reference mode (``verify_peers=False``, no interceptor) pass
    ``identify`` (:meth:`~trisa_peer.authenticate.PeerAuthenticator.identify_pem`): the
    caller is then only identified by its certificate, not verified.
    """
    peer = getattr(context, _ATTR, None)
    if isinstance(peer, VerifiedPeer):
        return peer
    if identify is None:
        raise RuntimeError("peer_from_context called outside a verified TRISA server")
    try:
        peer = identify(_first(context.auth_context(), "x509_pem_cert"))
    except HandshakeError as exc:
        abort(context, exc)
    setattr(context, _ATTR, peer)
    return peer


_ATTR = "_trisa_peer_verified"
#: the call a dialling node makes first on a new channel: the binding is stated on it
#: only, so the Transfer hot path carries no extra metadata
_PROBE = "/trisa.api.v1beta1.TRISAHealth/Status"


def verified_peer(context: grpc.ServicerContext) -> VerifiedPeer | None:
    """The peer the interceptor verified for this call, or None (no interceptor)."""
    peer = getattr(context, _ATTR, None)
    return peer if isinstance(peer, VerifiedPeer) else None


class PeerVerificationInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuse every call whose peer fails steps 2-4; never reaches the servicer."""

    def __init__(
        self, authenticator: PeerAuthenticator, controls: PeerControls | None = None,
        *, stream_recheck: float = DEFAULT_STREAM_RECHECK,
    ) -> None:
        self.authenticator = authenticator
        self.limits = peer_limiter(controls)  # per-peer limits; None when none is set
        #: re-checks the peers of open streams (:mod:`.streamwatch`)
        self.streams = StreamWatch(stream_recheck)

    def _recheck(self, context: grpc.ServicerContext) -> None:
        """The peer decision again, during a stream (cached until it expires)."""
        try:
            peer = _authenticate(self.authenticator, context)
        except HandshakeError as exc:
            abort(context, exc)
        setattr(context, _ATTR, peer)

    def _rechecked(
        self, requests: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        """``requests``, re-checking the peer before each message is handed on."""
        for request in requests:
            self._recheck(context)
            yield request

    def _watched(self, context: grpc.ServicerContext) -> Callable[[], None]:
        return self.streams.open(context, lambda: _authenticate(self.authenticator, context))

    def _check(self, context: grpc.ServicerContext, attest: bool = False) -> VerifiedPeer:
        try:
            peer = _authenticate(self.authenticator, context)
            if self.limits is not None:  # released when the call ends, however it ends
                release = self.limits.admit(peer.common_name.lower())
                if not context.add_callback(release):
                    release()
        except HandshakeError as exc:
            abort(context, exc)
        except Exception:
            # Fail closed on anything unexpected, without telling the caller internals.
            log.exception("peer verification failed unexpectedly; refusing the call")
            abort_unverified(context)
        setattr(context, _ATTR, peer)
        if attest:  # the probe a dialling peer makes (check's trace reads it)
            context.send_initial_metadata(
                ((BINDING_METADATA, f"{peer.fingerprint} {peer.record.id}"),))
        return peer

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler_call_details.method == _PROBE:
            def check(context: grpc.ServicerContext) -> VerifiedPeer:
                return self._check(context, attest=True)
        else:
            check = self._check
        kw: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            inner_uu = handler.unary_unary

            def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
                check(context)
                return inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            def unary_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                check(context)
                yield from inner_us(request, context)

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)
        if handler.stream_unary:
            inner_su = handler.stream_unary

            def stream_unary(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                check(context)
                stop = self._watched(context)
                try:
                    return inner_su(self._rechecked(requests, context), context)
                finally:
                    stop()

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
        inner_ss = handler.stream_stream

        def stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            check(context)
            stop = self._watched(context)
            try:
                yield from inner_ss(self._rechecked(requests, context), context)
            finally:
                stop()

        return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)
