"""The one gRPC error boundary (trisa_peer.transport.status), both directions, as tables.

Out: a project error -> the status code a server answers. In: a status code and
BoringSSL's text -> the project error a client raises. Each TLS text is classified once,
by one table, and the dial and the transfer paths both read that classification.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grpc
import pytest

from trisa_peer.errors import (
    CertificateError,
    ChainVerificationError,
    ChannelBrokenError,
    ConfigurationError,
    DirectoryError,
    DirectoryMismatchError,
    DirectoryNotFoundError,
    EnvelopeError,
    HandshakeError,
    PeerNotRegisteredError,
    RevokedError,
    StoreError,
    TransferError,
    TransportSecurityError,
    TrisaPeerError,
)
from trisa_peer.steps import HandshakeStep as Step
from trisa_peer.steps import Reason
from trisa_peer.transport.status import (
    TLS_TEXT,
    ConnectFailure,
    TlsFailure,
    classify_connect,
    classify_tls,
    dial_error,
    directory_error,
    status_for,
    transfer_error,
)

SC = grpc.StatusCode
PACKAGE = Path(__file__).resolve().parents[1] / "trisa_peer"

# ------------------------------------------------------------------- in: TLS text

# (details as gRPC reports them, failure, error class, step, reason) of a pinned dial.
TLS_CASES = [
    ("Socket closed", TlsFailure.PEER_CLOSED,
     ChainVerificationError, Step.VERIFY_CLIENT_CHAIN, Reason.REFUSED_BY_PEER),
    ("Connection reset by peer", TlsFailure.PEER_CLOSED,
     ChainVerificationError, Step.VERIFY_CLIENT_CHAIN, Reason.REFUSED_BY_PEER),
    ("Ssl handshake failed: SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED: unable to get local "
     "issuer certificate", TlsFailure.NOT_PINNED,
     DirectoryMismatchError, Step.BIND_SERVER_RECORD, Reason.CERTIFICATE_MISMATCH),
    ("CERTIFICATE_VERIFY_FAILED: self signed certificate in certificate chain",
     TlsFailure.NOT_PINNED,
     DirectoryMismatchError, Step.BIND_SERVER_RECORD, Reason.CERTIFICATE_MISMATCH),
    ("Hostname Verification Check failed", TlsFailure.HOSTNAME,
     ChainVerificationError, Step.VERIFY_SERVER_CHAIN, Reason.SAN_MISMATCH),
    ("CERTIFICATE_VERIFY_FAILED: certificate has expired", TlsFailure.EXPIRED,
     ChainVerificationError, Step.VERIFY_SERVER_CHAIN, Reason.EXPIRED),
    ("CERTIFICATE_VERIFY_FAILED: certificate is not yet valid", TlsFailure.NOT_YET_VALID,
     ChainVerificationError, Step.VERIFY_SERVER_CHAIN, Reason.NOT_YET_VALID),
    ("CERTIFICATE_VERIFY_FAILED: certificate revoked", TlsFailure.REVOKED,
     RevokedError, Step.VERIFY_SERVER_CHAIN, Reason.REVOKED),
    ("Ssl handshake failed: SSL_ERROR_SSL: WRONG_VERSION_NUMBER", TlsFailure.OTHER,
     TransportSecurityError, Step.PRESENT_SERVER_CERT, Reason.TLS_FAILED),
    ("failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:9: "
     "Connection refused", None,
     TransportSecurityError, Step.PRESENT_CLIENT_CERT, Reason.UNREACHABLE),
]


@pytest.mark.parametrize(("details", "failure", "kind", "step", "reason"), TLS_CASES)
def test_tls_text_is_classified_once_and_both_paths_agree(
    details: str, failure: TlsFailure | None, kind: type, step: Step, reason: Reason
) -> None:
    assert classify_tls(details) is failure
    err = dial_error(SC.UNAVAILABLE, details, peer="bob.vasp.test", address="127.0.0.1:9")
    assert type(err) is kind
    assert (err.step, err.reason, err.peer) == (step, reason, "bob.vasp.test")
    # The transfer path reads the same classification: a broken TLS channel is retried
    # after re-pinning, a closed socket or an unreachable peer is not.
    sent = transfer_error(SC.UNAVAILABLE, details, "transfer to bob failed")
    retried = failure not in (None, TlsFailure.PEER_CLOSED)
    assert isinstance(sent, ChannelBrokenError) is retried
    assert sent.message.startswith("transfer to bob failed: UNAVAILABLE: ")


def test_every_tls_failure_has_phrases_and_no_phrase_is_listed_twice() -> None:
    phrases = [phrase for row, _ in TLS_TEXT for phrase in row]
    assert len(phrases) == len(set(phrases))
    assert all(phrase == phrase.lower() for phrase in phrases)
    assert {failure for _, failure in TLS_TEXT} == set(TlsFailure)
    assert {case[1] for case in TLS_CASES} == {*TlsFailure, None}


def _phrase_tests(tree: ast.AST, phrases: set[str]) -> list[str]:
    """``"phrase" in text`` tests of one of ``phrases``."""
    return [
        node.left.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In)
        and isinstance(node.left, ast.Constant) and node.left.value in phrases
    ]


def test_no_other_module_matches_tls_text() -> None:
    """The table is the only place that reads gRPC's TLS text. (verify.py reads
    cryptography's own VerificationError text, which is not TLS text.)"""
    phrases = {phrase for row, _ in TLS_TEXT for phrase in row}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "_pb" in path.parts or path.name in ("status.py", "verify.py"):
            continue
        found += [f"{path.name}: {p!r}" for p in _phrase_tests(ast.parse(path.read_text()),
                                                               phrases)]
    assert found == []
    twin = ast.parse('if "ssl" in details.lower() or "expired" in text: pass')
    assert sorted(_phrase_tests(twin, phrases)) == ["expired", "ssl"]


