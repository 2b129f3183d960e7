"""A TRISA endpoint: mTLS with a required client certificate, peers verified per call.

:class:`TrisaServer` serves TRISAHealth (and whatever servicers are added) behind
:class:`~trisa_peer.transport.interceptor.PeerVerificationInterceptor`. TLS material
comes from a :class:`~trisa_peer.transport.material.MaterialSource`; with
:class:`~trisa_peer.transport.identity.FileMaterial` a certificate, key, trust pool or
CRL written to disk is picked up by the next new connection (gRPC's dynamic server
credentials ask before every handshake), while connections and calls already open are
not disturbed. A started server also polls its material every ``reload_interval``
seconds and at once on :meth:`TrisaServer.reload` (SIGHUP): a failed reload is retried
and its reason logged once, and the own certificate's expiry is watched -- a warning at
30, 7 and 1 days before, an error once it has expired. An expired own certificate makes
TRISAHealth answer UNHEALTHY (the node keeps serving: peers refuse it at their step 6
or 3 until a valid certificate is installed, which the next reload picks up).

What the TLS layer (BoringSSL) checks: the client sent a certificate that chains to the
trust pool (roots + intermediates). Everything else -- the TRISA policy, the directory
record, revocation -- is checked by the interceptor before a servicer runs, and before
the request is parsed: every servicer is registered with raw-bytes handlers
(:mod:`~trisa_peer.transport.raw`).

Requests larger than :data:`MAX_REQUEST_BYTES` are refused by gRPC itself with
``RESOURCE_EXHAUSTED`` before any of our code runs.
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
from ..controls import PeerControls
from ..limits import server_options
from ..logtext import RefusalLimiter
from ..records import DirectoryLookup
from ..reload import DEFAULT_RELOAD_INTERVAL, ExpiryWatch, Poller, expiry_problem
from ..verify import ChainVerifier
from .identity import Material
from .interceptor import PeerVerificationInterceptor
from .listen import listen_and_start
from .material import MaterialSource, StaticMaterial
from .raw import REFUSAL_LOG_INTERVAL, add_raw_servicer

__all__ = [
    "ENVELOPE_HEADROOM",
    "MAX_ENVELOPE_PAYLOAD",
    "MAX_REQUEST_BYTES",
    "HealthServicer",
    "MaterialSource",
    "StaticMaterial",
    "TrisaServer",
]

log = logging.getLogger("trisa_peer.transport")

#: The largest encrypted payload a node opens: 1 MiB (Travel Rule payloads are a few
#: KiB). The same figure as ``trisa_peer.network.service.MAX_ENVELOPE_PAYLOAD`` (a test
#: holds them equal; the transport cannot import the network layer above it).
MAX_ENVELOPE_PAYLOAD = 1024 * 1024

#: Room for everything of a ``SecureEnvelope`` besides its payload: the RSA-encrypted
#: key and HMAC secret (512 bytes each with RSA-4096, 1 KiB each even with RSA-8192),
#: the 32-byte HMAC, the id (a 36-character UUID), algorithm names, the timestamp, the
#: key signature, an error message, protobuf tags and lengths: a few KiB at most, 64 KiB
#: with a wide margin.
ENVELOPE_HEADROOM = 64 * 1024

#: gRPC's receive limit for a node (``grpc.max_receive_message_length``), instead of the
#: 4 MiB default: the largest request a TRISA node must accept is an envelope with a
#: payload at the 1 MiB limit, so 1 MiB + 64 KiB = 1,114,112 bytes. An envelope whose
#: payload is over 1 MiB but that fits in this limit is still answered with a TRISA
#: BAD_REQUEST envelope; anything larger gets ``RESOURCE_EXHAUSTED`` from gRPC before
#: it is parsed (or the peer checked). The other requests (KeyExchange's SigningKey,
#: health checks) are a few KiB.
MAX_REQUEST_BYTES = MAX_ENVELOPE_PAYLOAD + ENVELOPE_HEADROOM


def _rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HealthServicer(api_pb2_grpc.TRISAHealthServicer):
    """TRISAHealth/Status: HEALTHY, with the suggested next-check window; UNHEALTHY
    (the node is not ready: e.g. its transfer store is unusable) while ``problem``
    returns a reason."""

    def __init__(
        self, clock: Clock = utcnow, problem: Callable[[], str | None] | None = None
    ) -> None:
        self.clock = clock
        self.problem = problem

    def Status(
        self, request: api_pb2.HealthCheck, context: grpc.ServicerContext
    ) -> api_pb2.ServiceState:
        now = self.clock()
        ready = self.problem is None or self.problem() is None
        return api_pb2.ServiceState(
            status=api_pb2.ServiceState.HEALTHY if ready else api_pb2.ServiceState.UNHEALTHY,
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
        health: Callable[[], str | None] | None = None,
        controls: PeerControls | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        refusal_log_interval: float = REFUSAL_LOG_INTERVAL,
        reload_interval: float = DEFAULT_RELOAD_INTERVAL,
    ) -> None:
        self.material = material
        self.listen = listen
        self.clock = clock
        self._health = health
        self.expiry = ExpiryWatch()
        self._force_reload = False
        self._poller = Poller(self._poll, reload_interval, on_error=_poll_failed)
        first = material.current()
        self.verifier = ChainVerifier(first.pool, clock=clock, crl=first.crl)
        self.authenticator = PeerAuthenticator(
            self.verifier, directory, decision_ttl=decision_ttl, refresh=material.current,
            controls=controls,
        )
        # Repeated refusals of one certificate for one reason: one line per interval,
        # for step refusals (the authenticator) and undecodable requests (raw handlers).
        self.authenticator.refusals = RefusalLimiter(interval=refusal_log_interval)
        self.refusals = RefusalLimiter(interval=refusal_log_interval)
        material.subscribe(self._rotated)
        #: the verifying interceptor (None in reference mode); its ``streams`` re-check
        #: open streams (:mod:`.streamwatch`)
        self.interceptor = (PeerVerificationInterceptor(self.authenticator, controls)
                            if verify_peers else None)
        interceptors = [self.interceptor] if self.interceptor is not None else []
        self.max_request_bytes = max_request_bytes
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="trisa"),
            interceptors=interceptors,
            # no SO_REUSEPORT; handshake and idle limits (issue 11 §7): see limits.py
            options=[*server_options(handshake=handshake_timeout, idle=idle_timeout),
                     ("grpc.max_receive_message_length", max_request_bytes)],
        )
        self._generation = 0
        self.port = 0
        self.add(api_pb2_grpc.add_TRISAHealthServicer_to_server,
                 HealthServicer(clock, self.problem))

    def problem(self) -> str | None:
        """Why this node is not ready (TRISAHealth UNHEALTHY): its own certificate is
        expired or not yet valid, or ``health`` (e.g. the store) has a problem."""
        own = expiry_problem(self.material.current().identity.leaf, self.clock())
        if own is not None:
            return own
        return self._health() if self._health is not None else None

    def reload(self) -> None:
        """Look at the material now (SIGHUP); safe to call from a signal handler."""
        self._force_reload = True
        self._poller.trigger()

    def _poll(self) -> None:
        force, self._force_reload = self._force_reload, False
        material = self.material.poll(force=force)
        said = self.expiry.note(material.identity.leaf, material.identity.fingerprint,
                                self.clock())
        if said is not None:
            level, text = said
            log.log(logging.ERROR if level == "error" else logging.WARNING, "%s", text)

    def _rotated(self, material: Material) -> None:
        # New trust pool or CRL: verify with it from now on and forget old decisions.
        self.verifier.update(material.pool, material.crl)
        self.authenticator.forget()

    def add(self, register: Callable[[Any, Any], None], servicer: Any) -> None:
        """``add(api_pb2_grpc.add_TRISANetworkServicer_to_server, servicer)``.

        Registered with raw-bytes handlers (:func:`~.raw.add_raw_servicer`): the peer is
        checked before the request is parsed. A servicer with an ``undecodable_reply``
        method answers undecodable requests with what it returns.
        """
        add_raw_servicer(self._server, register, servicer, refusals=self.refusals)

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
        self.port = listen_and_start(self._server, self.listen, creds)
        log.info("TRISA endpoint %s listening on port %d", material.identity.common_name, self.port)
        self._poller.start()
        return self.port

    def stop(self, grace: float | None = 1.0) -> None:
        self._poller.stop()
        self._server.stop(grace).wait()

    def wait(self) -> None:
        self._server.wait_for_termination()


def _poll_failed(exc: BaseException) -> None:
    log.error("TLS material poll failed unexpectedly: %s", type(exc).__name__, exc_info=exc)
