"""The TRISADirectory gRPC service over a :class:`~.service.Directory`.

Errors are gRPC status codes with one-line messages (the reply ``error`` fields are
never filled, as in the GDS), mapped by :func:`trisa_peer.transport.status.status_for`.
The server also answers the standard ``grpc.health.v1.Health`` service and server
reflection.

Every service is registered with raw-bytes handlers (:mod:`trisa_peer.transport.raw`):
the request is parsed by our code, so a body that is not the method's message gets
``INVALID_ARGUMENT`` (and one aggregated log line per caller address), never grpcio's
``INTERNAL`` with a traceback and ~19 KiB kept per request. gRPC refuses requests over
:data:`MAX_REQUEST_BYTES` with ``RESOURCE_EXHAUSTED``.

Lookup goes through the reply cache (:mod:`.replycache`, ``lookup_cache`` entries;
0 turns it off): it is registered bytes in, bytes out, so a cached reply is sent as
the stored serialised ``LookupReply`` (the same bytes and headers as the uncached
path), after a per-request check that no commit changed it.

::

    store = SQLStore("gds.db")  # or SQLStore("postgresql://user@host/gds")
    server = DirectoryServer(store, listen="127.0.0.1:0")
    port = server.start()
    ...
    server.stop()
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from .._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from .._pb.trisa.gds.api.v1beta1 import api_pb2_grpc as gds_grpc
from ..authenticate import REFUSAL_LOG_INTERVAL
from ..csr import CSR_METADATA
from ..errors import CertificateError, ConfigurationError, StoreError, TrisaPeerError
from ..limits import server_options
from ..logtext import RefusalLimiter
from ..netutil import split_host_port
from ..sectigo.client import SectigoClient
from ..transport.listen import listen_and_start
from ..transport.raw import add_raw_servicer, log_undecodable
from ..transport.requestlog import RequestLog
from ..transport.status import abort, abort_undecodable
from .convert import enum_name
from .grace import lookup_grace, lookup_metadata
from .replycache import DEFAULT_MAX_ENTRIES, Entry, LookupCache
from .service import DEFAULT_DIRECTORY_ID, Directory, RegisterResult
from .store import VERIFIED, DirectoryStore, SQLStore

if TYPE_CHECKING:
    from .issuance import IssuanceResult

__all__ = ["MAX_REQUEST_BYTES", "SERVICE_NAME", "DirectoryServer", "DirectoryServicer",
           "is_loopback"]

log = logging.getLogger(__name__)

SERVICE_NAME = "trisa.gds.api.v1beta1.TRISADirectory"
LOOKUP_METHOD = f"/{SERVICE_NAME}/Lookup"

#: gRPC's receive limit for the directory (``grpc.max_receive_message_length``) instead
#: of the 4 MiB default: 256 KiB. The largest request is Register: an IVMS101 legal
#: person, four contacts, the endpoint and names, categories and the TRIXO
#: questionnaire, all short text (a full upstream registration is a few KiB, no
#: certificates or CSRs); Lookup, Search, Verification, VerifyContact, Status, health
#: checks and reflection requests are under 1 KiB.
MAX_REQUEST_BYTES = 256 * 1024

T = TypeVar("T")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DirectoryServicer(gds_grpc.TRISADirectoryServicer):
    """Maps each RPC onto :class:`Directory` and its errors onto status codes."""

    def __init__(self, directory: Directory, *, cache: LookupCache | None = None,
                 refusals: RefusalLimiter | None = None) -> None:
        self.directory = directory
        self.cache = cache
        self.refusals = refusals or RefusalLimiter(interval=REFUSAL_LOG_INTERVAL)

    def _call(
        self,
        context: grpc.ServicerContext,
        fn: Callable[[], T],
        conflict: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION,
    ) -> T:
        try:
            return fn()
        except TrisaPeerError as exc:
            if isinstance(exc, StoreError):
                log.error("directory store failure: %s", exc)
            abort(context, exc, conflict=conflict)

    def Lookup(
        self, request: gds_pb2.LookupRequest, context: grpc.ServicerContext
    ) -> gds_pb2.LookupReply:
        reply, headers = self._lookup(request, context)
        if headers:
            context.send_initial_metadata(headers)
        return reply

    def _lookup(
        self, request: gds_pb2.LookupRequest, context: grpc.ServicerContext
    ) -> tuple[gds_pb2.LookupReply, tuple[tuple[str, str | bytes], ...]]:
        reply: gds_pb2.LookupReply = self._call(
            context,
            lambda: self.directory.lookup(vasp_id=request.id, common_name=request.common_name),
        )
        # a reissue's grace travels as response headers (directory/grace.py)
        headers = self._call(context, lambda: lookup_metadata(
            self.directory, reply.id, reply.identity_certificate))
        return reply, headers

    def lookup_bytes(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        """Lookup from request bytes to reply bytes through the reply cache
        (:mod:`.replycache`); registered with identity (de)serializers."""
        cache = self.cache
        assert cache is not None  # registered only with a cache
        try:
            seq = cache.check()
        except TrisaPeerError as exc:
            self._call(context, functools.partial(_reraise, exc))
        entry = cache.get(body, self.directory.utcnow)
        if entry is None:
            entry = self._lookup_entry(body, seq, context)
        if entry[1]:
            context.send_initial_metadata(entry[1])
        return entry[0]

    def _lookup_entry(self, body: bytes, seq: int, context: grpc.ServicerContext) -> Entry:
        """A miss: the reply read from the store, kept when it was found by id or by
        exact common name (a name-index match or an error is never kept)."""
        assert self.cache is not None
        try:
            request = gds_pb2.LookupRequest.FromString(body)
        except Exception:  # DecodeError, or whatever a hostile body provokes
            log_undecodable(self.refusals, context, LOOKUP_METHOD, "LookupRequest")
            abort_undecodable(context, "LookupRequest")
        store = self.cache.store
        vasp_id, name = request.id.strip(), request.common_name
        found = self._call(context, lambda: store.get_lookup(vasp_id=vasp_id) if vasp_id
                           else store.get_lookup(common_name=name) if name.strip() else None)
        if found is None or found[0] != VERIFIED:
            reply, headers = self._lookup(request, context)  # errors, names index
            return reply.SerializeToString(), headers, None
        reply = gds_pb2.LookupReply.FromString(found[1])
        headers, until = self._call(context, lambda: lookup_grace(
            self.directory, reply.id, reply.identity_certificate))
        entry: Entry = (found[1], headers, until)  # the bytes the store keeps
        self.cache.put(body, reply.id, entry, seq)
        return entry

    def Search(
        self, request: gds_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> gds_pb2.SearchReply:
        from .._pb.trisa.gds.models.v1beta1 import models_pb2

        categories = [enum_name(models_pb2.BusinessCategory, c) for c in request.business_category]
        categories.extend(request.vasp_category)
        rows = self._call(
            context,
            lambda: self.directory.search(
                names=list(request.name),
                websites=list(request.website),
                countries=list(request.country),
                categories=categories,
            ),
        )
        reply = gds_pb2.SearchReply()
        for row in rows:
            reply.results.add(
                id=row.id,
                registered_directory=row.registered_directory,
                common_name=row.common_name,
                endpoint=row.endpoint,
            )
        return reply

    def Register(
        self, request: gds_pb2.RegisterRequest, context: grpc.ServicerContext
    ) -> gds_pb2.RegisterReply:
        csrs = [bytes(v) if isinstance(v, bytes) else v.encode("latin-1")
                for k, v in context.invocation_metadata() or () if k == CSR_METADATA]

        def register() -> RegisterResult:
            if len(csrs) > 1:
                raise CertificateError(f"the call carries {len(csrs)} CSRs; send one")
            return self.directory.register(request, csr=csrs[0] if csrs else None)

        result = self._call(context, register, grpc.StatusCode.ALREADY_EXISTS)
        vasp = result.vasp
        return gds_pb2.RegisterReply(
            id=vasp.id,
            registered_directory=vasp.registered_directory,
            common_name=vasp.common_name,
            status=vasp.verification_status,
            message=result.message,
            pkcs12password=result.pkcs12password,
        )

    def VerifyContact(
        self, request: gds_pb2.VerifyContactRequest, context: grpc.ServicerContext
    ) -> gds_pb2.VerifyContactReply:
        state, message = self._call(
            context, lambda: self.directory.verify_contact(request.id, request.token)
        )
        return gds_pb2.VerifyContactReply(status=state, message=message)

    def Verification(
        self, request: gds_pb2.VerificationRequest, context: grpc.ServicerContext
    ) -> gds_pb2.VerificationReply:
        return self._call(
            context,
            lambda: self.directory.verification(
                vasp_id=request.id, common_name=request.common_name
            ),
        )

    def Status(
        self, request: gds_pb2.HealthCheck, context: grpc.ServicerContext
    ) -> gds_pb2.ServiceState:
        return self.directory.status()


def _reraise(exc: Exception) -> NoReturn:
    raise exc


class _LookupAsBytes:
    """Stands in for the ``grpc.Server`` in :func:`add_raw_servicer` of the directory
    service, replacing its raw Lookup handler with ``servicer.lookup_bytes``: bytes in,
    bytes out (a cached reply is sent as it is, no protobuf parse or serialise per
    call; an undecodable body is answered by ``lookup_bytes`` itself)."""

    def __init__(self, target: Any, servicer: DirectoryServicer) -> None:
        self.target = target
        self.servicer = servicer

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # made again from the swapped handlers below

    def add_registered_method_handlers(self, name: str, handlers: Any) -> None:
        swapped = dict(handlers)
        if self.servicer.cache is not None and "Lookup" in swapped:
            swapped["Lookup"] = grpc.unary_unary_rpc_method_handler(
                self.servicer.lookup_bytes, request_deserializer=None,
                response_serializer=None)  # None: grpc sends the bytes as they are
        self.target.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, swapped),))
        self.target.add_registered_method_handlers(name, swapped)


class DirectoryServer:
    """A TRISADirectory server on ``listen`` (``host:port``; port 0 picks one).

    ``store`` is a :class:`~.store.DirectoryStore` (or a ready :class:`Directory`).
    ``tls`` is ``(cert_pem, key_pem)`` for one-way TLS (what GDS clients expect), or
    ``None`` for plaintext, which is only allowed on a loopback address. ``sectigo``
    is kept for in-process issuance (:meth:`accept`). ``handshake_timeout`` /
    ``idle_timeout``: see :mod:`trisa_peer.limits` (default 5 s and 300 s).
    ``lookup_cache``: how many Lookup replies the reply cache keeps (0: no cache);
    see :mod:`.replycache` for why a cached reply is never stale.
    """

    def __init__(
        self,
        store: DirectoryStore | Directory,
        *,
        listen: str = "127.0.0.1:0",
        tls: tuple[bytes, bytes] | None = None,
        sectigo: SectigoClient | None = None,
        directory_id: str = DEFAULT_DIRECTORY_ID,
        outbox_dir: str | Path | None = None,
        max_workers: int = 8,
        handshake_timeout: float | None = None,
        idle_timeout: float | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        refusal_log_interval: float = REFUSAL_LOG_INTERVAL,
        lookup_cache: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.max_request_bytes = max_request_bytes
        #: entries of the Lookup reply cache (0: none; :mod:`.replycache`)
        self.lookup_cache = lookup_cache
        self.cache: LookupCache | None = None
        self.refusals = RefusalLimiter(interval=refusal_log_interval)
        if isinstance(store, Directory):
            self.directory = store
        else:
            self.directory = Directory(store, directory_id=directory_id, outbox_dir=outbox_dir)
        self.listen = listen
        self.tls = tls
        self.sectigo = sectigo
        self.max_workers = max_workers
        self.options = server_options(handshake=handshake_timeout, idle=idle_timeout)
        try:
            host = split_host_port(listen, allow_port_zero=True, default_host="")[0]
        except ValueError as exc:
            raise ConfigurationError(f"directory listen address: {exc}") from exc
        if tls is None and not is_loopback(host):
            raise ConfigurationError(
                f"refusing to serve the directory without TLS on non-loopback address {listen}"
            )
        self._server: Any = None
        self.port = 0

    @property
    def store(self) -> DirectoryStore:
        return self.directory.store

    @property
    def endpoint(self) -> str:
        host = split_host_port(self.listen, allow_port_zero=True, default_host="127.0.0.1")[0]
        return f"{host}:{self.port}"

    def start(self) -> int:
        """Bind and start serving; returns the port."""
        if self._server is not None:
            raise ConfigurationError("the directory server is already running")
        # no SO_REUSEPORT (a second server on a port in use would share the lookups);
        # handshake and idle limits: see limits.py
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers),
            interceptors=[RequestLog("directory")],  # a log line and an event per request
            options=[*self.options,
                     ("grpc.max_receive_message_length", self.max_request_bytes)],
        )
        raw = functools.partial(add_raw_servicer, server, refusals=self.refusals)
        self.cache = None
        if self.lookup_cache and isinstance(self.directory.store, SQLStore):
            self.cache = LookupCache(self.directory.store, max_entries=self.lookup_cache)
        servicer = DirectoryServicer(self.directory, cache=self.cache, refusals=self.refusals)
        add_raw_servicer(_LookupAsBytes(server, servicer),
                         gds_grpc.add_TRISADirectoryServicer_to_server, servicer,
                         refusals=self.refusals)
        health_servicer = health.HealthServicer()
        for name in ("", SERVICE_NAME):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        raw(health_pb2_grpc.add_HealthServicer_to_server, health_servicer)
        names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        raw(reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
            reflection.ReflectionServicer(names))
        creds = None
        if self.tls is not None:
            cert_pem, key_pem = self.tls
            creds = grpc.ssl_server_credentials([(key_pem, cert_pem)])
        port = listen_and_start(server, self.listen, creds)
        self._server = server
        self.port = int(port)
        if self.cache is not None:
            threading.Thread(target=self._warm, args=(self.cache,), daemon=True,
                             name="directory-lookup-warm").start()
        log.info("directory listening on %s", self.endpoint)
        return self.port

    def _warm(self, cache: LookupCache) -> None:
        try:
            filled = cache.warm(self.directory)
        except Exception as exc:  # a store error, or the store closed under it
            if self._server is None:
                return  # stopped meanwhile
            log.warning("directory lookup cache warm-up stopped: %s",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        log.debug("directory lookup cache: %d records", filled)

    def stop(self, grace: float | None = None) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait()
        cache, self.cache = self.cache, None
        if cache is not None:
            cache.close()

    def wait(self) -> None:
        if self._server is not None:
            self._server.wait_for_termination()

    def __enter__(self) -> DirectoryServer:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def accept(self, vasp_id: str, **kw: Any) -> IssuanceResult:
        """Accept a registration and issue its certificate through ``sectigo``."""
        from .issuance import accept

        if self.sectigo is None:
            raise ConfigurationError("this directory server has no Sectigo client")
        return accept(self.directory, vasp_id, self.sectigo, **kw)
