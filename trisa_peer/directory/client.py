"""A TRISADirectory client implementing :class:`~trisa_peer.records.DirectoryLookup`.

::

    with DirectoryClient("api.testnet.directory:443") as gds:   # one-way TLS, system roots
        record = gds.lookup(common_name="api.bob.vaspbot.net")

- Every call has a deadline (``timeout``, default 5 s).
- ``lookup`` results are cached for ``cache_ttl`` seconds, keyed by common name and by
  id; ``fresh=True`` bypasses the cache (and refreshes it). Failures are not cached.
- NOT_FOUND → :class:`~trisa_peer.errors.DirectoryNotFoundError`; any other status
  (UNAVAILABLE, DEADLINE_EXCEEDED, …) or a non-empty reply ``error`` field →
  :class:`~trisa_peer.errors.DirectoryError`, with a one-line message
  (:func:`trisa_peer.transport.status.directory_error`).
- Transport: one-way TLS with the system roots by default (what the GDS serves),
  ``ca_pem`` for a private CA, ``insecure=True`` for a plaintext loopback server.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.message import Message

from .._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from .._pb.trisa.gds.api.v1beta1 import api_pb2_grpc as gds_grpc
from .._pb.trisa.gds.models.v1beta1 import models_pb2
from ..errors import ConfigurationError, DirectoryError
from ..records import PeerRecord, split_endpoint
from ..transport.status import directory_error, directory_reply_error, rpc_status
from .convert import enum_name, peer_record
from .grace import superseded_from_metadata
from .validate import normalize_common_name

__all__ = ["DirectoryClient", "SearchResult"]


@dataclass(frozen=True)
class SearchResult:
    id: str
    registered_directory: str
    common_name: str
    endpoint: str


def _check_error_field(
    reply: gds_pb2.LookupReply | gds_pb2.SearchReply | gds_pb2.RegisterReply
    | gds_pb2.VerifyContactReply,
    what: str,
) -> None:
    if reply.HasField("error") and (reply.error.code or reply.error.message):
        raise directory_reply_error(reply.error.code, reply.error.message, what)


class DirectoryClient:
    """Client for one directory endpoint (``host:port``); thread-safe."""

    def __init__(
        self,
        endpoint: str,
        *,
        insecure: bool = False,
        ca_pem: bytes | None = None,
        timeout: float = 5.0,
        cache_ttl: float = 60.0,
        server_name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        split_endpoint(endpoint)  # ConfigurationError on a bad endpoint
        if timeout <= 0:
            raise ConfigurationError("directory timeout must be positive")
        if insecure and ca_pem is not None:
            raise ConfigurationError("choose either insecure or a CA, not both")
        self.endpoint = endpoint.strip()
        self.timeout = float(timeout)
        self._insecure = insecure
        self.cache_ttl = float(cache_ttl)
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, PeerRecord]] = {}
        # Short reconnect backoff: after an outage, lookups recover within ~0.6 s instead
        # of gRPC's default exponential backoff of up to two minutes.
        options: list[tuple[str, Any]] = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
        ]
        if insecure:
            self._channel = grpc.insecure_channel(self.endpoint, options=options)
        else:
            if server_name:
                options.append(("grpc.ssl_target_name_override", server_name))
            creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
            self._channel = grpc.secure_channel(self.endpoint, creds, options=options)
        self._stub = gds_grpc.TRISADirectoryStub(self._channel)

    def __repr__(self) -> str:
        return f"DirectoryClient({self.endpoint!r})"

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> DirectoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rpc(self, method: str, request: Message, what: str,
             metadata: tuple[tuple[str, bytes], ...] | None = None) -> Any:
        # Any: the reply type depends on ``method`` (callers annotate what they get)
        try:
            extra = {"metadata": metadata} if metadata else {}
            reply = getattr(self._stub, method)(request, timeout=self.timeout, **extra)
        except grpc.RpcError as exc:
            raise directory_error(*rpc_status(exc), what, endpoint=self.endpoint,
                                  insecure=self._insecure, timeout=self.timeout) from exc
        return reply

    # ----------------------------------------------------------------- lookup (cached)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _cached(self, key: tuple[str, str]) -> PeerRecord | None:
        with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                return None
            if hit[0] <= self._clock():
                del self._cache[key]
                return None
            return hit[1]

    def lookup(
        self,
        *,
        common_name: str | None = None,
        vasp_id: str | None = None,
        fresh: bool = False,
    ) -> PeerRecord:
        """The VERIFIED record for ``vasp_id`` (preferred) or ``common_name``."""
        if not vasp_id and not common_name:
            raise ConfigurationError("lookup needs a common name or an id")
        key = ("id", vasp_id) if vasp_id else ("cn", normalize_common_name(common_name or ""))
        if not fresh and self.cache_ttl > 0:
            hit = self._cached(key)
            if hit is not None:
                return hit
        what = f"directory lookup of {vasp_id or common_name}"
        request = gds_pb2.LookupRequest(id=vasp_id or "", common_name=common_name or "")
        try:
            reply, call = self._stub.Lookup.with_call(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise directory_error(*rpc_status(exc), what, endpoint=self.endpoint,
                                  insecure=self._insecure, timeout=self.timeout) from exc
        _check_error_field(reply, what)
        record = peer_record(reply, fetched_at=datetime.now(UTC))
        # a trisa-peer directory's reissue grace (response headers, directory/grace.py)
        superseded = superseded_from_metadata(call.initial_metadata(), source=what)
        if superseded is not None:
            record = dataclasses.replace(record, superseded=superseded)
        if self.cache_ttl > 0:
            expires = self._clock() + self.cache_ttl
            with self._lock:
                self._cache[key] = (expires, record)
                self._cache[("id", record.id)] = (expires, record)
                self._cache[("cn", normalize_common_name(record.common_name))] = (
                    expires,
                    record,
                )
        return record

    def lookup_reply(self, *, common_name: str = "", vasp_id: str = "") -> gds_pb2.LookupReply:
        """The raw ``LookupReply`` (uncached)."""
        what = f"directory lookup of {vasp_id or common_name}"
        reply: gds_pb2.LookupReply = self._rpc(
            "Lookup", gds_pb2.LookupRequest(id=vasp_id, common_name=common_name), what
        )
        _check_error_field(reply, what)
        return reply

    # ----------------------------------------------------------------- other RPCs

    def verification(
        self, *, common_name: str = "", vasp_id: str = ""
    ) -> gds_pb2.VerificationReply:
        """The ``VerificationReply`` of any VASP (not cached)."""
        what = f"directory verification of {vasp_id or common_name}"
        reply: gds_pb2.VerificationReply = self._rpc(
            "Verification",
            gds_pb2.VerificationRequest(id=vasp_id, common_name=common_name),
            what,
        )
        return reply

    def verification_status(self, common_name: str) -> str | None:
        """E.g. ``"PENDING_REVIEW"``; ``None`` when unknown or the directory is unreachable."""
        try:
            reply = self.verification(common_name=common_name)
        except DirectoryError:
            return None
        return enum_name(models_pb2.VerificationState, reply.verification_status)

    def search(
        self,
        *,
        name: Sequence[str] | str = (),
        website: Sequence[str] | str = (),
        country: Sequence[str] | str = (),
        category: Sequence[str] | str = (),
    ) -> list[SearchResult]:
        """VERIFIED VASPs by name prefix or website, filtered by country / VASP category."""
        request = gds_pb2.SearchRequest(
            name=_strings(name),
            website=_strings(website),
            country=_strings(country),
            vasp_category=_strings(category),
        )
        reply: gds_pb2.SearchReply = self._rpc("Search", request, "directory search")
        _check_error_field(reply, "directory search")
        return [
            SearchResult(r.id, r.registered_directory, r.common_name, r.endpoint)
            for r in reply.results
        ]

    def register(
        self, request: gds_pb2.RegisterRequest, *, csr_der: bytes | None = None,
    ) -> gds_pb2.RegisterReply:
        """Send a ``RegisterRequest``; returns the ``RegisterReply`` (whose
        ``pkcs12password`` is shown only this once). ``csr_der`` goes along as the
        :data:`~trisa_peer.csr.CSR_METADATA` metadata (a directory that honours it
        answers without a password)."""
        from ..csr import CSR_METADATA  # registration only: a node's look-ups do not need it

        metadata = ((CSR_METADATA, bytes(csr_der)),) if csr_der is not None else None
        reply: gds_pb2.RegisterReply = self._rpc("Register", request, "directory registration",
                                                 metadata=metadata)
        _check_error_field(reply, "directory registration")
        return reply

    def verify_contact(self, vasp_id: str, token: str) -> gds_pb2.VerifyContactReply:
        reply: gds_pb2.VerifyContactReply = self._rpc(
            "VerifyContact",
            gds_pb2.VerifyContactRequest(id=vasp_id, token=token),
            "contact verification",
        )
        _check_error_field(reply, "contact verification")
        return reply

    def status(self) -> gds_pb2.ServiceState:
        """The directory's ``ServiceState``."""
        state: gds_pb2.ServiceState = self._rpc(
            "Status", gds_pb2.HealthCheck(), "directory status"
        )
        return state


def _strings(value: Sequence[str] | str) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    return [v for v in value if v]
