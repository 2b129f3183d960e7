"""A local Sectigo IoT Manager: the API subset the TRISA directory uses, backed by the
project's own CA (:class:`trisa_peer.ca.CertificateAuthority`).

::

    with SectigoEmulator(ca_dir="ca", state_path="sectigo.json", username="admin",
                         password="secret", key_size=2048) as emu:
        client = SectigoClient(emu.base_url, "admin", "secret", cache_path=False)
        ...

or ``sectigo serve --addr 127.0.0.1:8831 --ca-dir ca --state sectigo.json`` with
``SECTIGO_USERNAME``/``SECTIGO_PASSWORD`` set.

Same paths, methods, JSON shapes and status codes as the real API
(upstream ``pkg/sectigo``; the staging server's quirk 10 in docs/architecture.md is not copied):

- ``POST /auth/pwd`` (401 on bad credentials), ``POST /auth/refresh`` (raw token
  body; the refresh token is reused, as Sectigo does). HS512 JWTs; access tokens live
  ``access_ttl`` (900 s), refresh tokens ``refresh_ttl`` (7200 s). Every
  ``/api/v1/*`` call needs ``Authorization: Bearer <access>`` (401 otherwise).
- One authority (id 1, ecosystem 100 "TRISA", profile 42 "TRISA Profile", balance 10
  by default); profile 42 takes exactly ``commonName``, ``dNSName`` (newline-separated)
  and ``pkcs12Password`` (unknown, missing or empty → 400); every value must match
  its parameter's ``validationPattern`` (as listed by ``profiles/42/parameters``; a
  full match, as Java's ``String.matches``) or the answer is 400 naming the parameter
  and the offending value (never a password's value). Each issued certificate
  costs one unit of balance; at zero, creation is refused (400).
- ``createSingleCertBatch`` answers 200 with a BatchResponse (batch ids from 24 and
  order numbers from 1024, as in the TRISA guide's sample). The key
  and certificate are made at once; the batch reports ``PROCESSING`` until
  ``issue_delay`` seconds have passed, then ``READY_FOR_DOWNLOAD``.
- Downloads (400 before ready) are ``<batchId>.zip`` holding ``<common name>.p12``
  (PBES2/AES-256, readable by OpenSSL 3 without ``-legacy``; ``legacy_pkcs12=True``
  for the 3DES/SHA-1 profile) with key, leaf, issuing CA and root; CSR batches hold
  ``<common name>.pem`` with the leaf and chain.
- ``certificates/find`` and ``certificates/{profile}/revoke`` work on the certificates
  issued here; a revocation (with its reason code) goes into the CA's CRL.

Extras that are not part of the Sectigo API: ``GET /status``, and (unauthenticated)
``GET /ca/crl.pem`` and ``GET /ca/trust.pem``.

State (batches, encrypted downloads, certificates, balances, token key) is kept in the
``state_path`` JSON file, rewritten atomically (0600) after every change, so a restart
keeps everything. PKCS#12 passwords are used once to encrypt the download and never
stored. All state changes hold one lock; the server is a ``ThreadingHTTPServer``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.message
import email.parser
import hashlib
import http.server
import io
import json
import logging
import re
import secrets
import sys
import threading
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509

from .. import __version__, events
from ..ca import CertificateAuthority, export_pkcs12_zip, p12_member_name
from ..certs import Identity, certs_to_pem, common_name, format_serial, parse_serial
from ..errors import CertificateError, ConfigurationError, TrisaPeerError
from ..fsutil import write_private
from ..logtext import peer_text
from ..revocation import REASONS
from . import paths, tokens
from .models import PROCESSING, READY_FOR_DOWNLOAD

__all__ = ["DEFAULT_AUTHORITIES", "DEFAULT_PROFILES", "SectigoEmulator"]

log = logging.getLogger(__name__)

_STATE_FORMAT = "trisa-peer-sectigo-emulator/1"
_JSON = "application/json;charset=UTF-8"
_MAX_BODY = 8 * 1024 * 1024
_MAX_CSRS = 100
#: the TRISA guide's walkthrough uses batch 24, order 1024 (spec §15): the first
#: batch of a fresh service gets exactly those, so the guide runs as printed
_FIRST_BATCH_ID = 24
_FIRST_ORDER_NUMBER = 1024
_ISSUER = "https://iot.sectigo.com/"
_CSR_PEM = re.compile(
    rb"-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----.+?-----END (?:NEW )?CERTIFICATE REQUEST-----",
    re.DOTALL,
)

#: The authorities of a fresh emulator (the TRISA documentation's example values).
DEFAULT_AUTHORITIES: tuple[dict[str, Any], ...] = (
    {
        "id": 1,
        "ecosystemId": 100,
        "signerCertificateId": 1,
        "ecosystemName": "TRISA",
        "balance": 10,
        "enabled": True,
        "profileId": 42,
        "profileName": "TRISA Profile",
    },
)


def _param(name: str, title: str, placeholder: str, message: str, pattern: str) -> dict[str, Any]:
    return {
        "name": name,
        "inputType": "TEXT" if name != "pkcs12Password" else "PASSWORD",
        "required": True,
        "placeholder": placeholder,
        "validationPattern": pattern,
        "message": message,
        "value": None,
        "title": title,
        "scopes": ["CERTIFICATE"],
        "dynamic": False,
    }


#: Profiles as data (upstream hard-codes them): id -> detail + parameters.
DEFAULT_PROFILES: dict[int, dict[str, Any]] = {
    42: {
        "profileName": "TRISA Profile",
        "ca": "TRISA",
        "algorithms": ["RSA"],
        "keyAlgorithmInfo": "RSA - 4096",
        "params": [
            _param("commonName", "Common Name", "vasp.example.com",
                   "Common name is required", r"^[A-Za-z0-9*][A-Za-z0-9.*-]*$"),
            _param("dNSName", "DNS Names", "vasp.example.com",
                   "One DNS name per line", r"^[A-Za-z0-9*][A-Za-z0-9.*\n-]*$"),
            _param("pkcs12Password", "PKCS#12 Password", "",
                   "A password for the PKCS#12 file is required", r"^.+$"),
        ],
    },
}

_STATUS_TEXT = {
    PROCESSING: "Processing",
    READY_FOR_DOWNLOAD: "Ready for download",
    "BROKEN": "Broken",
    "REJECTED": "Rejected",
    "REVOKED": "Revoked",
}


def _sectigo_date(ts: float) -> str:
    """``2020-12-10T16:35:32.805+0000``."""
    when = datetime.fromtimestamp(ts, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


class _HTTPFailure(Exception):
    """An error answer (internal to the emulator: becomes an APIError body)."""

    def __init__(self, status: int, message: str, error_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code if error_code is not None else status * 100


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()


def _json_answer(doc: Any, status: int = 200) -> _Answer:
    return _Answer(status, json.dumps(doc).encode("utf-8"))


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    headers: email.message.Message
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _HTTPFailure(400, "request body is not valid JSON") from None


class SectigoEmulator:
    """A Sectigo-compatible HTTP service on loopback (see the module docstring).

    ``issue_delay`` seconds pass between creation and ``READY_FOR_DOWNLOAD``;
    ``key_size`` is the RSA size of issued keys (and of a new CA); ``access_ttl`` /
    ``refresh_ttl`` are token lifetimes in seconds; ``clock`` returns Unix time.
    ``counters`` counts requests per route (``"auth/pwd"``, ``"auth/refresh"``, ...).
    """

    def __init__(
        self,
        *,
        ca_dir: str | Path,
        state_path: str | Path,
        username: str,
        password: str,
        issue_delay: float = 0.0,
        key_size: int = 4096,
        legacy_pkcs12: bool = False,
        access_ttl: int = 900,
        refresh_ttl: int = 7200,
        balance: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not username or not password:
            raise ConfigurationError("the Sectigo emulator needs a username and a password")
        if access_ttl <= 0 or refresh_ttl <= 0:
            raise ConfigurationError("token lifetimes must be positive")
        if issue_delay < 0:
            raise ConfigurationError("issue delay must not be negative")
        self.username = username
        self._password = password
        self.issue_delay = float(issue_delay)
        self.key_size = int(key_size)
        self.legacy_pkcs12 = legacy_pkcs12
        self.access_ttl = int(access_ttl)
        self.refresh_ttl = int(refresh_ttl)
        self.clock = clock
        self.state_path = Path(state_path)
        self.ca = CertificateAuthority.open_or_init(Path(ca_dir), key_size=self.key_size)
        self.counters: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._state = self._load_state(balance)
        self._secret = base64.b64decode(self._state["token_secret"])
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()

    # ----------------------------------------------------------------- lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: any free port) in a background thread; return
        the base URL."""
        if self._server is not None:
            raise ConfigurationError("the Sectigo emulator is already running")
        try:
            server = _Server((host, port), _Handler)
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        server.emulator = self
        self._server = server
        self._started = time.monotonic()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name="sectigo-emulator", daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop listening (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SectigoEmulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise ConfigurationError("the Sectigo emulator is not running")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def base_url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    # ----------------------------------------------------------------- state

    def _load_state(self, balance: int | None) -> dict[str, Any]:
        path = self.state_path
        if path.exists():
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"{path}: unreadable emulator state: {exc}") from exc
            if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
                raise ConfigurationError(f"{path}: not a Sectigo emulator state file")
            if balance is not None:
                for auth in state["authorities"]:
                    auth["balance"] = int(balance)
            return state
        authorities = [dict(a) for a in DEFAULT_AUTHORITIES]
        if balance is not None:
            for auth in authorities:
                auth["balance"] = int(balance)
        state = {
            "format": _STATE_FORMAT,
            "token_secret": base64.b64encode(secrets.token_bytes(64)).decode("ascii"),
            "next_batch_id": _FIRST_BATCH_ID,
            "next_order_number": _FIRST_ORDER_NUMBER,
            "next_device_id": 1,
            "ordered": sum(int(a["balance"]) for a in authorities),
            "authorities": authorities,
            "batches": {},
            "certificates": {},
        }
        self._write_state(state)
        return state

    def _write_state(self, state: dict[str, Any] | None = None) -> None:
        data = json.dumps(state if state is not None else self._state, indent=1, sort_keys=True)
        try:
            if not self.state_path.parent.is_dir():
                self.state_path.parent.mkdir(parents=True, mode=0o700)
            write_private(self.state_path, data.encode("utf-8") + b"\n")
        except OSError as exc:
            raise ConfigurationError(f"{self.state_path}: cannot write: {exc.strerror}") from exc

    @contextlib.contextmanager
    def _mutate(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            yield self._state
            self._write_state()

    def set_balance(self, authority_id: int, balance: int) -> None:
        """Set an authority's available balance (tests, operators)."""
        with self._mutate() as state:
            self._authority(state, authority_id)["balance"] = int(balance)

    def balance(self, authority_id: int) -> int:
        with self._lock:
            return int(self._authority(self._state, authority_id)["balance"])

    @staticmethod
    def _authority(state: dict[str, Any], authority_id: int) -> dict[str, Any]:
        for auth in state["authorities"]:
            if int(auth["id"]) == int(authority_id):
                return auth  # type: ignore[no-any-return]
        raise _HTTPFailure(404, f"authority {authority_id} not found")

    # ----------------------------------------------------------------- tokens

    def _mint_pair(self) -> tuple[str, str]:
        now = int(self.clock())
        user_id = int.from_bytes(hashlib.sha256(self.username.encode()).digest()[:4], "big")
        subject = f"/account/1/user/{user_id % 100000}"
        def mint(ttl: int, scope: str, **extra: Any) -> str:
            claims = {"iss": _ISSUER, "sub": subject, "iat": now, "exp": now + ttl,
                      "jti": uuid.uuid4().hex, "scopes": [scope], **extra}
            return tokens.mint(claims, self._secret)

        access = mint(self.access_ttl, "ROLE_USER", **{"first-login": False})
        refresh = mint(self.refresh_ttl, "ROLE_REFRESH_TOKEN")
        return access, refresh

    def _token_claims(self, token: str, scope: str) -> dict[str, Any] | None:
        claims = tokens.verify(token, self._secret, now=self.clock())
        if claims is None or scope not in (claims.get("scopes") or []):
            return None
        return claims

    # ----------------------------------------------------------------- dispatch

    def _dispatch(self, req: _Request) -> _Answer:
        path = req.path.split("?", 1)[0].rstrip("/") or "/"
        allowed: list[str] = []
        for route in paths.ROUTES:
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            if route.method != req.method:
                allowed.append(route.method)
                continue
            with self._lock:
                self.counters[route.name] += 1
            if route.auth:
                self._authenticate(req)
            handler: Callable[..., _Answer] = getattr(self, "_h_" + route.name.replace("/", "_"))
            return handler(req, *match.groups())
        if allowed:
            raise _HTTPFailure(405, f"method {req.method} not allowed on {path}")
        raise _HTTPFailure(404, f"no such resource {path}")

    def _authenticate(self, req: _Request) -> None:
        header = req.headers.get("Authorization") or ""
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _HTTPFailure(401, "Full authentication is required to access this resource")
        if self._token_claims(token.strip(), "ROLE_USER") is None:
            raise _HTTPFailure(401, "access token is invalid or expired")

    @staticmethod
    def _int(text: str, what: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _HTTPFailure(400, f"{what} must be an integer, not {text[:40]!r}") from None
        return value

    # ----------------------------------------------------------------- handlers

    def _h_status(self, req: _Request) -> _Answer:
        uptime = time.monotonic() - self._started
        return _json_answer({"status": "ok", "version": __version__, "uptime": f"{uptime:.0f}s"})

    def _h_crl(self, req: _Request) -> _Answer:
        from cryptography.hazmat.primitives import serialization

        with self._lock:
            pem = self.ca.crl().public_bytes(serialization.Encoding.PEM)
        return _Answer(200, pem, "application/x-pem-file")

    def _h_trust(self, req: _Request) -> _Answer:
        return _Answer(200, self.ca.trust_pem(), "application/x-pem-file")

    def _h_auth_pwd(self, req: _Request) -> _Answer:
        doc = req.json()
        if not isinstance(doc, dict):
            raise _HTTPFailure(400, "expected a JSON object with username and password")
        user, pwd = doc.get("username"), doc.get("password")
        if not isinstance(user, str) or not isinstance(pwd, str):
            raise _HTTPFailure(400, "username and password are required")
        ok_user = secrets.compare_digest(user.encode(), self.username.encode())
        ok_pwd = secrets.compare_digest(pwd.encode(), self._password.encode())
        if not (ok_user and ok_pwd):
            raise _HTTPFailure(401, "Bad credentials")
        access, refresh = self._mint_pair()
        return _json_answer({"accessToken": access, "refreshToken": refresh})

    def _h_auth_refresh(self, req: _Request) -> _Answer:
        text = req.body.decode("utf-8", "replace").strip()
        if text.startswith('"'):
            with contextlib.suppress(ValueError):
                text = str(json.loads(text))
        if not text or self._token_claims(text, "ROLE_REFRESH_TOKEN") is None:
            raise _HTTPFailure(401, "refresh token is invalid or expired")
        access, _ = self._mint_pair()
        # Sectigo reuses the refresh token: it is not extended by refreshing
        return _json_answer({"accessToken": access, "refreshToken": text})

    def _h_authorities(self, req: _Request) -> _Answer:
        with self._lock:
            return _json_answer([dict(a) for a in self._state["authorities"]])

    def _h_balance(self, req: _Request, ident: str) -> _Answer:
        aid = self._int(ident, "authority id")
        with self._lock:
            return _json_answer(int(self._authority(self._state, aid)["balance"]))

    def _h_devices(self, req: _Request) -> _Answer:
        with self._lock:
            issued = len(self._state["certificates"])
            return _json_answer({"ordered": int(self._state["ordered"]), "issued": issued})

    def _h_profiles(self, req: _Request) -> _Answer:
        return _json_answer(
            [
                {"profileId": pid, "algorithms": list(p["algorithms"]), "ca": p["ca"]}
                for pid, p in sorted(DEFAULT_PROFILES.items())
            ]
        )

    def _profile(self, ident: str) -> tuple[int, dict[str, Any]]:
        pid = self._int(ident, "profile id")
        profile = DEFAULT_PROFILES.get(pid)
        if profile is None:
            raise _HTTPFailure(404, f"profile {pid} not found")
        return pid, profile

    def _h_profile(self, req: _Request, ident: str) -> _Answer:
        pid, profile = self._profile(ident)
        raw = {
            "name": profile["profileName"],
            "keyAlgorithm": "RSA",
            "keySize": self.key_size,
            "parameters": [p["name"] for p in profile["params"]],
        }
        return _json_answer(
            {
                "profileName": profile["profileName"],
                "profileId": pid,
                "rawProfileConfig": json.dumps(raw),
                "name": profile["profileName"],
                "keyAlgorithmInfo": f"RSA - {self.key_size}",
            }
        )

    def _h_profile_params(self, req: _Request, ident: str) -> _Answer:
        _, profile = self._profile(ident)
        return _json_answer([dict(p) for p in profile["params"]])

    def _h_organization(self, req: _Request) -> _Answer:
        with self._lock:
            authorities = [dict(a) for a in self._state["authorities"]]
        return _json_answer(
            {
                "organizationId": 1,
                "organizationName": "TRISA Local Emulator",
                "address": "",
                "primaryContactName": "",
                "primaryContactEmail": "",
                "primaryContactPhone": "",
                "manufactureId": "",
                "logo": "",
                "authorities": authorities,
                "ecosystemId": 100,
                "organizationParameters": {},
                "orgStatus": "ACTIVE",
            }
        )

    # -- batches

    def _check_params(self, profile: dict[str, Any], params: Any) -> dict[str, str]:
        if not isinstance(params, dict):
            raise _HTTPFailure(400, "profileParams must be an object")
        names = [p["name"] for p in profile["params"]]
        for key, value in params.items():
            if key not in names:
                raise _HTTPFailure(400, f"unknown profile parameter {str(key)[:60]!r}")
            if not isinstance(value, str):
                raise _HTTPFailure(400, f"profile parameter {key} must be a string")
            if not value.strip():
                raise _HTTPFailure(400, f"profile parameter {key} must not be empty")
        for name in names:
            if name not in params:
                raise _HTTPFailure(400, f"missing required profile parameter {name}")
        if "dNSName" in params and any(not ln.strip() for ln in params["dNSName"].split("\n")):
            raise _HTTPFailure(400, "dNSName must hold one DNS name per line, no empty lines")
        for spec in profile["params"]:
            _check_pattern(spec, params.get(spec["name"]))
        return {str(k): str(v) for k, v in params.items()}

    def _reserve(self, authority: dict[str, Any], count: int) -> tuple[int, int]:
        """Take ``count`` units of balance and a batch id (caller holds the lock)."""
        if not authority.get("enabled", True):
            raise _HTTPFailure(400, f"authority {authority['id']} is disabled")
        if int(authority["balance"]) < count:
            raise _HTTPFailure(
                400,
                f"authority {authority['id']} has no available balance "
                f"({authority['balance']} left, {count} needed)",
                error_code=-5000,
            )
        authority["balance"] = int(authority["balance"]) - count
        bid = int(self._state["next_batch_id"])
        self._state["next_batch_id"] = bid + 1
        order = int(self._state["next_order_number"])
        self._state["next_order_number"] = order + 1
        return bid, order

    def _refund(self, authority_id: int, count: int) -> None:
        with self._mutate() as state:
            auth = self._authority(state, authority_id)
            auth["balance"] = int(auth["balance"]) + count

    def _record_batch(
        self,
        *,
        bid: int,
        order: int,
        name: str,
        authority: dict[str, Any],
        kind: str,
        zip_bytes: bytes,
        certs: list[x509.Certificate],
        created: float,
    ) -> dict[str, Any]:
        with self._mutate() as state:
            serials = []
            for cert in certs:
                serial = format_serial(cert.serial_number)
                serials.append(serial)
                device = int(state["next_device_id"])
                state["next_device_id"] = device + 1
                state["certificates"][serial] = {
                    "deviceId": device,
                    "commonName": common_name(cert),
                    "serialNumber": serial,
                    "creationDate": _sectigo_date(created),
                    "status": "valid",
                    "batchId": bid,
                    "profileId": int(authority["profileId"]),
                    "revocationReason": None,
                }
            batch = {
                "batchId": bid,
                "orderNumber": order,
                "creationDate": _sectigo_date(created),
                "profile": authority["profileName"],
                "profileId": int(authority["profileId"]),
                "authorityId": int(authority["id"]),
                "size": len(certs),
                "batchName": name,
                "rejectReason": "",
                "userId": 1,
                "kind": kind,
                "created": created,
                "readyAt": created + self.issue_delay,
                "serials": serials,
                "zip": base64.b64encode(zip_bytes).decode("ascii"),
            }
            state["batches"][str(bid)] = batch
            return self._batch_response(batch)

    def _h_batches_create(self, req: _Request) -> _Answer:
        doc = req.json()
        if not isinstance(doc, dict):
            raise _HTTPFailure(400, "expected a JSON object")
        aid, name = doc.get("authorityId"), doc.get("batchName")
        if not isinstance(aid, int) or isinstance(aid, bool):
            raise _HTTPFailure(400, "authorityId must be an integer")
        if not isinstance(name, str) or not name.strip():
            raise _HTTPFailure(400, "batchName is required")
        with self._mutate() as state:
            authority = self._authority(state, aid)
            profile = DEFAULT_PROFILES.get(int(authority["profileId"]))
            if profile is None:
                raise _HTTPFailure(400, f"authority {aid} has no usable profile")
            params = self._check_params(profile, doc.get("profileParams"))
            bid, order = self._reserve(authority, 1)
            authority = dict(authority)
        created = self.clock()
        try:
            cn = params["commonName"].strip()
            dns = [ln.strip() for ln in params.get("dNSName", "").split("\n") if ln.strip()]
            ident = self.ca.issue(
                cn,
                dns_names=dns,
                key_size=self.key_size,
                organization=params.get("organizationName"),
                country=params.get("countryName"),
            )
            # Sectigo's PKCS#12 carries the issuing CA *and* the root
            full = Identity(key=ident.key, leaf=ident.leaf, chain=(self.ca.issuing, self.ca.root))
            zip_bytes = export_pkcs12_zip(
                full, params["pkcs12Password"], batch_name=name, legacy=self.legacy_pkcs12
            )
        except TrisaPeerError as exc:
            self._refund(aid, 1)
            raise _HTTPFailure(400, f"cannot issue certificate: {exc}") from exc
        except BaseException:
            self._refund(aid, 1)
            raise
        return _json_answer(
            self._record_batch(
                bid=bid, order=order, name=name, authority=authority, kind="single",
                zip_bytes=zip_bytes, certs=[ident.leaf], created=created,
            )
        )

    def _h_batches_upload(self, req: _Request) -> _Answer:
        ctype = req.headers.get("Content-Type") or ""
        msg = email.message.Message()
        msg["Content-Type"] = ctype
        boundary = msg.get_param("boundary")
        if msg.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
            raise _HTTPFailure(400, "expected multipart/form-data")
        parts = _parse_multipart(req.body, boundary.encode("latin-1"))
        fields = [p for p in parts if p[0] == "profileId"]
        files = [p for p in parts if p[0] == "files"]
        if len(fields) != 1:
            raise _HTTPFailure(400, "the profileId field is required")
        if len(files) != 1:
            raise _HTTPFailure(400, "exactly one files part is required")
        pid = self._int(fields[0][2].decode("utf-8", "replace").strip(), "profileId")
        for part in parts:
            if part[0] == "csrBatchRequest":
                try:
                    meta = json.loads(part[2].decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    raise _HTTPFailure(400, "csrBatchRequest is not valid JSON") from None
                if isinstance(meta, dict) and meta.get("profileId") not in (None, pid):
                    raise _HTTPFailure(400, "csrBatchRequest profileId does not match")
        if pid not in DEFAULT_PROFILES:
            raise _HTTPFailure(404, f"profile {pid} not found")
        filename = files[0][1] or "upload"
        csrs = _extract_csrs(files[0][2], filename)
        for index, pem in enumerate(csrs, 1):
            try:
                csr = x509.load_pem_x509_csr(pem)
                valid = csr.is_signature_valid
            except (ValueError, TypeError):
                raise _HTTPFailure(400, f"{filename}: CSR #{index} is malformed") from None
            if not valid:
                raise _HTTPFailure(400, f"{filename}: CSR #{index} has an invalid signature")
        with self._mutate() as state:
            candidates = [a for a in state["authorities"] if int(a["profileId"]) == pid]
            if not candidates:
                raise _HTTPFailure(404, f"profile {pid} not found")
            funded = [a for a in candidates if int(a["balance"]) >= len(csrs)]
            authority = funded[0] if funded else candidates[0]
            bid, order = self._reserve(authority, len(csrs))
            authority = dict(authority)
        created = self.clock()
        certs: list[x509.Certificate] = []
        try:
            for pem in csrs:
                certs.append(self.ca.sign_csr(pem))
        except (CertificateError, ConfigurationError) as exc:
            self._refund(int(authority["id"]), len(csrs))
            raise _HTTPFailure(400, f"{filename}: cannot sign CSR: {exc}") from exc
        except BaseException:
            self._refund(int(authority["id"]), len(csrs))
            raise
        buf = io.BytesIO()
        used: set[str] = set()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for cert in certs:
                stem = p12_member_name(common_name(cert) or "certificate")[: -len(".p12")]
                member, n = f"{stem}.pem", 0
                while member in used:
                    n += 1
                    member = f"{stem}-{n}.pem"
                used.add(member)
                zf.writestr(member, certs_to_pem([cert, self.ca.issuing, self.ca.root]))
        name = f"CSR upload {filename}"
        return _json_answer(
            self._record_batch(
                bid=bid, order=order, name=name, authority=authority, kind="csr",
                zip_bytes=buf.getvalue(), certs=certs, created=created,
            )
        )

    def _batch_status(self, batch: dict[str, Any]) -> str:
        if "status" in batch:  # a final state set explicitly
            return str(batch["status"])
        return READY_FOR_DOWNLOAD if self.clock() >= float(batch["readyAt"]) else PROCESSING

    def _batch_response(self, batch: dict[str, Any]) -> dict[str, Any]:
        status = self._batch_status(batch)
        return {
            "batchId": batch["batchId"],
            "orderNumber": batch["orderNumber"],
            "creationDate": batch["creationDate"],
            "profile": batch["profile"],
            "size": batch["size"],
            "status": status,
            "active": status == PROCESSING,
            "batchName": batch["batchName"],
            "rejectReason": batch["rejectReason"],
            "generatorParametersValues": None,
            "userId": batch["userId"],
            "downloadable": status == READY_FOR_DOWNLOAD,
            "rejectable": status == PROCESSING,
        }

    def _batch(self, ident: str) -> dict[str, Any]:
        bid = self._int(ident, "batch id")
        batch = self._state["batches"].get(str(bid))
        if batch is None:
            raise _HTTPFailure(404, f"batch {bid} not found")
        return dict(batch)

    def _h_batch(self, req: _Request, ident: str) -> _Answer:
        with self._lock:
            return _json_answer(self._batch_response(self._batch(ident)))

    def _h_batch_status(self, req: _Request, ident: str) -> _Answer:
        with self._lock:
            status = self._batch_status(self._batch(ident))
        text = _STATUS_TEXT.get(status, status.replace("_", " ").capitalize())
        return _Answer(200, text.encode(), "text/plain;charset=UTF-8")

    def _h_batch_info(self, req: _Request, ident: str) -> _Answer:
        with self._lock:
            batch = self._batch(ident)
            status = self._batch_status(batch)
        size = int(batch["size"])
        return _json_answer(
            {
                "active": size if status == PROCESSING else 0,
                "success": size if status == READY_FOR_DOWNLOAD else 0,
                "failed": size if status not in (PROCESSING, READY_FOR_DOWNLOAD) else 0,
            }
        )

    def _h_batch_download(self, req: _Request, ident: str) -> _Answer:
        with self._lock:
            batch = self._batch(ident)
            status = self._batch_status(batch)
        if status != READY_FOR_DOWNLOAD:
            raise _HTTPFailure(
                400, f"batch {batch['batchId']} is not ready for download (status {status})"
            )
        data = base64.b64decode(batch["zip"])
        return _Answer(
            200,
            data,
            "application/octet-stream",
            (("Content-Disposition", f'attachment; filename="{batch["batchId"]}.zip"'),),
        )

    # -- certificates

    def _visible(self, cert: dict[str, Any]) -> bool:
        batch = self._state["batches"].get(str(cert["batchId"]))
        return batch is not None and self._batch_status(batch) != PROCESSING

    def _h_certificates_find(self, req: _Request) -> _Answer:
        doc = req.json()
        if not isinstance(doc, dict):
            raise _HTTPFailure(400, "expected a JSON object")
        cn, serial = doc.get("commonName"), doc.get("serialNumber")
        if cn is not None and not isinstance(cn, str):
            raise _HTTPFailure(400, "commonName must be a string")
        if serial is not None and not isinstance(serial, str):
            raise _HTTPFailure(400, "serialNumber must be a string")
        if not (cn and cn.strip()) and not (serial and serial.strip()):
            raise _HTTPFailure(400, "commonName or serialNumber is required")
        want_serial = _normal_serial(serial) if serial and serial.strip() else None
        with self._lock:
            items = []
            for cert in self._state["certificates"].values():
                if not self._visible(cert):
                    continue
                if cn and cn.strip() and cert["commonName"].lower() != cn.strip().lower():
                    continue
                if want_serial is not None and cert["serialNumber"] != want_serial:
                    continue
                items.append(
                    {k: cert[k] for k in
                     ("deviceId", "commonName", "serialNumber", "creationDate", "status")}
                )
        items.sort(key=lambda item: int(item["deviceId"]))
        return _json_answer({"totalCount": len(items), "items": items})

    def _h_certificates_revoke(self, req: _Request, ident: str) -> _Answer:
        pid = self._int(ident, "profile id")
        doc = req.json()
        if not isinstance(doc, dict):
            raise _HTTPFailure(400, "expected a JSON object")
        code, serial = doc.get("reasonCode"), doc.get("serialNumber")
        if not isinstance(code, int) or isinstance(code, bool) or code not in REASONS:
            raise _HTTPFailure(400, "reasonCode must be an RFC 5280 reason code (0-10, not 7)")
        if not isinstance(serial, str) or not serial.strip():
            raise _HTTPFailure(400, "serialNumber is required")
        key = _normal_serial(serial)
        with self._mutate() as state:
            cert = state["certificates"].get(key)
            if cert is None or int(cert["profileId"]) != pid:
                raise _HTTPFailure(404, f"certificate {key} not found in profile {pid}")
            if cert["status"] == "revoked":
                raise _HTTPFailure(400, f"certificate {key} is already revoked")
            try:
                self.ca.revoke(int(key, 16), code)
            except ConfigurationError as exc:
                raise _HTTPFailure(400, f"cannot revoke certificate {key}: {exc}") from exc
            cert["status"] = "revoked"
            cert["revocationReason"] = code
            cert["revocationDate"] = _sectigo_date(self.clock())
        return _json_answer(None)


def _check_pattern(spec: dict[str, Any], value: Any) -> None:
    """400 unless ``value`` matches the parameter's ``validationPattern`` in full."""
    pattern = spec.get("validationPattern")
    if not isinstance(pattern, str) or not pattern or not isinstance(value, str):
        return
    try:
        regex = re.compile(pattern)
    except re.error:  # a broken profile definition is the server's fault
        log.error("profile parameter %s has an invalid validationPattern", spec["name"])
        raise _HTTPFailure(500, f"profile parameter {spec['name']} cannot be validated") from None
    if regex.fullmatch(value):
        return
    name = spec["name"]
    if spec.get("inputType") == "PASSWORD":  # never echo a secret
        raise _HTTPFailure(400, f"profile parameter {name} does not match the profile's "
                                f"validation pattern {pattern}")
    shown = value
    if "\n" in value:  # one name per line: point at the first offending one
        shown = next((ln for ln in value.split("\n") if not regex.fullmatch(ln)), value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise _HTTPFailure(
        400, f"profile parameter {name}: {shown!r} is not valid "
             f"(must match the validation pattern {pattern})"
    )


def _normal_serial(text: str) -> str:
    try:
        return format_serial(parse_serial(text))
    except ValueError:
        raise _HTTPFailure(400, "serialNumber must be hexadecimal") from None


def _parse_multipart(body: bytes, boundary: bytes) -> list[tuple[str, str, bytes]]:
    """``(field name, filename, content)`` for each part of a multipart body."""
    if not boundary or len(boundary) > 200:
        raise _HTTPFailure(400, "bad multipart boundary")
    chunks = body.split(b"--" + boundary)
    if len(chunks) < 3:
        raise _HTTPFailure(400, "malformed multipart body")
    parts: list[tuple[str, str, bytes]] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise _HTTPFailure(400, "malformed multipart part")
        headers = email.parser.HeaderParser().parsestr(head.decode("utf-8", "replace"))
        name = headers.get_param("name", header="content-disposition")
        filename = headers.get_filename() or ""
        parts.append((str(name or ""), str(filename), content.removesuffix(b"\r\n")))
    return parts


def _extract_csrs(data: bytes, filename: str) -> list[bytes]:
    """The PEM CSRs of an uploaded file: concatenated PEM, or a zip of .csr/.pem files."""
    blobs: list[bytes] = []
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for info in zf.infolist()[: _MAX_CSRS * 2]:
                    wanted = info.filename.lower().endswith((".csr", ".pem"))
                    if wanted and info.file_size < 1 << 20:
                        blobs.append(zf.read(info))
        except (zipfile.BadZipFile, OSError, ValueError, binascii.Error):
            raise _HTTPFailure(400, f"{filename}: not a readable zip archive") from None
    else:
        blobs.append(data)
    csrs = [m.group(0) for blob in blobs for m in _CSR_PEM.finditer(blob)]
    if not csrs:
        raise _HTTPFailure(400, f"{filename}: no PEM certificate signing request found")
    if len(csrs) > _MAX_CSRS:
        raise _HTTPFailure(400, f"{filename}: more than {_MAX_CSRS} CSRs in one batch")
    return csrs


# --------------------------------------------------------------------------- HTTP


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    emulator: SectigoEmulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line instead of socketserver's traceback on stderr: a client that
        hangs up mid-request (a timeout on its side) is routine, not a crash."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("client %s went away: %s", client_address[0], type(exc).__name__)
        else:
            log.warning("request from %s failed: %s: %s", client_address[0],
                        type(exc).__name__, peer_text(str(exc), 200))


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    server_version = "SectigoEmulator/" + __version__
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        # request lines only (INFO: shown by ``sectigo -v serve``): paths carry no
        # secrets, headers and bodies are never logged
        log.info("%s %s", self.address_string(), peer_text(format % args, 300),
                 extra={"event": "request", "service": "sectigo",
                        "method": _route(self.command, self.path),
                        "latency": round(events.elapsed(), 6)})

    def _handle(self) -> None:
        events.begin_call()  # a request id for this request's log lines
        emulator = self.server.emulator
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY:
            self._send(_error_answer(400 if length < 0 else 413, "bad request body length"))
            return
        body = self.rfile.read(length) if length else b""
        req = _Request(self.command, self.path, self.headers, body)
        try:
            answer = emulator._dispatch(req)
        except _HTTPFailure as exc:
            answer = _error_answer(exc.status, exc.message, exc.error_code)
        except Exception:
            log.exception("Sectigo emulator: internal error on %s %s", self.command, self.path)
            answer = _error_answer(500, "internal server error")
        self._send(answer)
        events.request("sectigo", _route(self.command, self.path), str(answer.status),
                       events.elapsed())

    def _send(self, answer: _Answer) -> None:
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for key, value in answer.headers:
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


def _route(method: str, path: str) -> str:
    """The route name of a request (a bounded label), ``other`` when none matches."""
    path = path.split("?", 1)[0].rstrip("/") or "/"
    for route in paths.ROUTES:
        if route.method == method and route.pattern.fullmatch(path):
            return route.name
    return "other"


def _error_answer(status: int, message: str, error_code: int | None = None) -> _Answer:
    body = {
        "status": status,
        "message": message,
        "errorCode": error_code if error_code is not None else status * 100,
        "timestamp": int(time.time() * 1000),
    }
    return _Answer(status, json.dumps(body).encode("utf-8"))
