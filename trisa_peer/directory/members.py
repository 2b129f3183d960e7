"""The directory's members endpoint: renewal by CSR over mutual TLS.

The public directory API (:mod:`.server`) is one-way TLS, as upstream GDS clients
expect: anyone may Register or Lookup. A renewal must come from the VASP itself, so it
goes to a second listener (upstream's members service is mTLS too, on ``:4435``) that

- requires a client certificate chaining to ``client_ca`` (the roots the directory's
  certificates are issued under, e.g. the Sectigo root and intermediate): gRPC's TLS
  layer refuses anything else before a request is read;
- serves one method, ``/trisa_peer.directory.v1.Members/RenewCertificate``: the request
  body is a DER CSR, the reply body the new certificate chain (PEM, leaf first). There
  is no protobuf message: TRISA defines no renewal RPC and this project adds no field
  to TRISA messages; raw bytes keep the contract to what is documented here;
- binds the caller to its record with :func:`.issuance.renew`: the presented leaf must
  be the record's current, unrevoked identity certificate (a superseded or revoked
  certificate cannot renew; after a compromise only the operator reissues). Refusals
  are ``PERMISSION_DENIED`` (not the current certificate, revoked, not registered),
  ``INVALID_ARGUMENT`` (the CSR's check failed, with the reason) or
  ``FAILED_PRECONDITION`` (issuance failed, with the reason), one line each, mapped by
  :mod:`trisa_peer.transport.status`.

Not checked here: CRLs (the directory's own ``revoked`` flag is its truth; a CA-side
revocation the directory was not told about is not seen), and how often a VASP renews
(each renewal supersedes the certificate that asked for it, so a second one needs the
new key).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from cryptography import x509

from ..errors import CertificateError, ConfigurationError, TrisaPeerError
from ..limits import server_options
from ..logtext import peer_text
from ..sectigo.client import SectigoClient
from ..transport.listen import listen_and_start
from ..transport.status import abort, directory_error, rpc_status
from .issuance import renew
from .service import Directory

__all__ = ["MEMBERS_SERVICE", "RENEW_METHOD", "MembersServer", "renew_over_mtls"]

log = logging.getLogger(__name__)

MEMBERS_SERVICE = "trisa_peer.directory.v1.Members"
RENEW_METHOD = f"/{MEMBERS_SERVICE}/RenewCertificate"
#: A DER CSR is ~1.2 KiB for RSA-4096; anything over this is refused by gRPC.
MAX_RENEW_REQUEST_BYTES = 16 * 1024


def _caller_leaf(context: grpc.ServicerContext) -> x509.Certificate:
    """The leaf the client presented (the TLS layer has verified its chain)."""
    pems = (context.auth_context() or {}).get("x509_pem_cert") or []
    if not pems:
        raise CertificateError("no client certificate was presented")
    try:
        return x509.load_pem_x509_certificate(bytes(pems[0]))
    except ValueError as exc:
        raise CertificateError("the client certificate cannot be read") from exc


class MembersServer:
    """The mTLS members endpoint on ``listen``; ``tls`` is ``(cert_pem, key_pem)`` of
    the directory, ``client_ca`` the PEM roots client certificates must chain to,
    ``sectigo`` makes a Sectigo client per renewal."""

    def __init__(
        self,
        directory: Directory,
        *,
        listen: str,
        tls: tuple[bytes, bytes],
        client_ca: bytes,
        sectigo: Callable[[], SectigoClient],
        poll_interval: float = 1.0,
        issue_timeout: float = 60.0,
        max_workers: int = 4,
    ) -> None:
        if not client_ca.strip():
            raise ConfigurationError("the members endpoint needs the client CA certificates")
        self.directory = directory
        self.listen = listen
        self.tls = tls
        self.client_ca = client_ca
        self.sectigo = sectigo
        self.poll_interval = poll_interval
        self.issue_timeout = issue_timeout
        self.max_workers = max_workers
        self._server: Any = None
        self.port = 0

    def _renew(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            caller = _caller_leaf(context)
            result = renew(self.directory, caller, bytes(request), self.sectigo(),
                           poll_interval=self.poll_interval, timeout=self.issue_timeout)
        except TrisaPeerError as exc:
            log.info("renewal refused: %s", peer_text(str(exc), 300))
            abort(context, exc)
        log.info("VASP %s renewed its certificate: serial %s", result.vasp.id, result.serial)
        return result.chain_pem()

    def start(self) -> int:
        if self._server is not None:
            raise ConfigurationError("the members endpoint is already running")
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers),
            options=[*server_options(),
                     ("grpc.max_receive_message_length", MAX_RENEW_REQUEST_BYTES)],
        )
        handler = grpc.method_handlers_generic_handler(
            MEMBERS_SERVICE, {"RenewCertificate": grpc.unary_unary_rpc_method_handler(self._renew)}
        )
        server.add_generic_rpc_handlers((handler,))
        cert_pem, key_pem = self.tls
        creds = grpc.ssl_server_credentials(
            [(key_pem, cert_pem)], root_certificates=self.client_ca, require_client_auth=True
        )
        port = listen_and_start(server, self.listen, creds)
        self._server = server
        self.port = int(port)
        log.info("directory members endpoint (mTLS) listening on port %d", self.port)
        return self.port

    def stop(self, grace: float | None = None) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait()

    def __enter__(self) -> MembersServer:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def renew_over_mtls(
    endpoint: str,
    csr_der: bytes,
    *,
    client_chain_pem: bytes,
    client_key_pem: bytes,
    ca_pem: bytes | None,
    server_name: str | None = None,
    timeout: float = 90.0,
) -> bytes:
    """Client side: send ``csr_der`` to a members endpoint, authenticated by the VASP's
    current certificate and key; returns the new chain (PEM). A refusal is a
    DirectoryError with the directory's one-line reason."""
    options: list[tuple[str, Any]] = []
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=client_key_pem, certificate_chain=client_chain_pem
    )
    with grpc.secure_channel(endpoint, creds, options=options) as channel:
        call = channel.unary_unary(RENEW_METHOD)
        try:
            reply = call(bytes(csr_der), timeout=timeout)
        except grpc.RpcError as exc:
            raise directory_error(*rpc_status(exc), "certificate renewal") from exc
    return bytes(reply)
