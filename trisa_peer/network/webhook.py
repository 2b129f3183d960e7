"""``serve --webhook URL``: the back office decides each incoming transfer over HTTP.

:class:`WebhookHandler` is a :data:`~trisa_peer.network.handler.Handler`: for each
incoming transfer it POSTs one JSON document (the opened payload in the protobuf JSON
mapping, the verified peer, the envelope id, the transfer state, the idempotency key and
the attempt number), signed with HMAC-SHA256 (:mod:`.webhook_sign`), and turns the JSON
answer into Accept, Reject, Pending or Repair. ``docs/webhook.md`` is the contract.

Checked here:

* the target (at start): ``https://`` (server certificate and host name verified
  against the system roots or ``--webhook-ca``; a client certificate with
  ``--webhook-cert``/``--webhook-key``), ``http://`` only to a loopback address, or
  ``unix:///path`` (a Unix socket); anything else is a usage error;
* the answer: status 200 exactly (a redirect is a failure, never followed), content type
  ``application/json`` (UTF-8), at most :data:`MAX_ANSWER` bytes, strict JSON (no
  duplicate keys, no NaN), a known ``decision`` with exactly its fields and their types;
  a returned beneficiary is parsed as ``ivms101`` protobuf JSON and validated as IVMS101
  before it is sealed.

Failure (back office down, slow, refusing our signature, answering nonsense): the
originator gets UNAVAILABLE with ``retry`` set, never an accept, and the exchange does
not store it as the final reply (``Exchange``), so the originator's retry calls the
webhook again with attempt + 1 and the same idempotency key. Each call makes at most
:data:`DEFAULT_ATTEMPTS` tries (the second only after a connection failure, a timeout or
a 429/502/503/504), each bounded to ``timeout`` seconds in total: 2 x 3.5 s + 0.25 s =
7.25 s, inside the 10 s a TRISA peer (and this node's client) gives a Transfer.

Never logged: request or answer bodies, the back office's error texts, the secret.
Not checked: that the back office's decision is wise; the answer's signature (the
channel is authenticated by TLS, loopback or the socket's file mode instead).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import any_pb2, json_format

from .. import events
from .._pb.ivms101 import enum_pb2, identity_pb2, ivms101_pb2
from .._pb.trisa.api.v1beta1 import api_pb2, errors_pb2
from .._pb.trisa.data.generic.v1beta1 import transaction_pb2  # noqa: F401 - Any types
from ..clock import Clock, utcnow
from ..directory.ivms101 import ISO3166_ALPHA2, legal_person_problems
from ..envelope import format_timestamp, parse_timestamp
from ..errors import ConfigurationError, EnvelopeError, UsageError
from ..logtext import peer_text
from ..netutil import is_loopback
from .handler import Accept, Incoming, Outcome, Pending, Reject, Repair
from .webhook_sign import SigningKey, sign

__all__ = [
    "DEFAULT_ATTEMPTS", "DEFAULT_TIMEOUT", "MAX_ANSWER", "MAX_PENDING", "Target",
    "WebhookConfig", "WebhookHandler", "parse_target", "request_document",
]

log = logging.getLogger("trisa_peer.webhook")
Code = errors_pb2.Error

#: Seconds one try may take in total (connect, TLS, request, answer).
DEFAULT_TIMEOUT = 3.5
#: Tries per call (the second only after a transient failure).
DEFAULT_ATTEMPTS = 2
_BACKOFF = 0.25
#: Largest answer read (bytes).
MAX_ANSWER = 64 * 1024
#: Furthest a pending deadline may lie ahead.
MAX_PENDING = timedelta(days=30)
_MAX_MESSAGE = 1024
_RETRY_STATUS = frozenset({429, 502, 503, 504})
_UNAVAILABLE = "the beneficiary's back office could not decide now; retry"
_KNOWN_CODES = dict(Code.Code.items())
_NAME_TYPES = frozenset(enum_pb2.NaturalPersonNameTypeCode.values())
_FIELDS = {
    "accept": ({"decision"}, {"beneficiary", "beneficiary_vasp"}),
    "reject": ({"decision", "code", "message"}, {"retry"}),
    "pending": ({"decision", "deadline"}, {"message"}),
    "repair": ({"decision", "message"}, {"code"}),
}


class _Failed(Exception):
    """One try failed; ``reason`` is our own words (never the back office's text);
    ``kind`` its :data:`~trisa_peer.events.WEBHOOK_OUTCOMES` name."""

    def __init__(self, reason: str, *, transient: bool = False,
                 kind: str = "bad-answer") -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.kind = kind


# ------------------------------------------------------------------------- target


@dataclass(frozen=True)
class Target:
    """Where the webhook goes: ``scheme`` https, http (loopback) or unix."""

    scheme: str
    host: str
    port: int
    path: str
    socket_path: str = ""



def parse_target(url: str) -> Target:
    """The webhook URL, checked; :class:`UsageError` for one this node refuses."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--webhook: not a usable URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if parts.username or parts.password:
        raise UsageError("--webhook: credentials in the URL are refused; the requests "
                         "are signed with --webhook-secret-file")
    if parts.query or parts.fragment:
        raise UsageError("--webhook: no query or fragment allowed in the URL")
    if scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise UsageError("--webhook: write a Unix socket as unix:///absolute/path")
        return Target("unix", "localhost", 0, "/", socket_path=parts.path)
    host = parts.hostname or ""
    if scheme not in ("http", "https") or not host:
        raise UsageError("--webhook: use https://HOST/..., http://127.0.0.1/... (loopback "
                         "only) or unix:///PATH")
    if scheme == "http" and not is_loopback(host):
        raise UsageError(f"--webhook: plain http:// to {host} is refused (personal data "
                         "in clear); use https:// or a loopback address")
    return Target(scheme, host, port or (443 if scheme == "https" else 80),
                  parts.path or "/")


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    keys: Sequence[SigningKey]
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    attempts: int = DEFAULT_ATTEMPTS


def _tls_context(config: WebhookConfig) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=config.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if config.cert:
            context.load_cert_chain(config.cert, config.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"--webhook TLS files: {exc.strerror or exc}") from exc
    return context


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


# ---------------------------------------------------------------------- request


def request_document(incoming: Incoming) -> dict[str, Any]:
    """What the back office is sent (before JSON encoding)."""
    peer = incoming.peer
    return {
        "version": 1,
        "envelope_id": incoming.envelope_id,
        "transfer_state": api_pb2.TransferState.Name(
            api_pb2.TransferState.ValueType(incoming.transfer_state))
        if incoming.transfer_state in api_pb2.TransferState.values() else "UNKNOWN",
        "received_at": format_timestamp(incoming.received_at),
        "idempotency_key": incoming.idempotency_key,
        "attempt": incoming.attempt,
        "peer": {"common_name": peer.common_name, "fingerprint": peer.fingerprint,
                 "directory_id": peer.record.id},
        "payload": json_format.MessageToDict(incoming.payload),
    }


# ----------------------------------------------------------------------- answer


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("duplicate key")
        out[key] = value
    return out


def _no_constant(_: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _message(doc: dict[str, Any], default: str | None = None) -> str:
    value = doc.get("message", default)
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_MESSAGE:
        raise _Failed(f"answer field message must be text of 1-{_MAX_MESSAGE} characters")
    return value


def _code(doc: dict[str, Any], default: int | None = None) -> int:
    value = doc.get("code", default)
    if isinstance(value, str) and value in _KNOWN_CODES:
        return _KNOWN_CODES[value]
    if type(value) is int and value in _KNOWN_CODES.values():
        return value
    raise _Failed("answer field code is not a TRISA error code")


def _natural_problems(person: ivms101_pb2.NaturalPerson, field: str) -> list[str]:
    problems: list[str] = []
    ids = person.name.name_identifiers if person.HasField("name") else []
    if not len(ids):
        problems.append(f"{field}.name needs at least one name identifier")
    for i, name in enumerate(ids):
        if not name.primary_identifier.strip() or len(name.primary_identifier) > 100:
            problems.append(f"{field}.name.name_identifiers[{i}].primary_identifier "
                            "must be 1-100 characters")
        if len(name.secondary_identifier) > 100:
            problems.append(f"{field}.name.name_identifiers[{i}].secondary_identifier "
                            "is longer than 100 characters")
        if name.name_identifier_type not in _NAME_TYPES:
            problems.append(f"{field}.name.name_identifiers[{i}] has an unknown name type")
    if person.country_of_residence and person.country_of_residence not in ISO3166_ALPHA2:
        problems.append(f"{field}.country_of_residence is not ISO 3166-1 alpha-2")
    return problems


def _person_problems(person: ivms101_pb2.Person, field: str, *, legal_only: bool) -> list[str]:
    kind = person.WhichOneof("person")
    if kind == "legal_person":
        return legal_person_problems(person.legal_person, field=f"{field}.legal_person")
    if kind == "natural_person" and not legal_only:
        return _natural_problems(person.natural_person, f"{field}.natural_person")
    return [f"{field} must be a {'legal' if legal_only else 'natural or legal'} person"]


def beneficiary_problems(beneficiary: identity_pb2.Beneficiary) -> list[str]:
    """IVMS101 problems of a returned ``Beneficiary`` (names, types, countries, the
    legal person rules of :mod:`trisa_peer.directory.ivms101`); empty when valid."""
    problems: list[str] = []
    if not len(beneficiary.beneficiary_persons):
        problems.append("beneficiary needs at least one beneficiary person")
    for i, person in enumerate(beneficiary.beneficiary_persons):
        problems += _person_problems(person, f"beneficiary.beneficiary_persons[{i}]",
                                     legal_only=False)
    for i, account in enumerate(beneficiary.account_numbers):
        if not account.strip() or len(account) > 100:
            problems.append(f"beneficiary.account_numbers[{i}] must be 1-100 characters")
    return problems


def _parse_ivms(value: Any, message: Any, name: str) -> None:
    if not isinstance(value, dict):
        raise _Failed(f"answer field {name} must be an object")
    try:
        json_format.ParseDict(value, message)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise _Failed(f"answer field {name} is not ivms101 protobuf JSON") from exc


def _accept(doc: dict[str, Any], incoming: Incoming) -> Accept:
    if "beneficiary" not in doc and "beneficiary_vasp" not in doc:
        return Accept()
    identity = identity_pb2.IdentityPayload()
    if not incoming.payload.identity.Unpack(identity):
        raise _Failed("the incoming identity is not an IdentityPayload to complete")
    problems: list[str] = []
    if "beneficiary" in doc:
        beneficiary = identity_pb2.Beneficiary()
        _parse_ivms(doc["beneficiary"], beneficiary, "beneficiary")
        problems += beneficiary_problems(beneficiary)
        identity.beneficiary.CopyFrom(beneficiary)
    if "beneficiary_vasp" in doc:
        vasp = identity_pb2.BeneficiaryVasp()
        _parse_ivms(doc["beneficiary_vasp"], vasp, "beneficiary_vasp")
        problems += _person_problems(vasp.beneficiary_vasp, "beneficiary_vasp.beneficiary_vasp",
                                     legal_only=True)
        identity.beneficiary_vasp.CopyFrom(vasp)
    if problems:
        raise _Failed(f"returned identity is not valid IVMS101 ({len(problems)} problems, "
                      f"first: {problems[0]})")
    payload = api_pb2.Payload()
    payload.CopyFrom(incoming.payload)
    packed = any_pb2.Any()
    packed.Pack(identity)
    payload.identity.CopyFrom(packed)
    return Accept(payload)


def decide(answer: bytes, incoming: Incoming, now: datetime) -> Outcome:
    """The outcome an answer body means; :class:`_Failed` when it is not a valid answer."""
    try:
        doc = json.loads(answer.decode("utf-8"), object_pairs_hook=_strict_object,
                         parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Failed("answer is not strict UTF-8 JSON") from exc
    if not isinstance(doc, dict) or doc.get("decision") not in _FIELDS:
        raise _Failed("answer has no known decision")
    decision = doc["decision"]
    required, optional = _FIELDS[decision]
    if not required <= doc.keys() or not doc.keys() <= required | optional:
        raise _Failed(f"answer fields do not match decision {decision}")
    if decision == "accept":
        return _accept(doc, incoming)
    if decision == "reject":
        retry = doc.get("retry", False)
        if type(retry) is not bool:
            raise _Failed("answer field retry must be true or false")
        code = _code(doc)
        if code == 0:
            raise _Failed("answer field code must not be UNHANDLED")
        return Reject(code, _message(doc), retry=retry)
    if decision == "repair":
        code = _code(doc, Code.INCOMPLETE_IDENTITY)
        if not 150 <= code <= 199:
            raise _Failed("answer field code of a repair must be in 150-199")
        return Repair(_message(doc), code=code)
    deadline_text = doc["deadline"]
    try:
        deadline = parse_timestamp(deadline_text)
    except (TypeError, ValueError, EnvelopeError) as exc:
        raise _Failed("answer field deadline is not an RFC 3339 time") from exc
    window = deadline - now
    if window <= timedelta(0) or window > MAX_PENDING:
        raise _Failed(f"answer field deadline must lie within {MAX_PENDING.days} days ahead")
    return Pending(message=_message(doc, "transfer is pending review by the beneficiary"),
                   window=window)


# ---------------------------------------------------------------------- handler


class WebhookHandler:
    """The handler that asks the back office (see the module docstring)."""

    def __init__(self, config: WebhookConfig, *, clock: Clock = utcnow,
                 wall: Callable[[], float] = time.time) -> None:
        if not config.keys:
            raise ConfigurationError("--webhook needs at least one signing key")
        self.config = config
        self.target = parse_target(config.url)
        if self.target.scheme != "https" and (config.ca or config.cert or config.key):
            raise UsageError("--webhook-ca/--webhook-cert/--webhook-key need an https:// "
                             "--webhook")
        if bool(config.cert) != bool(config.key):
            raise UsageError("--webhook-cert and --webhook-key go together")
        self.context = _tls_context(config) if self.target.scheme == "https" else None
        self.clock = clock
        self.wall = wall

    def __call__(self, incoming: Incoming) -> Outcome:
        eid = peer_text(incoming.envelope_id)
        try:
            doc = request_document(incoming)
        except (TypeError, json_format.Error):  # an Any of a type this node cannot show
            return Reject(Code.UNPARSEABLE_TRANSACTION,
                          "the payload holds a message type this beneficiary cannot read")
        body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        for attempt in range(1, self.config.attempts + 1):
            started = time.monotonic()
            try:
                outcome = decide(self._post(body), incoming, self.clock())
            except _Failed as failed:
                events.webhook_call(failed.kind, time.monotonic() - started)
                log.warning("webhook envelope=%s attempt=%d try=%d/%d failed: %s", eid,
                            incoming.attempt, attempt, self.config.attempts, failed.reason)
                if failed.transient and attempt < self.config.attempts:
                    time.sleep(_BACKOFF)
                    continue
                return Reject(Code.UNAVAILABLE, _UNAVAILABLE, retry=True)
            name = type(outcome).__name__.lower()
            events.webhook_call(name, time.monotonic() - started)
            log.info("webhook envelope=%s attempt=%d decision=%s", eid, incoming.attempt, name)
            return outcome
        return Reject(Code.UNAVAILABLE, _UNAVAILABLE, retry=True)  # attempts < 1

    def _connection(self) -> http.client.HTTPConnection:
        t, timeout = self.target, self.config.timeout
        if t.scheme == "unix":
            return _UnixConnection(t.socket_path, timeout)
        if t.scheme == "https":
            return http.client.HTTPSConnection(t.host, t.port, timeout=timeout,
                                               context=self.context)
        return http.client.HTTPConnection(t.host, t.port, timeout=timeout)

    def _post(self, body: bytes) -> bytes:
        """One try: the answer body of a 200 ``application/json`` answer, else _Failed."""
        conn = self._connection()
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "trisa-peer-webhook/1", **sign(self.config.keys, body,
                                                                self.wall())}
        # Every socket operation waits at most `timeout`; the timer ends the whole try
        # at `timeout` however slowly a back office drips bytes.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = threading.Timer(self.config.timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            conn.request("POST", self.target.path, body=body, headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                raise _Failed(f"HTTP status {response.status}"
                              + (" (redirects are not followed)"
                                 if 300 <= response.status < 400 else ""),
                              transient=response.status in _RETRY_STATUS, kind="error")
            ctype = (response.getheader("Content-Type") or "").lower().replace(" ", "")
            if ctype not in ("application/json", "application/json;charset=utf-8"):
                raise _Failed("answer content type is not application/json")
            length = response.getheader("Content-Length")
            if length is not None and (not length.isdigit() or int(length) > MAX_ANSWER):
                raise _Failed(f"answer larger than {MAX_ANSWER} bytes")
            answer = response.read(MAX_ANSWER + 1)
            if len(answer) > MAX_ANSWER:
                raise _Failed(f"answer larger than {MAX_ANSWER} bytes")
            if expired.is_set():
                raise _Failed("no answer in time", transient=True, kind="timeout")
            return answer
        except _Failed:
            raise
        except (OSError, http.client.HTTPException) as exc:
            if expired.is_set() or isinstance(exc, TimeoutError):
                raise _Failed(f"no answer within {self.config.timeout:g} s",
                              transient=True, kind="timeout") from exc
            if isinstance(exc, ssl.SSLError):
                raise _Failed(f"TLS failed ({exc.reason or type(exc).__name__})",
                              kind="unreachable") from exc
            what = exc.strerror if isinstance(exc, OSError) and exc.strerror else \
                type(exc).__name__
            raise _Failed(f"cannot reach the back office ({what})", transient=True,
                          kind="unreachable") from exc
        finally:
            timer.cancel()
            conn.close()
