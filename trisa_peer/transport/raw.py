"""Handlers that receive raw bytes: the peer is checked first, the request parsed after.

A handler registered the usual way (the generated ``add_*Servicer_to_server``) has
gRPC deserialise the request before any Python code of ours runs: the peer check of
steps 3-4 comes too late, a caller with any certificate the TLS layer accepts gets
``INTERNAL: Exception deserializing request!`` instead of its step refusal, grpcio logs
a traceback and keeps about 19 KiB per request that fails to parse (grpcio 1.85,
cf. grpc/grpc#36908; DESIGN.md §7).

:func:`add_raw_servicer` registers the same servicer with *no* request deserialiser
(the behaviour receives ``bytes``). The verifying interceptor wraps this raw handler, so
the order of one call is: steps 3-4 (refusal: the step's status and message, nothing
parsed), then the parse, then the servicer. A body that does not parse as the method's
request message is answered with the servicer's own reply for it when it has one
(``undecodable_reply(method)``, e.g. a TRISA BAD_REQUEST envelope for TRISANetwork),
else ``INVALID_ARGUMENT``; one log line per peer and reason per interval
(:class:`~trisa_peer.logtext.RefusalLimiter`), never a traceback.

Client-streaming calls: the peer is checked once per call (by the interceptor), each
message is parsed on its own. A bidirectional stream is served one request at a time:
the servicer's stream method is called with a one-message iterator for each request,
so an undecodable message gets its own answer and the stream continues. That is right
for the streams served here (TRISANetwork/TransferStream, server reflection), whose
answers each depend on one request only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message

from ..authenticate import REFUSAL_LOG_INTERVAL
from ..logtext import RefusalLimiter, peer_text
from .interceptor import verified_peer
from .status import abort_undecodable

__all__ = [
    "REFUSAL_LOG_INTERVAL",
    "UNDECODABLE",
    "UndecodableReply",
    "add_raw_servicer",
    "log_undecodable",
]

log = logging.getLogger("trisa_peer.transport")


#: The ``reason`` of a log line for a request body that is not the method's message.
UNDECODABLE = "undecodable"

#: ``undecodable_reply(method)``: the reply for an undecodable request to ``method``
#: (e.g. ``"Transfer"``), or None to refuse it with INVALID_ARGUMENT.
UndecodableReply = Callable[[str], Message | None]

Parse = Callable[[bytes], Any]


class _Registrar(Protocol):
    def add_generic_rpc_handlers(self, handlers: Any) -> None: ...
    def add_registered_method_handlers(self, name: str, handlers: Any) -> None: ...


class _Capture:
    """Stands in for a ``grpc.Server`` to collect what a generated ``add_*`` registers."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers also come through add_registered_method_handlers

    def add_registered_method_handlers(self, name: str, handlers: Any) -> None:
        self.services[name] = dict(handlers)


def _address(context: grpc.ServicerContext) -> str:
    """The caller's host (``ipv4:127.0.0.1:5555`` -> ``127.0.0.1``): one key per host,
    not per connection, so reconnecting does not multiply log lines."""
    peer = str(context.peer() or "")
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rsplit(":", 1)[0]
        return host.strip("[]")
    return peer


def log_undecodable(
    refusals: RefusalLimiter, context: grpc.ServicerContext, method: str, what: str
) -> None:
    """One (aggregated) line for an undecodable request: the verified peer's name and
    fingerprint when the interceptor set one on ``context``, else the caller's address."""
    peer = verified_peer(context)
    address = _address(context)
    who = peer.fingerprint if peer is not None else address
    report = refusals.refuse((who, method, UNDECODABLE))
    if not report.log:
        return
    count = f" count={report.count} in {report.seconds:.0f}s" if report.count > 1 else ""
    if peer is not None:
        log.info("peer=%s fingerprint=%s address=%s method=%s outcome=reject reason=%s%s "
                 "detail=\"request is not a %s\"", peer_text(peer.common_name),
                 peer.fingerprint, peer_text(address), method, UNDECODABLE, count, what)
    else:
        log.info("address=%s method=%s outcome=reject reason=%s%s "
                 "detail=\"request is not a %s\"", peer_text(address), method, UNDECODABLE,
                 count, what)


class _Raw:
    """What the raw behaviours of one method share."""

    def __init__(self, service: str, method: str, parse: Parse,
                 reply: UndecodableReply | None, refusals: RefusalLimiter) -> None:
        self.full = f"/{service}/{method}"
        self.method = method
        self.parse_fn = parse
        self.reply = reply
        self.refusals = refusals
        owner = getattr(parse, "__self__", None)  # SecureEnvelope.FromString -> the class
        self.what = getattr(owner, "__name__", "valid request")

    def parse(self, raw: bytes) -> Any:
        """The request message, or None when ``raw`` does not parse as one."""
        try:
            return self.parse_fn(raw)
        except Exception:  # DecodeError, or anything else a hostile body provokes
            return None

    def undecodable(self, context: grpc.ServicerContext) -> Message:
        log_undecodable(self.refusals, context, self.full, self.what)
        reply = self.reply(self.method) if self.reply is not None else None
        if reply is None:
            abort_undecodable(context, self.what)
        return reply


def _raw_handler(raw: _Raw, handler: Any) -> Any:
    kw: dict[str, Any] = {"request_deserializer": None,
                          "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        def unary_unary(body: bytes, context: grpc.ServicerContext) -> Any:
            request = raw.parse(body)
            if request is None:
                return raw.undecodable(context)
            return inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        def unary_stream(body: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
            request = raw.parse(body)
            if request is None:
                yield raw.undecodable(context)
                return
            yield from inner_us(request, context)

        return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        def parsed(bodies: Iterable[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
            for body in bodies:
                request = raw.parse(body)
                if request is None:
                    log_undecodable(raw.refusals, context, raw.full, raw.what)
                    abort_undecodable(context, raw.what)
                yield request

        def stream_unary(bodies: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            return inner_su(parsed(bodies, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
    inner_ss = handler.stream_stream

    def stream_stream(bodies: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
        for body in bodies:
            request = raw.parse(body)
            if request is None:
                yield raw.undecodable(context)
                continue
            yield from inner_ss(iter((request,)), context)

    return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)


def add_raw_servicer(
    server: _Registrar,
    register: Callable[[Any, Any], None],
    servicer: Any,
    *,
    refusals: RefusalLimiter,
    undecodable_reply: UndecodableReply | None = None,
) -> list[str]:
    """Register ``servicer`` on ``server`` as ``register`` (a generated
    ``add_*Servicer_to_server``, including grpc's health and reflection ones) would, but
    with raw-bytes handlers; returns the service names.

    ``undecodable_reply`` defaults to the servicer's ``undecodable_reply`` method if it
    has one.
    """
    if undecodable_reply is None:
        undecodable_reply = getattr(servicer, "undecodable_reply", None)
    capture = _Capture()
    register(servicer, capture)
    if not capture.services:
        raise TypeError(f"{register!r} registered no service")
    for name, handlers in capture.services.items():
        raw = {
            method: _raw_handler(
                _Raw(name, method, handler.request_deserializer, undecodable_reply, refusals),
                handler,
            )
            for method, handler in handlers.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, raw),))
        server.add_registered_method_handlers(name, raw)
    return list(capture.services)
