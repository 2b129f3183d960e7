"""``serve --webhook``: the back office decides incoming transfers (issue 15, section 1).

Every case runs against a real local back office: ``http.server`` on 127.0.0.1 (plain,
TLS and mTLS with a ``trustme`` CA) or on a Unix socket. The back office verifies the
HMAC signature itself (401 when it does not match) and records what it was sent. Each
check has its twin: the accepted case and a near-identical refused one. The end-to-end
cases run Bob's node of the simulated network with the webhook handler.
"""

from __future__ import annotations

import json
import os
import socketserver
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from helpers import bob_key
from pki import record_for
from test_exchange import _extra_node, _restore, payload_for, stub

from trisa_peer._pb.ivms101 import identity_pb2
from trisa_peer._pb.trisa.api.v1beta1 import errors_pb2
from trisa_peer.authenticate import VerifiedPeer
from trisa_peer.envelope import envelope_error, format_timestamp, seal
from trisa_peer.errors import ConfigurationError, UsageError
from trisa_peer.network.handler import Accept, Incoming, Pending, Reject, Repair
from trisa_peer.network.webhook import MAX_ANSWER, WebhookConfig, WebhookHandler, parse_target
from trisa_peer.network.webhook_sign import (
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SigningKey,
    load_keys,
    parse_keys,
    sign,
    verify,
)

Code = errors_pb2.Error
SECRET_A = "a" * 40
SECRET_B = "b" * 40
UNAVAILABLE = (Code.UNAVAILABLE, True)
BACKOFFICE_TEXT = "BACKOFFICE-PRIVATE-ERROR-TEXT"

Answer = Callable[[dict[str, Any]], tuple[int, dict[str, str], bytes]]


def json_answer(doc: Any, status: int = 200) -> Answer:
    body = json.dumps(doc).encode()
    return lambda _request: (status, {"Content-Type": "application/json"}, body)


ACCEPT = json_answer({"decision": "accept"})


