"""One log line and one event per request a gRPC server answers (the directory).

:class:`RequestLog` is a server interceptor: each unary call starts a call
(:func:`trisa_peer.events.begin_call`, so every line it logs shares a request id), and
when it ends, logs ``service=... method=... status=... latency=...`` on
``trisa_peer.requests`` (health checks at DEBUG: probes every few seconds are noise)
and emits :func:`trisa_peer.events.request`. The method label comes from the server's
own method table (an unknown method never reaches a handler), the status from the
gRPC status code: both bounded. Requests, replies, metadata and peer addresses are
not logged. Streaming methods pass through unobserved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from .. import events

__all__ = ["RequestLog"]

log = logging.getLogger("trisa_peer.requests")

_QUIET = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")


class RequestLog(grpc.ServerInterceptor):  # type: ignore[misc]
    """Logs and counts each unary request of ``service`` (e.g. ``"directory"``)."""

    def __init__(self, service: str) -> None:
        self.service = service

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        full = str(details.method)
        package, _, method = full.lstrip("/").rpartition("/")
        level = logging.DEBUG if package in _QUIET else logging.INFO
        inner = handler.unary_unary
        service = self.service

        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            events.begin_call()
            status = "UNKNOWN"
            try:
                reply = inner(request, context)
                status = _status(context, "OK")
                return reply
            except BaseException:
                status = _status(context, "UNKNOWN")
                raise
            finally:
                took = events.elapsed()
                log.log(level, "service=%s method=%s status=%s latency=%.3fs", service,
                        method, status, took,
                        extra={"event": "request", "service": service, "method": method,
                               "status": status, "latency": round(took, 6)})
                events.request(service, method, status, took)

        return grpc.unary_unary_rpc_method_handler(
            observed, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _status(context: grpc.ServicerContext, default: str) -> str:
    try:
        code = context.code()
    except Exception:  # an older grpcio without ServicerContext.code()
        return default
    return code.name if isinstance(code, grpc.StatusCode) else default
