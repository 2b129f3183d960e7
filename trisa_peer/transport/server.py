"""A TRISA endpoint: mTLS with a required client certificate, peers verified per call.

:class:`TrisaServer` serves TRISAHealth (and whatever servicers are added) behind
:class:`~trisa_peer.transport.interceptor.PeerVerificationInterceptor`. TLS material
comes from a :class:`~trisa_peer.transport.material.MaterialSource`; with
:class:`~trisa_peer.transport.identity.FileMaterial` a certificate, key, trust pool or
CRL written to disk is picked up by the next new connection (gRPC's dynamic server
credentials ask before every handshake), while connections and calls already open are
not disturbed.

What the TLS layer (BoringSSL) checks: the client sent a certificate that chains to the
trust pool (roots + intermediates). Everything else -- the TRISA policy, the directory
record, revocation -- is checked by the interceptor before a servicer runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from .._pb.trisa.api.v1beta1 import api_pb2, api_pb2_grpc
from ..authenticate import PeerAuthenticator
from ..clock import Clock, utcnow
from ..errors import ConfigurationError
from ..limits import server_options
from ..netutil import bind_problem
from ..records import DirectoryLookup
from ..verify import ChainVerifier
from .identity import Material
from .interceptor import PeerVerificationInterceptor
from .material import MaterialSource, StaticMaterial

__all__ = ["HealthServicer", "MaterialSource", "StaticMaterial", "TrisaServer"]

log = logging.getLogger("trisa_peer.transport")


def _rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HealthServicer(api_pb2_grpc.TRISAHealthServicer):
    """TRISAHealth/Status: HEALTHY, with the suggested next-check window."""

    def __init__(self, clock: Clock = utcnow) -> None:
        self.clock = clock

    def Status(
        self, request: api_pb2.HealthCheck, context: grpc.ServicerContext
    ) -> api_pb2.ServiceState:
        now = self.clock()
        return api_pb2.ServiceState(
            status=api_pb2.ServiceState.HEALTHY,
            not_before=_rfc3339(now + timedelta(minutes=30)),
            not_after=_rfc3339(now + timedelta(minutes=60)),
        )


class TrisaServer:
    """A verified TRISA gRPC server. ``add`` servicers, then ``start``.

    ``verify_peers=False`` is *reference mode*, for measuring what verification costs
    and for parity with the Go reference: BoringSSL still requires a client certificate
    chaining to the trust pool, but steps 3 (TRISA policy, CRL) and 4 (directory
    binding, revocation) are skipped; servicers only identify the caller. Never use it
    in production; the CLI does not offer it.

    ``handshake_timeout`` / ``idle_timeout`` (seconds; default 5 and 300, see
    :mod:`trisa_peer.limits`) close connections that do not finish TLS in time and
    established connections left without a call.
    """

    def __init__(
        self,
        material: MaterialSource,
        directory: DirectoryLookup,
        *,
        listen: str = "127.0.0.1:0",
        max_workers: int = 16,
        decision_ttl: float = 300.0,
        verify_peers: bool = True,
        clock: Clock = utcnow,
        handshake_timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        self.material = material
        self.listen = listen
        first = material.current()
        self.verifier = ChainVerifier(first.pool, clock=clock, crl=first.crl)
        self.authenticator = PeerAuthenticator(
            self.verifier, directory, decision_ttl=decision_ttl, refresh=material.current
        )
        material.subscribe(self._rotated)
        interceptors = [PeerVerificationInterceptor(self.authenticator)] if verify_peers else []
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="trisa"),
            interceptors=interceptors,
            # no SO_REUSEPORT; handshake and idle limits (issue 11 §7): see limits.py
            options=server_options(handshake=handshake_timeout, idle=idle_timeout),
        )
        self._generation = 0
        self.port = 0
        api_pb2_grpc.add_TRISAHealthServicer_to_server(HealthServicer(clock), self._server)

    def _rotated(self, material: Material) -> None:
        # New trust pool or CRL: verify with it from now on and forget old decisions.
        self.verifier.update(material.pool, material.crl)
        self.authenticator.forget()

    def add(self, register: Callable[[Any, grpc.Server], None], servicer: Any) -> None:
        """``add(api_pb2_grpc.add_TRISANetworkServicer_to_server, servicer)``."""
        register(servicer, self._server)

    def _config(self, material: Material) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(material.identity.key_pem(), material.identity.chain_pem())],
            root_certificates=material.pool.pem(),
        )

    def _fetch(self) -> Any:
        material = self.material.current()
        if material.generation == self._generation:
            return None
        self._generation = material.generation
        return self._config(material)

    def start(self) -> int:
        material = self.material.current()
        self._generation = material.generation
        creds = grpc.dynamic_ssl_server_credentials(
            self._config(material), self._fetch, require_client_authentication=True
        )
        problem = bind_problem(self.listen)
        if problem is not None:
            raise ConfigurationError(f"cannot listen on {self.listen}: {problem}")
        try:
            self.port = self._server.add_secure_port(self.listen, creds)
        except RuntimeError as exc:
            raise ConfigurationError(f"cannot listen on {self.listen}: {exc}") from exc
        if not self.port:
            raise ConfigurationError(f"cannot listen on {self.listen}")
        self._server.start()
        log.info("TRISA endpoint %s listening on port %d", material.identity.common_name, self.port)
        return self.port

    def stop(self, grace: float | None = 1.0) -> None:
        self._server.stop(grace).wait()

    def wait(self) -> None:
        self._server.wait_for_termination()