# ----------------------------------------------------------------- in: status codes


@pytest.mark.parametrize(
    ("code", "details", "kind", "step", "reason"),
    [
        (SC.UNAUTHENTICATED, "step 3 (server verifies the client chain): expired",
         ChainVerificationError, Step.VERIFY_CLIENT_CHAIN, Reason.REFUSED_BY_PEER),
        (SC.PERMISSION_DENIED, "step 4 (server binds the client): not registered",
         PeerNotRegisteredError, Step.BIND_CLIENT_RECORD, Reason.REFUSED_BY_PEER),
        (SC.PERMISSION_DENIED, "go away",  # a peer's own text: step 4 is assumed
         PeerNotRegisteredError, Step.BIND_CLIENT_RECORD, Reason.REFUSED_BY_PEER),
        (SC.UNAVAILABLE, "step 4 (server binds the client): directory unavailable",
         HandshakeError, Step.BIND_CLIENT_RECORD, Reason.PEER_DIRECTORY_UNAVAILABLE),
        (SC.UNAVAILABLE, "step 9 (no such step): down",  # not ours: no TLS words either
         TransportSecurityError, Step.PRESENT_CLIENT_CERT, Reason.UNREACHABLE),
        (SC.DEADLINE_EXCEEDED, "Deadline Exceeded",
         TransportSecurityError, Step.PRESENT_CLIENT_CERT, Reason.TIMEOUT),
        (SC.INTERNAL, "boom",
         TransportSecurityError, Step.EXCHANGE, Reason.PROBE_FAILED),
    ],
)
def test_dial_error_from_status(
    code: grpc.StatusCode, details: str, kind: type, step: Step, reason: Reason
) -> None:
    err = dial_error(code, details, peer="bob.vasp.test", address="127.0.0.1:9")
    assert type(err) is kind
    assert (err.step, err.reason) == (step, reason)


