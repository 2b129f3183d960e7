"""The back-office HTTP API as a Starlette app over a running :class:`TrisaNode`.

Routes (see :mod:`trisa_peer.api.openapi`, the one description of them): send a
transfer, list and show transfers, resolve a pending incoming one, look a VASP up
through the node's directory client, the node's status, the OpenAPI document.

Checked here: every request carries ``Authorization: Bearer TOKEN`` with a token of the
token file (:mod:`trisa_peer.api.auth`), and none carries a token in its query string
(refused with 401 even next to a good header: such a URL ends up in logs and histories);
request bodies are JSON objects of at most :data:`MAX_BODY` bytes with exactly the
documented fields; payloads parse as protojson ``trisa.api.v1beta1.Payload``; decisions
go through :func:`trisa_peer.network.decide.record_decision`, the same rules as
``trisa-peer transfers resolve``. Every failure is a JSON ``{"error": "one line"}``.

Not checked here: TLS and client certificates (the server's listener), the payload's
IVMS101 content (the peer's node validates it; ``send`` does the same), who the token
belongs to (every token may do everything). Never in a reply or a log line: tokens,
payload contents of stored envelopes (``show`` returns metadata only).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .._pb.ivms101 import identity_pb2  # noqa: F401 - Any fields resolve once imported
from .._pb.trisa.api.v1beta1 import api_pb2
from .._pb.trisa.data.generic.v1beta1 import transaction_pb2  # noqa: F401 - as above
from ..clock import utcnow
from ..errors import (
    ConfigurationError,
    DirectoryError,
    DirectoryNotFoundError,
    HandshakeError,
    PeerNotRegisteredError,
    StoreError,
    TransferError,
    TrisaPeerError,
)
from ..network.decide import error_code, record_decision
from ..network.node import TrisaNode, shown_resolution
from ..reload import check_own_identity, days_left, expiry_notice
from .auth import TokenFile
from .openapi import document

__all__ = ["MAX_BODY", "build_app"]

log = logging.getLogger("trisa_peer.api")

#: largest request body accepted (bytes): a Travel Rule payload is a few kilobytes
MAX_BODY = 256 * 1024
#: query parameters that look like a credential: refused wherever they appear
TOKEN_PARAMS = frozenset({"token", "access_token", "bearer", "api_token", "auth"})


class _Problem(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def _error(status: int, text: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": text.splitlines()[0][:500] if text else "error"},
                        status_code=status, headers=headers or None)


class BearerAuth:
    """ASGI middleware: 401 unless the bearer token is one of ``tokens``."""

    def __init__(self, app: ASGIApp, tokens: TokenFile) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is not None:
            response = _error(401, problem, **{"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _problem(self, scope: Scope) -> str | None:
        from urllib.parse import parse_qsl

        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        names = {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}
        if names & TOKEN_PARAMS:
            return "a token in the query string is refused: send Authorization: Bearer"
        values = [v for k, v in scope.get("headers", []) if k == b"authorization"]
        if not values:
            return "authentication required: Authorization: Bearer TOKEN"
        if len(values) > 1:
            return "more than one Authorization header"
        scheme, _, token = values[0].decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "authentication required: Authorization: Bearer TOKEN"
        if not self.tokens.accepts(token.strip()):
            return "unknown token"
        return None


async def _body(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise _Problem(400, "the body must be application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise _Problem(413, f"the body is larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _Problem(413, f"the body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    try:
        value = json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise _Problem(400, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise _Problem(400, "the body must be a JSON object")
    return value


def _fields(body: dict[str, Any], required: set[str], optional: set[str]) -> None:
    unknown = sorted(set(body) - required - optional)
    if unknown:
        raise _Problem(400, f"unknown field {unknown[0][:40]!r}")
    missing = sorted(required - set(body))
    if missing:
        raise _Problem(400, f"missing field {missing[0]!r}")


def _text(body: dict[str, Any], name: str, *, limit: int, default: str = "") -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or (name in body and not value) or len(value) > limit:
        raise _Problem(400, f"{name}: a string of 1-{limit} characters")
    return value


def _int_param(request: Request, name: str, default: int | None, low: int,
               high: int) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise _Problem(400, f"{name}: an integer {low}-{high}")
    return int(text)


def _handled(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request],
                                                                       Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except _Problem as exc:
            return _error(exc.status, str(exc))
        except StoreError as exc:  # the database is down or closed: retry later
            log.warning("API %s %s: %s", request.method, request.url.path, exc)
            return _error(503, "the transfer store is unavailable; retry later")
        except Exception as exc:  # a bug: the type only (a message may hold payload data)
            log.error("API %s %s failed: %s", request.method, request.url.path,
                      type(exc).__name__)
            return _error(500, "internal error (logged)")
    endpoint.__name__ = fn.__name__
    return endpoint


def build_app(node: TrisaNode, tokens: TokenFile) -> ASGIApp:
    """The API over ``node`` (started or not), guarded by ``tokens``."""

    async def status(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(_status, node))

    async def list_transfers(request: Request) -> Response:
        unknown = sorted(set(request.query_params) - {"limit", "before", "peer"})
        if unknown:
            raise _Problem(400, f"unknown parameter {unknown[0][:40]!r}")
        limit = _int_param(request, "limit", 100, 1, 500) or 100
        before = _int_param(request, "before", None, 0, 2**63 - 1)
        peer = request.query_params.get("peer") or None
        if peer is not None and len(peer) > 253:
            raise _Problem(400, "peer: at most 253 characters")
        rows = await run_in_threadpool(node.store.summaries, peer=peer, limit=limit,
                                       before=before)
        out = [{"envelope_id": r.envelope_id, "peer": r.peer, "direction": r.direction,
                "state": r.state, "messages": r.messages, "first_at": r.first_at,
                "last_at": r.last_at, "key": r.key} for r in rows]
        nxt = rows[-1].key if len(rows) == limit else None
        return JSONResponse({"transfers": out, "next": nxt})

    async def show_transfer(request: Request) -> Response:
        eid = request.path_params["envelope_id"]
        rows = await run_in_threadpool(node.store.exchange, eid)
        if not rows:
            raise _Problem(404, f"no transfer {eid[:64]!r}")
        messages = [{
            "seq": r.seq, "peer": r.peer, "direction": r.direction, "kind": r.kind,
            "state": r.state, "error_code": r.error_code, "attempt": r.attempt,
            "created_at": r.created_at, "updated_at": r.updated_at,
            "deadline": r.deadline or None,
            "decision": shown_resolution(r.resolution) if r.resolution else None,
        } for r in rows]
        return JSONResponse({"envelope_id": eid, "messages": messages})

    async def send_transfer(request: Request) -> Response:
        body = await _body(request)
        _fields(body, {"peer", "payload"}, {"envelope_id"})
        peer = _text(body, "peer", limit=253)
        eid = _text(body, "envelope_id", limit=128) or None
        if not isinstance(body["payload"], dict):
            raise _Problem(400, "payload: a protojson trisa.api.v1beta1.Payload object")
        try:
            payload = json_format.ParseDict(body["payload"], api_pb2.Payload())
        except (json_format.ParseError, TypeError, ValueError) as exc:
            raise _Problem(400, f"payload: not a protojson Payload: {exc}") from None
        try:
            result = await run_in_threadpool(node.send, peer, payload, envelope_id=eid)
        except (HandshakeError, TransferError, DirectoryError) as exc:
            raise _Problem(502, f"{peer}: {exc}") from None
        except StoreError:
            raise
        except TrisaPeerError as exc:
            raise _Problem(400, str(exc)) from None
        out: dict[str, Any] = {
            "envelope_id": result.envelope_id, "peer": result.peer, "state": result.state,
            "transfer_state": api_pb2.TransferState.Name(
                api_pb2.TransferState.ValueType(result.transfer_state)),
        }
        if result.error is not None:
            out["error"] = json_format.MessageToDict(result.error,
                                                     preserving_proto_field_name=True)
        if result.payload is not None:
            out["payload"] = json_format.MessageToDict(result.payload,
                                                       preserving_proto_field_name=True)
        return JSONResponse(out)

    async def resolve_transfer(request: Request) -> Response:
        eid = request.path_params["envelope_id"]
        body = await _body(request)
        _fields(body, {"decision"}, {"code", "message"})
        decision = body["decision"]
        if decision not in ("accept", "reject"):
            raise _Problem(400, "decision: accept or reject")
        code = 0
        message = "the transfer was rejected on review"
        if decision == "accept":
            if "code" in body or "message" in body:
                raise _Problem(400, "code and message belong to a rejection")
        else:
            raw = body.get("code")
            if not isinstance(raw, str | int) or isinstance(raw, bool):
                raise _Problem(400, "code: a TRISA error code name or number")
            try:
                code = error_code(str(raw), what="code")
            except ConfigurationError as exc:
                raise _Problem(400, str(exc)) from None
            message = _text(body, "message", limit=1000, default=message)
        if not await run_in_threadpool(node.store.exchange, eid):
            raise _Problem(404, f"no transfer {eid[:64]!r}")
        try:
            row = await run_in_threadpool(record_decision, node.store, eid, code=code,
                                          message=message)
        except ConfigurationError as exc:
            raise _Problem(409, str(exc)) from None
        log.info("envelope=%s decision %s recorded through the API", row.envelope_id,
                 decision if not code else f"reject:{code}")
        return JSONResponse({"envelope_id": row.envelope_id, "peer": row.peer,
                             "decision": "accept" if not code else f"reject:{code}",
                             "deadline": row.deadline or None})

    async def lookup_vasp(request: Request) -> Response:
        unknown = sorted(set(request.query_params) - {"common_name", "vasp_id"})
        if unknown:
            raise _Problem(400, f"unknown parameter {unknown[0][:40]!r}")
        name = request.query_params.get("common_name", "")
        vasp_id = request.query_params.get("vasp_id", "")
        if bool(name) == bool(vasp_id):
            raise _Problem(400, "give one of common_name and vasp_id")
        if len(name) > 253 or len(vasp_id) > 128:
            raise _Problem(400, "common_name or vasp_id too long")
        try:
            record = await run_in_threadpool(node.directory.lookup, common_name=name or None,
                                             vasp_id=vasp_id or None)
        except (DirectoryNotFoundError, PeerNotRegisteredError) as exc:
            raise _Problem(404, str(exc)) from None
        except (DirectoryError, HandshakeError, TransferError) as exc:
            raise _Problem(502, str(exc)) from None
        except ConfigurationError as exc:
            raise _Problem(400, str(exc)) from None
        return JSONResponse(_vasp(record))

    async def openapi(request: Request) -> Response:
        return JSONResponse(document())

    routes = [
        Route("/status", _handled(status), methods=["GET"]),
        Route("/transfers", _handled(list_transfers), methods=["GET"]),
        Route("/transfers", _handled(send_transfer), methods=["POST"]),
        Route("/transfers/{envelope_id}", _handled(show_transfer), methods=["GET"]),
        Route("/transfers/{envelope_id}/resolve", _handled(resolve_transfer),
              methods=["POST"]),
        Route("/vasps", _handled(lookup_vasp), methods=["GET"]),
        Route("/openapi.json", _handled(openapi), methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, "no such route")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, "method not allowed")

    async def crashed(request: Request, exc: Exception) -> Response:
        log.error("API %s %s failed: %s", request.method, request.url.path,
                  type(exc).__name__)
        return _error(500, "internal error (logged)")

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed,
                                                       500: crashed})
    return BearerAuth(app, tokens)


def _status(node: TrisaNode) -> dict[str, Any]:
    material = node.material.current()
    identity, leaf, now = material.identity, material.identity.leaf, utcnow()
    problem: str | None = None
    try:
        check_own_identity(identity, material.pool, now)
    except TrisaPeerError as exc:
        problem = str(exc)
    reachable, error = True, None
    probe = getattr(node.directory, "status", None)
    if probe is not None:
        try:
            probe()
        except TrisaPeerError as exc:
            reachable, error = False, str(exc)
    return {
        "common_name": identity.common_name,
        "serial": f"{leaf.serial_number:#x}",
        "fingerprint": identity.fingerprint,
        "not_after": f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
        "days_left": int(days_left(leaf, now)),
        "certificate_problem": problem,
        "expiry_warning": expiry_notice(leaf, now),
        "directory": {"reachable": reachable, "error": error},
    }


def _vasp(record: Any) -> dict[str, Any]:
    from cryptography.hazmat.primitives import hashes

    leaf = record.identity_certificate
    return {
        "id": record.id, "common_name": record.common_name, "endpoint": record.endpoint,
        "registered_directory": record.registered_directory, "name": record.name,
        "country": record.country, "verified_on": record.verified_on,
        "identity_fingerprint": leaf.fingerprint(hashes.SHA256()).hex() if leaf else None,
        "identity_revoked": record.identity_revoked,
        "identity_not_after": (f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
                               if leaf else None),
        "has_signing_certificate": record.signing_certificate is not None,
    }
