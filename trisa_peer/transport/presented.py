"""Which certificate a server presented, when the pinned handshake refused it.

The pinned dial (:mod:`.client`) trusts only the registered leaf, so BoringSSL reports
any other certificate the same way ("unable to get local issuer"), whoever issued it.
To tell the user *which* problem they have, :func:`fetch_presented` opens one more TLS
connection that verifies nothing and only reads the server's leaf, and
:func:`diagnose_presented` compares it with the trust pool:

* issued by a CA of the pool (or of the registered chain) -> step 7, "same CA, not the
  registered certificate (reissued?)";
* issued by anything else -> step 6, "issued by <issuer>, not by a CA in the trust pool".

What is *not* done: this connection never decides anything. It runs only after the
pinned handshake already failed, and its certificate is never trusted or used; when it
cannot be read (the server closed first, TLS 1.2 with a required client certificate),
the pinned dial's own error stands. Imports neither grpc nor the generated code.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence

from cryptography import x509

from ..certs import common_name, fingerprint, format_serial
from ..errors import ChainVerificationError, DirectoryMismatchError, HandshakeError
from ..netutil import split_host_port
from ..steps import HandshakeStep, Reason

__all__ = ["diagnose_presented", "fetch_presented"]


def fetch_presented(address: str, server_name: str, timeout: float) -> x509.Certificate | None:
    """The leaf the server at ``address`` presents for ``server_name`` (SNI), unverified;
    None when it cannot be read."""
    try:
        host, port = split_host_port(address)
    except ValueError:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # diagnosis only: nothing read here is trusted
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, \
                ctx.wrap_socket(sock, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    if not der:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def _issued_by(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for ca in cas:
        if ca.subject == cert.issuer and _signed_by(cert, ca):
            return ca
    return None


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature, unsupported key types: not this CA
        return False
    return True


def _name(name: x509.Name) -> str:
    return repr(common_name(name) or name.rfc4514_string())


def diagnose_presented(
    presented: x509.Certificate,
    registered: x509.Certificate,
    cas: Sequence[x509.Certificate],
    *,
    peer: str,
) -> HandshakeError:
    """Why ``presented`` (not the pinned ``registered`` leaf) was refused: step 6 when no
    CA of ``cas`` (the trust pool and the registered chain) issued it, else step 7."""
    if fingerprint(presented) == fingerprint(registered):
        # the pin matched after all: the refusal was about something else
        return DirectoryMismatchError(
            f"{peer} presented its registered certificate, yet the pinned handshake failed",
            step=HandshakeStep.BIND_SERVER_RECORD, peer=peer)
    issuer = _issued_by(presented, cas)
    if issuer is None:
        return ChainVerificationError(
            f"the server presented a certificate for {common_name(presented)!r} issued by "
            f"{_name(presented.issuer)}, not by a CA in the trust pool (registered: issued "
            f"by {_name(registered.issuer)}); an impostor, or a node serving another CA's "
            "certificate",
            step=HandshakeStep.VERIFY_SERVER_CHAIN, peer=peer, reason=Reason.UNKNOWN_ISSUER)
    return DirectoryMismatchError(
        f"the server presented a certificate from the same CA ({_name(issuer.subject)}), "
        f"not the registered certificate (serial {format_serial(presented.serial_number)}, "
        f"registered {format_serial(registered.serial_number)}): reissued? The peer must "
        "update its directory record, or serve the registered certificate",
        step=HandshakeStep.BIND_SERVER_RECORD, peer=peer,
        mismatches=[("serial", format_serial(presented.serial_number),
                     format_serial(registered.serial_number)),
                    ("fingerprint", fingerprint(presented), fingerprint(registered))])