@pytest.mark.parametrize(
    ("code", "kind", "retry"),
    [(SC.UNAUTHENTICATED, ChannelBrokenError, False),
     (SC.PERMISSION_DENIED, ChannelBrokenError, False),
     (SC.INVALID_ARGUMENT, TransferError, None),
     (None, TransferError, None)],
)
def test_transfer_error_from_status(
    code: grpc.StatusCode | None, kind: type, retry: bool | None
) -> None:
    err = transfer_error(code, "no", "KeyExchange with bob failed")
    assert type(err) is kind
    assert getattr(err, "retry", None) is retry


def test_directory_error_from_status() -> None:
    missing = directory_error(SC.NOT_FOUND, "", "directory lookup of x")
    assert type(missing) is DirectoryNotFoundError and missing.message.endswith("not found")
    down = directory_error(SC.UNAVAILABLE, "", "directory lookup of x")
    assert type(down) is DirectoryError
    assert down.message == "directory lookup of x: UNAVAILABLE: no details"
    assert directory_error(None, "x", "w").message == "w: UNKNOWN: x"


# ----------------------------------------------------------------------------- out


def _hs(cls: type[HandshakeError], step: Step = Step.BIND_CLIENT_RECORD,
        reason: Reason | None = None) -> HandshakeError:
    return cls("refused", step=step, peer="alice.vasp.test", reason=reason)


OUT_CASES: list[tuple[TrisaPeerError, grpc.StatusCode]] = [
    (_hs(HandshakeError, reason=Reason.DIRECTORY_UNAVAILABLE), SC.UNAVAILABLE),
    (_hs(PeerNotRegisteredError, reason=Reason.DIRECTORY_UNAVAILABLE), SC.UNAVAILABLE),
    (_hs(TransportSecurityError, Step.PRESENT_CLIENT_CERT), SC.UNAUTHENTICATED),
    (_hs(ChainVerificationError, Step.VERIFY_CLIENT_CHAIN), SC.UNAUTHENTICATED),
    (_hs(PeerNotRegisteredError), SC.PERMISSION_DENIED),
    (_hs(DirectoryMismatchError), SC.PERMISSION_DENIED),
    (_hs(RevokedError), SC.PERMISSION_DENIED),
    (_hs(HandshakeError), SC.PERMISSION_DENIED),
    (DirectoryNotFoundError("no such VASP"), SC.NOT_FOUND),
    (ConfigurationError("bad"), SC.INVALID_ARGUMENT),
    (CertificateError("bad"), SC.INVALID_ARGUMENT),
    (DirectoryError("refused"), SC.FAILED_PRECONDITION),
    (StoreError("disk"), SC.UNAVAILABLE),
    (EnvelopeError("other"), SC.INTERNAL),
]


@pytest.mark.parametrize(("exc", "code"), OUT_CASES)
def test_status_for(exc: TrisaPeerError, code: grpc.StatusCode) -> None:
    assert status_for(exc) == code


def test_status_for_a_refused_directory_request_is_the_callers_conflict_code() -> None:
    assert status_for(DirectoryError("taken"), conflict=SC.ALREADY_EXISTS) == SC.ALREADY_EXISTS
    assert status_for(DirectoryNotFoundError("x"), conflict=SC.ALREADY_EXISTS) == SC.NOT_FOUND


@pytest.mark.parametrize(
    ("exc", "kind"),
    [(_hs(ChainVerificationError, Step.VERIFY_CLIENT_CHAIN), ChainVerificationError),
     (_hs(TransportSecurityError, Step.PRESENT_CLIENT_CERT), ChainVerificationError),
     (_hs(PeerNotRegisteredError), PeerNotRegisteredError),
     (_hs(RevokedError), PeerNotRegisteredError),
     (_hs(PeerNotRegisteredError, reason=Reason.DIRECTORY_UNAVAILABLE), HandshakeError)],
)
def test_server_refusal_round_trips_to_the_same_step(
    exc: HandshakeError, kind: type
) -> None:
    """What a server sends (status_for + str) is read back by the dialling client."""
    err = dial_error(status_for(exc), str(exc), peer="bob.vasp.test", address="x:1")
    assert type(err) is kind
    assert err.step == exc.step
    assert "refused" in str(err)