class BackOffice:
    """A real HTTP back office: verifies the signature, records requests, answers."""

    def __init__(self, keys: list[SigningKey], answer: Answer = ACCEPT, *,
                 tls: ssl.SSLContext | None = None, unix: Path | None = None) -> None:
        self.keys = keys
        self.answer = answer
        self.delay = 0.0
        self.drip = 0.0  # seconds between the answer's bytes
        self.requests: list[dict[str, Any]] = []
        self.unsigned = 0
        office = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if verify(dict(self.headers.items()), body, office.keys, time.time()):
                    office.unsigned += 1
                    self._send(401, {"Content-Type": "text/plain"}, BACKOFFICE_TEXT.encode())
                    return
                doc = json.loads(body)
                doc["_content_type"] = self.headers["Content-Type"]
                office.requests.append(doc)
                time.sleep(office.delay)
                self._send(*office.answer(doc))

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        if value:  # "" leaves the header out (HTTP/1.0: read to close)
                            self.send_header(name, value)
                    if "Content-Length" not in headers:
                        self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if not office.drip:
                        self.wfile.write(body)
                    for i in range(len(body) if office.drip else 0):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(office.drip)
                except OSError:  # the node gave up (timeout): nothing to answer
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        if unix is not None:
            class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
                daemon_threads = True

            class UnixHandler(Handler):
                def address_string(self) -> str:
                    return "unix"

            self.server: socketserver.BaseServer = UnixServer(str(unix), UnixHandler)
            self.url = f"unix://{unix}"
        else:
            http_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            http_server.daemon_threads = True
            port = http_server.server_address[1]
            if tls is not None:
                http_server.socket = tls.wrap_socket(http_server.socket, server_side=True)
            self.server = http_server
            self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/trisa/decide"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "webhook.keys"
    path.write_text(f"# rotation: the last key signs\nold {SECRET_A}\nnew {SECRET_B}\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def office() -> Iterator[BackOffice]:
    server = BackOffice(parse_keys(f"new {SECRET_B}"))
    yield server
    server.close()


def make_handler(url: str, keys_file: Path, **kw: Any) -> WebhookHandler:
    kw.setdefault("timeout", 2.0)
    return WebhookHandler(WebhookConfig(url=url, keys=load_keys(keys_file), **kw))


def incoming(attempt: int = 1) -> Incoming:
    record = record_for("bob")
    peer = VerifiedPeer(common_name=record.common_name, fingerprint="ab" * 32,
                        serial_hex="01", record=record, chain=None,  # type: ignore[arg-type]
                        verified_at=datetime.now(UTC))
    return Incoming(peer, str(uuid.uuid4()), payload_for("alice.vasp.test", "bob.vasp.test"),
                    1, datetime.now(UTC), idempotency_key="k" * 64, attempt=attempt)


def unavailable(outcome: Any) -> bool:
    return isinstance(outcome, Reject) and (outcome.code, outcome.retry) == UNAVAILABLE


BENEFICIARY = {"beneficiaryPersons": [{"naturalPerson": {"name": {"nameIdentifier": [
    {"primaryIdentifier": "Doe", "secondaryIdentifier": "Jane",
     "nameIdentifierType": "NATURAL_PERSON_NAME_TYPE_CODE_LEGL"}]}}}],
    "accountNumber": ["1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"]}


# ------------------------------------------------------------------- signing


def test_signature_verifies_and_a_changed_body_or_key_does_not() -> None:
    keys = parse_keys(f"old {SECRET_A}\nnew {SECRET_B}")
    headers = sign(keys, b'{"x":1}', 1_700_000_000)
    assert headers[KEY_ID_HEADER] == "new"  # the newest key signs
    assert headers[TIMESTAMP_HEADER] == "1700000000"
    assert verify(headers, b'{"x":1}', keys, 1_700_000_000) is None
    assert verify(headers, b'{"x":2}', keys, 1_700_000_000) == "bad signature"
    assert verify(headers, b'{"x":1}', keys[:1], 1_700_000_000) == "unknown key id"


def test_signature_is_the_documented_hmac() -> None:
    """docs/webhook.md: hex HMAC-SHA256(secret, timestamp "." body), prefixed v1=."""
    import hashlib
    import hmac
    keys = parse_keys(f"k1 {SECRET_A}")
    headers = sign(keys, b"{}", 1_700_000_000)
    mac = hmac.new(SECRET_A.encode(), b"1700000000.{}", hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"v1={mac}"
    assert headers[SIGNATURE_HEADER] != "v1=" + hmac.new(
        SECRET_A.encode(), b"1700000000{}", hashlib.sha256).hexdigest()


def test_clock_skew_of_300_seconds_accepted_and_301_refused() -> None:
    keys = parse_keys(f"k1 {SECRET_A}")
    headers = sign(keys, b"{}", 1_700_000_000)
    assert verify(headers, b"{}", keys, 1_700_000_300) is None
    assert verify(headers, b"{}", keys, 1_700_000_301) == \
        "timestamp outside the accepted clock skew"


def test_key_file_0600_read_and_0640_refused(keys_file: Path) -> None:
    assert [k.key_id for k in load_keys(keys_file)] == ["old", "new"]
    keys_file.chmod(0o640)
    with pytest.raises(ConfigurationError, match="readable by others; chmod 600"):
        load_keys(keys_file)


@pytest.mark.parametrize(("text", "message"), [
    (f"k1 {SECRET_A[:31]}", "shorter than 32"),
    (f"k/1 {SECRET_A}", "key id must be"),
    (f"k1 {SECRET_A}\nk1 {SECRET_B}", "listed twice"),
    ("# only a comment\n", "no key"),
    (f"k1 {SECRET_A} extra", "expected 'KEY_ID SECRET'"),
])
def test_bad_key_files_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_keys(text)
    assert parse_keys(f"k1 {SECRET_A[:32]}")[0].key_id == "k1"  # the twin: a good one


# -------------------------------------------------------------------- target


@pytest.mark.parametrize("url", ["http://10.1.2.3/hook", "http://backoffice.example/hook",
                                 "ftp://127.0.0.1/", "unix://relative/path",
                                 "https://user:pw@backoffice.example/"])
def test_plain_http_off_loopback_and_odd_urls_refused(url: str) -> None:
    with pytest.raises(UsageError):
        parse_target(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://[::1]/hook",
                                 "http://localhost/hook", "https://10.1.2.3/hook",
                                 "unix:///run/backoffice.sock"])
def test_https_loopback_and_unix_targets_allowed(url: str) -> None:
    assert parse_target(url).scheme in ("http", "https", "unix")


# ------------------------------------------------------------------ decisions


def test_accept_sends_the_documented_request(office: BackOffice, keys_file: Path) -> None:
    handler = make_handler(office.url, keys_file)
    inc = incoming(attempt=3)
    assert handler(inc) == Accept()
    [doc] = office.requests
    assert doc["_content_type"] == "application/json"
    assert doc["envelope_id"] == inc.envelope_id
    assert doc["transfer_state"] == "STARTED"
    assert (doc["idempotency_key"], doc["attempt"]) == ("k" * 64, 3)
    assert doc["peer"] == {"common_name": inc.peer.common_name, "fingerprint": "ab" * 32,
                           "directory_id": "id-bob"}
    assert doc["payload"]["identity"]["@type"].endswith("ivms101.IdentityPayload")
    assert doc["payload"]["transaction"]["@type"].endswith("generic.v1beta1.Transaction")


def test_accept_with_a_valid_beneficiary_is_sealed_and_an_invalid_one_is_not(
        office: BackOffice, keys_file: Path) -> None:
    handler = make_handler(office.url, keys_file)
    office.answer = json_answer({"decision": "accept", "beneficiary": BENEFICIARY})
    outcome = handler(incoming())
    assert isinstance(outcome, Accept) and outcome.payload is not None
    identity = identity_pb2.IdentityPayload()
    assert outcome.payload.identity.Unpack(identity)
    name = identity.beneficiary.beneficiary_persons[0].natural_person.name
    assert name.name_identifiers[0].primary_identifier == "Doe"
    assert identity.originator.originator_persons  # the originator part is untouched
    bad = json.loads(json.dumps(BENEFICIARY))
    bad["beneficiaryPersons"][0]["naturalPerson"]["name"]["nameIdentifier"][0][
        "primaryIdentifier"] = ""
    office.answer = json_answer({"decision": "accept", "beneficiary": bad})
    assert unavailable(handler(incoming()))


def test_accept_with_a_beneficiary_vasp_must_be_a_valid_legal_person(
        office: BackOffice, keys_file: Path) -> None:
    handler = make_handler(office.url, keys_file)
    legal = {"legalPerson": {"name": {"nameIdentifier": [{
        "legalPersonName": "Bob VASP Ltd", "legalPersonNameIdentifierType":
        "LEGAL_PERSON_NAME_TYPE_CODE_LEGL"}]}, "countryOfRegistration": "GB"}}
    office.answer = json_answer({"decision": "accept",
                                 "beneficiary_vasp": {"beneficiaryVasp": legal}})
    assert isinstance(handler(incoming()), Accept)
    legal["legalPerson"]["countryOfRegistration"] = "UK"  # not ISO 3166-1
    office.answer = json_answer({"decision": "accept",
                                 "beneficiary_vasp": {"beneficiaryVasp": legal}})
    assert unavailable(handler(incoming()))


def test_reject_carries_code_message_retry_and_an_unknown_code_is_refused(
        office: BackOffice, keys_file: Path) -> None:
    handler = make_handler(office.url, keys_file)
    office.answer = json_answer({"decision": "reject", "code": "HIGH_RISK",
                                 "message": "sanctioned", "retry": False})
    assert handler(incoming()) == Reject(Code.HIGH_RISK, "sanctioned", retry=False)
    office.answer = json_answer({"decision": "reject", "code": 92, "message": "x",
                                 "retry": True})
    assert handler(incoming()) == Reject(92, "x", retry=True)
    office.answer = json_answer({"decision": "reject", "code": 9999, "message": "x"})
    assert unavailable(handler(incoming()))


def test_pending_takes_its_deadline_and_a_past_deadline_is_refused(
        office: BackOffice, keys_file: Path) -> None:
    handler = make_handler(office.url, keys_file)
    deadline = datetime.now(UTC) + timedelta(hours=2)
    office.answer = json_answer({"decision": "pending", "deadline": format_timestamp(deadline),
                                 "message": "review"})
    inc = incoming()
    outcome = handler(inc)
    assert isinstance(outcome, Pending) and outcome.message == "review"
    assert timedelta(hours=1, minutes=59) < outcome.window <= timedelta(hours=2)
    office.answer = json_answer({"decision": "pending", "deadline": format_timestamp(
        datetime.now(UTC) - timedelta(seconds=1))})
    assert unavailable(handler(incoming()))
    office.answer = json_answer({"decision": "pending", "deadline": format_timestamp(
        datetime.now(UTC) + timedelta(days=31))})
    assert unavailable(handler(incoming()))


def test_repair_takes_a_repair_code_and_a_non_repair_code_is_refused(
        office: BackOffice, keys_file: Path) -> None:
    handler = make_handler(office.url, keys_file)
    office.answer = json_answer({"decision": "repair", "message": "need a date of birth"})
    assert handler(incoming()) == Repair("need a date of birth", code=154)
    office.answer = json_answer({"decision": "repair", "message": "m", "code": "MISSING_FIELDS"})
    assert handler(incoming()) == Repair("m", code=153)
    office.answer = json_answer({"decision": "repair", "message": "m", "code": 50})
    assert unavailable(handler(incoming()))


def test_a_payload_type_the_node_cannot_show_is_rejected_without_a_call(
        office: BackOffice, keys_file: Path) -> None:
    handler = make_handler(office.url, keys_file)
    inc = incoming()
    inc.payload.transaction.type_url = "type.googleapis.com/example.Unknown"
    assert handler(inc) == Reject(Code.UNPARSEABLE_TRANSACTION, "the payload holds a message "
                                  "type this beneficiary cannot read")
    assert office.requests == []
    assert handler(incoming()) == Accept()  # the same with a known type is asked
    assert len(office.requests) == 1


# ------------------------------------------------------------------- failures


def test_slow_back_office_times_out_twice_and_a_prompt_one_answers(
        office: BackOffice, keys_file: Path) -> None:
    handler = make_handler(office.url, keys_file, timeout=0.3)
    office.delay = 1.0
    assert unavailable(handler(incoming()))
    assert len(office.requests) == 2  # one retry of a timed-out try
    office.delay = 0.0
    assert handler(incoming()) == Accept()


def test_a_dripping_answer_is_cut_at_the_total_timeout(
        office: BackOffice, keys_file: Path) -> None:
    """Each byte comes well within the socket timeout; the try as a whole does not."""
    handler = make_handler(office.url, keys_file, timeout=0.5, attempts=1)
    office.drip = 0.1  # 21 bytes: about 2 s
    assert unavailable(handler(incoming()))
    office.drip = 0.001
    assert handler(incoming()) == Accept()


def test_back_office_down_is_unavailable_and_up_accepts(keys_file: Path) -> None:
    from trisa_peer import events

    class Calls(events.Listener):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def webhook_call(self, outcome: str, seconds: float) -> None:
            self.seen.append(outcome)

    calls = Calls()
    unsubscribe = events.subscribe(calls)
    try:
        server = BackOffice(parse_keys(f"new {SECRET_B}"))
        url = server.url
        assert make_handler(url, keys_file)(incoming()) == Accept()
        server.close()
        assert unavailable(make_handler(url, keys_file)(incoming()))
    finally:
        unsubscribe()
    assert calls.seen == ["accept", "unreachable", "unreachable"]  # each try, for metrics


def test_wrong_signature_key_gets_401_and_unavailable(keys_file: Path, tmp_path: Path) -> None:
    server = BackOffice(parse_keys(f"old {SECRET_A}"))  # knows only the retired key
    try:
        assert unavailable(make_handler(server.url, keys_file)(incoming()))
        assert (server.unsigned, server.requests) == (1, [])  # 401 is not retried
        server.keys = parse_keys(f"old {SECRET_A}\nnew {SECRET_B}")  # rotated
        assert make_handler(server.url, keys_file)(incoming()) == Accept()
    finally:
        server.close()


@pytest.mark.parametrize("answer", [
    (200, {"Content-Type": "application/json"}, b"{not json"),
    (200, {"Content-Type": "application/json"}, b'{"decision":"accept","extra":1}'),
    (200, {"Content-Type": "application/json"},
     b'{"decision":"accept","decision":"accept"}'),
    (200, {"Content-Type": "application/json"}, b'{"decision":"maybe"}'),
    (200, {"Content-Type": "application/json"}, b'["accept"]'),
    (200, {"Content-Type": "application/json"},
     b'{"decision":"reject","code":50,"message":"m","retry":"yes"}'),
    (200, {"Content-Type": "text/plain"}, b'{"decision":"accept"}'),
    (500, {"Content-Type": "application/json"}, b'{"decision":"accept"}'),
    (201, {"Content-Type": "application/json"}, b'{"decision":"accept"}'),
])
def test_malformed_answers_are_unavailable_never_accept(
        office: BackOffice, keys_file: Path,
        answer: tuple[int, dict[str, str], bytes]) -> None:
    handler = make_handler(office.url, keys_file)
    office.answer = lambda _doc: answer
    assert unavailable(handler(incoming()))
    office.answer = lambda _doc: (200, {"Content-Type": "application/json; charset=utf-8"},
                                  b'{"decision":"accept"}')
    assert handler(incoming()) == Accept()


def test_answer_of_exactly_the_cap_accepted_and_one_byte_more_refused(
        office: BackOffice, keys_file: Path) -> None:
    handler = make_handler(office.url, keys_file)
    base = b'{"decision":"accept"}'
    fits = base + b" " * (MAX_ANSWER - len(base))
    office.answer = lambda _doc: (200, {"Content-Type": "application/json"}, fits)
    assert handler(incoming()) == Accept()
    office.answer = lambda _doc: (200, {"Content-Type": "application/json"}, fits + b" ")
    assert unavailable(handler(incoming()))
    # no Content-Length (read until the server closes): the cap still holds
    unsized = {"Content-Type": "application/json", "Content-Length": ""}
    office.answer = lambda _doc: (200, unsized, fits)
    assert handler(incoming()) == Accept()
    office.answer = lambda _doc: (200, unsized, fits + b" ")
    assert unavailable(handler(incoming()))


def test_redirect_is_not_followed(office: BackOffice, keys_file: Path) -> None:
    elsewhere = BackOffice(parse_keys(f"new {SECRET_B}"))
    try:
        office.answer = lambda _doc: (307, {"Location": elsewhere.url}, b"")
        assert unavailable(make_handler(office.url, keys_file)(incoming()))
        assert elsewhere.requests == []
        assert make_handler(elsewhere.url, keys_file)(incoming()) == Accept()
        assert len(elsewhere.requests) == 1
    finally:
        elsewhere.close()


def test_bodies_and_back_office_texts_are_not_logged(
        office: BackOffice, keys_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="trisa_peer")
    handler = make_handler(office.url, keys_file)
    inc = incoming()
    office.answer = json_answer({"decision": "reject", "code": 50,
                                 "message": BACKOFFICE_TEXT})
    assert handler(inc).message == BACKOFFICE_TEXT  # type: ignore[union-attr]
    office.answer = lambda _doc: (500, {"Content-Type": "text/plain"},
                                  BACKOFFICE_TEXT.encode())
    assert unavailable(handler(inc))
    assert inc.envelope_id in caplog.text  # the lines are there (the twin)...
    assert "HTTP status 500" in caplog.text
    for secret in (BACKOFFICE_TEXT, SECRET_B, "Doe", "idempotency", "primaryIdentifier"):
        assert secret not in caplog.text  # ...without bodies, texts or keys


# --------------------------------------------------------------- TLS and unix


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def _server_tls(ca: trustme.CA, *, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    return context


def test_https_with_the_back_office_ca_accepts_and_without_it_fails(
        ca: trustme.CA, keys_file: Path, tmp_path: Path) -> None:
    server = BackOffice(parse_keys(f"new {SECRET_B}"), tls=_server_tls(ca))
    try:
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        assert make_handler(server.url, keys_file, ca=str(tmp_path / "ca.pem"))(
            incoming()) == Accept()
        other = trustme.CA()
        other.cert_pem.write_to_path(str(tmp_path / "other.pem"))
        assert unavailable(make_handler(server.url, keys_file,
                                        ca=str(tmp_path / "other.pem"))(incoming()))
        assert unavailable(make_handler(server.url, keys_file)(incoming()))  # system roots
        assert len(server.requests) == 1
    finally:
        server.close()


def test_mtls_with_a_client_certificate_accepts_and_without_one_fails(
        ca: trustme.CA, keys_file: Path, tmp_path: Path) -> None:
    client_ca = trustme.CA()
    server = BackOffice(parse_keys(f"new {SECRET_B}"),
                        tls=_server_tls(ca, client_ca=client_ca))
    try:
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        leaf = client_ca.issue_cert("node.bob.vasp.test")
        leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
        leaf.private_key_pem.write_to_path(str(tmp_path / "client.key"))
        os.chmod(tmp_path / "client.key", 0o600)
        common = {"ca": str(tmp_path / "ca.pem")}
        assert make_handler(server.url, keys_file, cert=str(tmp_path / "client.pem"),
                            key=str(tmp_path / "client.key"), **common)(incoming()) == Accept()
        assert unavailable(make_handler(server.url, keys_file, **common)(incoming()))
        assert len(server.requests) == 1
    finally:
        server.close()


def test_tls_options_need_https(keys_file: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="need an https"):
        make_handler("http://127.0.0.1:1/", keys_file, ca=str(tmp_path / "ca.pem"))
    with pytest.raises(ConfigurationError, match="TLS files"):
        make_handler("https://127.0.0.1:1/", keys_file, ca=str(tmp_path / "missing.pem"))


def test_unix_socket_accepts_and_a_missing_socket_is_unavailable(
        keys_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "office.sock"
    server = BackOffice(parse_keys(f"new {SECRET_B}"), unix=path)
    try:
        assert make_handler(server.url, keys_file)(incoming()) == Accept()
        assert unavailable(make_handler(f"unix://{tmp_path}/gone.sock", keys_file)(incoming()))
    finally:
        server.close()


# ------------------------------------------------------------------------ CLI


@pytest.mark.parametrize(("extra", "code", "message"), [
    (["--webhook", "http://10.9.8.7/hook", "--webhook-secret-file", "{keys}"], 2,
     "plain http:// to 10.9.8.7 is refused"),
    (["--webhook", "http://127.0.0.1:9/hook"], 2, "needs --webhook-secret-file"),
    (["--webhook-secret-file", "{keys}"], 2, "--webhook-secret-file needs --webhook"),
    (["--webhook", "http://127.0.0.1:9/", "--webhook-secret-file", "{keys}",
      "--policy", "accept"], 2, "--webhook and --policy"),
    (["--webhook", "http://127.0.0.1:9/", "--webhook-secret-file", "{keys}",
      "--webhook-timeout", "5", "--webhook-tries", "2"], 2, "under the 10 s"),
    (["--webhook", "http://127.0.0.1:9/", "--webhook-secret-file", "{open}"], 1,
     "readable by others"),
])
def test_serve_refuses_bad_webhook_options_in_one_line(
        trisa_peer_cli: Callable[..., Any], keys_file: Path, tmp_path: Path,
        extra: list[str], code: int, message: str) -> None:
    loose = tmp_path / "open.keys"
    loose.write_text(f"k1 {SECRET_A}\n")
    loose.chmod(0o644)
    argv = [a.format(keys=keys_file, open=loose) for a in extra]
    out = trisa_peer_cli("serve", "--listen", "127.0.0.1:0", "--db",
                         str(tmp_path / "fresh.db"), *argv)
    assert out.returncode == code, out
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == (2 if code == 2 else 1)
    assert not (tmp_path / "fresh.db").exists()  # nothing half-written


def test_webhook_options_build_the_handler(keys_file: Path) -> None:
    """The twin of the refusals: the same options, well formed, give a handler."""
    import argparse

    from trisa_peer.cli.webhook_args import add_webhook_args, webhook_handler
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy")
    add_webhook_args(parser)
    args = parser.parse_args(["--webhook", "http://127.0.0.1:9/", "--webhook-secret-file",
                              str(keys_file), "--webhook-timeout", "4", "--webhook-tries", "2"])
    handler = webhook_handler(args)
    assert isinstance(handler, WebhookHandler)
    assert (handler.config.timeout, handler.config.attempts) == (4.0, 2)
    assert webhook_handler(parser.parse_args([])) is None


# ---------------------------------------------------------------- end to end


@pytest.fixture
def bob_webhook(net: Any, tmp_path: Path, keys_file: Path,
                office: BackOffice) -> Iterator[tuple[BackOffice, Any]]:
    node = _extra_node(net, tmp_path, "bob", make_handler(office.url, keys_file, timeout=1.0))
    try:
        yield office, node
    finally:
        _restore(net, node)


@pytest.fixture
def bob_webhook_db(net: Any, db_location: str, keys_file: Path,
                   office: BackOffice) -> Iterator[tuple[BackOffice, Any]]:
    """Bob with the webhook on SQLite and on PostgreSQL (the claim rules of both)."""
    node = _extra_node(net, db_location, "bob", make_handler(office.url, keys_file,
                                                             timeout=1.0))
    try:
        yield office, node
    finally:
        _restore(net, node)


def test_back_office_down_then_up_retry_calls_again_with_attempt_plus_1(
        net: Any, bob_webhook_db: tuple[BackOffice, Any]) -> None:
    from trisa_peer import events

    class Transfers(events.Listener):
        def __init__(self) -> None:
            self.seen: list[tuple[str, str, int]] = []

        def transfer(self, direction: str, state: str, code: int, seconds: float) -> None:
            self.seen.append((direction, state, code))

    office, node = bob_webhook_db
    office.answer = json_answer({"error": "down"}, status=503)
    payload = payload_for("alice.vasp.test", "bob.vasp.test")
    envelope = seal(payload, bob_key(net))
    transfers = Transfers()
    unsubscribe = events.subscribe(transfers)
    try:
        first = stub(net).Transfer(envelope, timeout=10)
    finally:
        unsubscribe()
    # seen by metrics and logs as a claimed (undecided) transfer, not a rejection
    assert ("incoming", "claimed", Code.UNAVAILABLE) in transfers.seen
    assert not any(state == "repair" for _d, state, _c in transfers.seen)
    error = envelope_error(first)
    assert error is not None and (error.code, error.retry) == UNAVAILABLE
    assert [r.kind for r in node.store.exchange(envelope.id)] == ["request"]  # no reply kept
    # the originator re-seals the same message (fresh keys, other bytes): still down
    resealed = seal(payload, bob_key(net), envelope_id=envelope.id)
    error = envelope_error(stub(net).Transfer(resealed, timeout=10))
    assert error is not None and (error.code, error.retry) == UNAVAILABLE
    office.answer = ACCEPT
    last = stub(net).Transfer(envelope, timeout=10)
    assert envelope_error(last) is None
    key = office.requests[0]["idempotency_key"]
    # two tries per call (503 is retried once), the handler's attempt grows per call
    assert [(r["attempt"], r["idempotency_key"]) for r in office.requests] == [
        (1, key), (1, key), (2, key), (2, key), (3, key)]
    assert [r.state for r in node.store.exchange(envelope.id)] == ["accepted", "accepted"]
    assert stub(net).Transfer(envelope, timeout=10) == last  # now final: from the store
    assert len(office.requests) == 5


def test_a_final_rejection_is_stored_and_the_retry_does_not_call_again(
        net: Any, bob_webhook: tuple[BackOffice, Any]) -> None:
    office, _node = bob_webhook
    office.answer = json_answer({"decision": "reject", "code": "HIGH_RISK",
                                 "message": "declined"})
    envelope = seal(payload_for("alice.vasp.test", "bob.vasp.test"), bob_key(net))
    replies = [stub(net).Transfer(envelope, timeout=10) for _ in range(2)]
    assert replies[0] == replies[1]
    error = envelope_error(replies[0])
    assert error is not None and (error.code, error.retry) == (Code.HIGH_RISK, False)
    assert len(office.requests) == 1


def test_send_through_the_network_accepts_rejects_and_pends(
        net: Any, bob_webhook: tuple[BackOffice, Any], tmp_path: Path,
        trisa_peer_cli: Callable[..., Any]) -> None:
    office, node = bob_webhook
    decisions = iter([
        {"decision": "accept", "beneficiary": BENEFICIARY},
        {"decision": "reject", "code": "UNKNOWN_WALLET_ADDRESS", "message": "no such wallet"},
        {"decision": "pending", "deadline": format_timestamp(
            datetime.now(UTC) + timedelta(hours=1))},
    ])
    office.answer = lambda _doc: (200, {"Content-Type": "application/json"},
                                  json.dumps(next(decisions)).encode())
    send = lambda: net.alice.send(net.bob.common_name,  # noqa: E731
                                  payload_for("alice.vasp.test", "bob.vasp.test"))
    accepted = send()
    assert accepted.state == "accepted"
    identity = identity_pb2.IdentityPayload()
    assert accepted.payload.identity.Unpack(identity)
    assert identity.beneficiary.account_numbers == BENEFICIARY["accountNumber"]
    rejected = send()
    assert rejected.state == "rejected"
    pending = send()
    assert pending.state == "pending"
    assert [row.envelope_id for row in node.store.pending(direction="incoming")] == [
        pending.envelope_id]
    # the pending one is resolved later by the operator; Bob's node delivers the decision
    assert net.alice.node.store.initiated(pending.envelope_id).state == "pending"
    done = trisa_peer_cli("transfers", "resolve", pending.envelope_id, "--db",
                          str(tmp_path / "extra.db"), "--accept")
    assert done.returncode == 0, done.stderr
    assert net.wait_for_state(net.alice, pending.envelope_id, {"accepted"}) == "accepted"
    assert len(office.requests) == 3  # resolving does not ask the back office again


# ---------------------------------------------------------------- the document


DOC = Path(__file__).resolve().parent.parent / "docs" / "webhook.md"


def _doc_block(language: str) -> str:
    text = DOC.read_text()
    start = text.index(f"```{language}\n") + len(language) + 4
    return text[start:text.index("```", start)]


def test_the_documented_back_office_verifies_our_requests(tmp_path: Path) -> None:
    """docs/webhook.md's example back office, run as written (port changed): accepts a
    request signed with its key, answers 401 (-> unavailable) to another key."""
    import subprocess
    import sys

    from trisa_peer.testing.network import free_port
    port = free_port()
    source = _doc_block("python").replace("8080", str(port))
    (tmp_path / "office.py").write_text(source)
    secret = "replace-with-32-or-more-random-characters"
    good, bad = tmp_path / "good.keys", tmp_path / "bad.keys"
    good.write_text(f"k1 {secret}\n")
    bad.write_text(f"k1 {secret[:-1]}X\n")
    for path in (good, bad):
        path.chmod(0o600)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "office.py")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(200):  # until it listens
            outcome = make_handler(url, good)(incoming())
            if outcome == Accept():
                break
            time.sleep(0.05)
        assert outcome == Accept()
        assert unavailable(make_handler(url, bad)(incoming()))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_documented_openssl_line_gives_our_signature() -> None:
    import subprocess
    keys = parse_keys(f"k1 {SECRET_A}")
    body = b'{"decision":"x"}'
    headers = sign(keys, body, 1_700_000_000)
    line = next(x for x in DOC.read_text().splitlines() if "openssl dgst" in x)
    out = subprocess.run(["sh", "-c", line],
                         env={"TS": "1700000000", "BODY": body.decode(), "SECRET": SECRET_A,
                              "PATH": os.environ["PATH"]},
                         capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == headers[SIGNATURE_HEADER].removeprefix("v1=")
    tampered = sign(keys, body + b" ", 1_700_000_000)
    assert out.split()[-1] != tampered[SIGNATURE_HEADER].removeprefix("v1=")


def test_webhook_code_loads_only_with_webhook(keys_file: Path) -> None:
    import subprocess
    import sys
    code = ("import sys, argparse\n"
            "from trisa_peer.cli import main, node, webhook_args\n"
            "p = argparse.ArgumentParser(); p.add_argument('--policy')\n"
            "webhook_args.add_webhook_args(p)\n"
            "argv = sys.argv[1:]\n"
            "webhook_args.webhook_handler(p.parse_args(argv))\n"
            "print('trisa_peer.network.webhook' in sys.modules, 'http.client' in sys.modules)")
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.split()
    hooked = subprocess.run([sys.executable, "-c", code, "--webhook", "http://127.0.0.1:9/",
                             "--webhook-secret-file", str(keys_file)],
                            capture_output=True, text=True, check=True).stdout.split()
    assert plain == ["False", "False"]
    assert hooked == ["True", "True"]


# ---------------------------------------------------------- a real serve process


@pytest.mark.slow
def test_real_serve_process_asks_the_back_office(
        tmp_path: Path, keys_file: Path, office: BackOffice,
        trisa_peer_cli: Callable[..., Any]) -> None:
    from datetime import datetime as _dt

    from google.protobuf import json_format
    from test_node_cli import Setup

    from trisa_peer.testing.cast import BOOK
    from trisa_peer.testing.policies import originator_payload

    setup = Setup(tmp_path)
    try:
        bob = setup.serve("--listen", f"127.0.0.1:{setup.bob_port}", "--db",
                          str(tmp_path / "bob.db"), "--webhook", office.url,
                          "--webhook-secret-file", str(keys_file), *setup.identity_args("bob"))
        payload = originator_payload(BOOK.wallets_of("alice.vasp.test")[1],
                                     BOOK.wallets_of("bob.vasp.test")[0], sent_at=_dt.now(UTC))
        path = tmp_path / "payload.json"
        path.write_text(json_format.MessageToJson(payload, preserving_proto_field_name=True))
        send = ("send", "--to", "bob.vasp.test", "--payload", str(path),
                *setup.identity_args("alice"))
        sent = trisa_peer_cli(*send)
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["state"] == "accepted"
        office.answer = json_answer({"decision": "reject", "code": "HIGH_RISK",
                                     "message": BACKOFFICE_TEXT})
        refused = trisa_peer_cli(*send)
        assert refused.returncode == 3  # send's exit code for a TRISA rejection
        shown = json.loads(refused.stdout)
        assert (shown["state"], shown["error"]["code"]) == ("rejected", "HIGH_RISK")
        assert shown["error"]["message"] == BACKOFFICE_TEXT  # sent to the originator only
        assert len(office.requests) == 2
        assert office.requests[0]["peer"]["common_name"] == "alice.vasp.test"
    finally:
        setup.close()
    assert bob.stderr is not None
    log = bob.stderr.read()
    assert "decision=accept" in log and "decision=reject" in log
    assert BACKOFFICE_TEXT not in log