def test_directory_refusal_round_trips() -> None:
    exc = DirectoryNotFoundError("no verified VASP with common name 'x'")
    back = directory_error(status_for(exc), str(exc), "directory lookup of x")
    assert type(back) is DirectoryNotFoundError
    other = directory_error(status_for(StoreError("disk")), "disk", "lookup")
    assert type(other) is DirectoryError


def test_binding_claim_is_read_as_the_peers_statement_only() -> None:
    from trisa_peer.transport.client import _binding_claim
    from trisa_peer.transport.metadata import BINDING_METADATA

    ours = "ab" * 32
    assert _binding_claim([(BINDING_METADATA, f"{ours} vasp-1")], ours) == (
        "claimed by the peer: our certificate bound to directory record vasp-1")
    # twins: a claim about another certificate, and no claim at all
    other = _binding_claim([(BINDING_METADATA, f"{'cd' * 32} vasp-1")], ours)
    assert other.startswith("claimed by the peer for another certificate") and "not ours" in other
    assert _binding_claim([("other-key", "x")], ours) == (
        "not refused (the server's binding cannot be observed)")
    hostile = _binding_claim([(BINDING_METADATA, f"{ours} a\nforged line")], ours)
    assert "\n" not in hostile


# ------------------------------------------------- in: a channel that never opened

CONNECT_CASES = [
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: Failed to "
     "connect to remote host: Connection refused", False, ConnectFailure.REFUSED),
    ("errors resolving bob.vasp.test:4443: [field:hostname lookup error:address lookup "
     "failed for bob.vasp.test:4443: Domain name not found]", False, ConnectFailure.DNS),
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: connection "
     "attempt timed out before receiving SETTINGS frame", True, ConnectFailure.TIMEOUT),
    ("Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL "
     "routines:OPENSSL_internal:WRONG_VERSION_NUMBER", False, ConnectFailure.NOT_TLS),
    ("last error: UNAVAILABLE: ipv4:127.0.0.1:9: Socket closed", True,
     ConnectFailure.WANTS_TLS),
    ("last error: UNAVAILABLE: ipv4:127.0.0.1:9: Socket closed", False, None),  # its twin
    ("Failed parsing HTTP/2 (Expected SETTINGS frame as the first frame, got frame type 79)",
     True, ConnectFailure.NOT_GRPC),
    ("CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate", False,
     ConnectFailure.UNTRUSTED),
    ("some other outage", False, None),
]


@pytest.mark.parametrize(("details", "insecure", "failure"), CONNECT_CASES)
def test_connect_text_is_classified(
    details: str, insecure: bool, failure: ConnectFailure | None
) -> None:
    assert classify_connect(SC.UNAVAILABLE, details, insecure=insecure) is failure
    assert classify_connect(SC.INTERNAL, details, insecure=insecure) is None


def test_a_name_that_does_not_resolve_is_not_a_hostname_mismatch() -> None:
    dns = CONNECT_CASES[1][0]
    assert classify_tls(dns) is None  # "hostname lookup" is DNS, not the certificate
    err = dial_error(SC.UNAVAILABLE, dns, peer="bob", address="bob.vasp.test:4443")
    assert isinstance(err, TransportSecurityError) and err.reason == Reason.UNREACHABLE
    assert "does not resolve (DNS)" in str(err)
    hostname = "Hostname Verification Check failed"  # the twin: a real SAN mismatch
    assert classify_tls(hostname) is TlsFailure.HOSTNAME
    assert dial_error(SC.UNAVAILABLE, hostname, peer="bob", address="x:1").reason == (
        Reason.SAN_MISMATCH)
