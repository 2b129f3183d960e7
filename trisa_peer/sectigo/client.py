"""A client for the Sectigo IoT Manager API (and the local emulator), stdlib only.

::

    client = SectigoClient("https://iot.sectigo.com", "user", "secret")
    batch = client.create_single_cert_batch(
        1, "example.com", {"commonName": "example.com", "dNSName": "example.com",
                           "pkcs12Password": "..."})
    while client.batch_status(batch["batchId"]) != "READY_FOR_DOWNLOAD":
        time.sleep(30)
    path = client.download(batch["batchId"], "certs")

Behaviour: upstream's ``pkg/sectigo`` client, without its quirks 1, 2, 6 and 11
(docs/architecture.md, "Upstream quirks not copied"):

- Before every authenticated call the access token's ``exp`` is checked (JWTs are
  read without verification); an expired token is refreshed (``POST /auth/refresh``
  with the raw refresh token) or, when that is impossible or fails, replaced by a
  password login. A 401 on a call made with a cached token triggers one re-login.
- Tokens are cached 0600 in ``${XDG_CACHE_HOME:-~/.cache}/trisa/sectigo/
  credentials.json`` (``cache_path=False`` disables the cache), keyed by endpoint and
  username: a client with a username never uses tokens cached for another user (or
  for an unknown one). A password login the server rejects (401/403) also forgets
  the tokens cached for that user. A cache that cannot be written does not fail the
  call: the reason is kept in :attr:`SectigoClient.cache_error` (and logged unless
  ``warn_cache_errors=False``). The password is never written, logged or put into
  an error message.
- Each request is logged at INFO as ``METHOD PATH -> STATUS`` (never headers,
  tokens or bodies).
- Every request has a timeout (``timeout``, default 30 s). Only idempotent calls
  (GETs) are retried, on connection errors and 502/503/504, at most ``retries``
  attempts with exponential backoff. Creating, uploading and revoking are never
  retried (a second attempt could issue or revoke twice).
- Error bodies are decoded by media type (``application/json; charset=utf-8`` and
  friends); a non-2xx answer raises :class:`~.models.SectigoAPIError` (a
  :class:`~trisa_peer.errors.SectigoError`) with a one-line message such as
  ``batch 123 not found (404)``. Every failure is a ``SectigoError``; an unknown
  revocation reason is a :class:`~trisa_peer.errors.ConfigurationError` from
  :func:`trisa_peer.revocation.parse_reason`.
- Downloads check the status, the media type and the zip signature before anything
  is written; the file is written atomically under a sanitised name (the directory
  is created 0700 on request, ``make_dirs=True``).
"""

from __future__ import annotations

import email.message
import http.client
import io
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..certs import clean_serial, format_serial
from ..errors import SectigoError
from ..fsutil import write_private
from ..logtext import peer_text
from ..netutil import is_loopback
from ..revocation import parse_reason
from . import paths
from .models import COLLECTED, DEFAULT_ENDPOINT, SectigoAPIError, normalize_status
from .tokens import Credentials, default_cache_path

__all__ = ["DEFAULT_TIMEOUT", "USER_AGENT", "SectigoClient", "normalize_serial"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
USER_AGENT = "trisa-peer Sectigo Client v1.1"
JSON_TYPE = "application/json;charset=UTF-8"
MAX_BODY = 64 * 1024 * 1024
_ZIP_TYPES = frozenset(
    {
        "application/zip",
        "application/octet-stream",
        "application/x-zip",
        "application/x-zip-compressed",
        "multipart/x-zip",
    }
)
_RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    headers: email.message.Message
    body: bytes

    @property
    def media_type(self) -> str:
        return _media_type(self.headers.get("Content-Type"))


def _media_type(value: str | None) -> str:
    """The lower-case ``type/subtype`` of a Content-Type header ('' when absent)."""
    if not value:
        return ""
    msg = email.message.Message()
    msg["Content-Type"] = value
    # get_content_type() falls back to text/plain for garbage; check the raw value
    raw = value.split(";", 1)[0].strip().lower()
    return msg.get_content_type() if "/" in raw else raw


def _is_json_type(media: str) -> bool:
    if media == "application/json":
        return True
    return media.startswith("application/") and media.endswith("+json")


def _not_http(line: object) -> str:
    """What a server answered instead of an HTTP status line, in words (never its bytes:
    they may be binary, and are not ours to echo)."""
    raw = line if isinstance(line, bytes) else str(line).encode("latin-1", "replace")
    if len(raw) >= 9 and raw[3] == 0x04 and raw[:3] != b"HTT":
        # an HTTP/2 SETTINGS frame (type 4) straight away: what a gRPC server sends
        return "with HTTP/2 frames, not HTTP/1.1: a gRPC port?"
    if not raw.strip():
        return "an empty line, not HTTP"
    printable = all(32 <= b < 127 or b in (9, 10, 13) for b in raw)
    what = "text" if printable else "binary data"
    return f"{len(raw)} bytes of {what} that are not an HTTP response"


def normalize_serial(serial: str | int) -> str:
    """A certificate serial as upper-case hex (``0a:1B`` → ``0A1B``, ints accepted)."""
    if isinstance(serial, int) and not isinstance(serial, bool):
        if serial < 0:
            raise SectigoError("serial number must not be negative")
        return format_serial(serial)
    try:
        return clean_serial(str(serial))
    except ValueError:
        raise SectigoError(f"serial number {str(serial).strip()!r} is not hexadecimal") from None


def _safe_filename(disposition: str | None, default: str) -> str:
    """The ``filename=`` of a Content-Disposition header, reduced to a plain file name.

    Directory parts, hidden names, control and reserved characters fall back to
    ``default``: a server cannot make the client write outside the target directory.
    """
    if not disposition:
        return default
    msg = email.message.Message()
    msg["Content-Disposition"] = disposition
    name = msg.get_filename()
    if not name:
        return default
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if (
        not name
        or name.startswith(".")
        or len(name) > 200
        or any(ord(c) < 32 or ord(c) == 127 or c in '<>:"|?*' for c in name)
    ):
        return default
    return name


def _reason(exc: BaseException) -> str:
    """The OS reason of a file-system failure (``Permission denied``), without the
    path that :mod:`trisa_peer.fsutil` puts into its messages."""
    for candidate in (exc, exc.__cause__):
        text = getattr(candidate, "strerror", None)
        if isinstance(text, str) and text:
            return text
    return str(exc) or type(exc).__name__


def make_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700 (missing parents with the default mode), like
    ``mkdir -p -m 700``; :class:`SectigoError` with one clean sentence on failure."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.is_dir():
            raise NotADirectoryError(20, "Not a directory")
    except FileExistsError as exc:  # a parent or the path itself is a file
        raise SectigoError(f"cannot create directory {path}: a file is in the way") from exc
    except OSError as exc:
        raise SectigoError(f"cannot create directory {path}: {_reason(exc)}") from exc



class _NoFollow307(urllib.request.HTTPRedirectHandler):
    """Return a 307 as-is: Sectigo answers a password login with 307 when the
    account requires TLS client authentication."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if code == 307:
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class SectigoClient:
    """Sectigo IoT Manager API client (thread-safe; one instance per account).

    ``endpoint`` defaults to ``$SECTIGO_ENDPOINT`` or ``https://iot.sectigo.com``.
    ``username`` and ``password`` go together; without them only cached tokens can
    be used. ``cache_path`` is the token cache (``None``: the default location;
    ``False``: no cache). ``timeout`` is per request in seconds; ``retries`` the
    maximum number of attempts of an idempotent call; ``backoff`` the first delay.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        username: str | None = None,
        password: str | None = None,
        *,
        cache_path: str | os.PathLike[str] | Literal[False] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.5,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        warn_cache_errors: bool = True,
    ) -> None:
        endpoint = endpoint or os.environ.get("SECTIGO_ENDPOINT") or DEFAULT_ENDPOINT
        parsed = urllib.parse.urlsplit(endpoint.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise SectigoError(f"endpoint {endpoint!r} is not an http(s) URL")
        self.endpoint = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"
        if bool(username) != bool(password):
            raise SectigoError("requires both username and password")
        self._username = username or ""
        self._password = password or ""
        if timeout <= 0:
            raise SectigoError("timeout must be positive")
        self.timeout = float(timeout)
        self.retries = max(1, int(retries))
        self.backoff = max(0.0, float(backoff))
        self._sleep = sleep
        self.cache_path: Path | None
        if cache_path is False:
            self.cache_path = None
        elif cache_path is None:
            self.cache_path = default_cache_path()
        else:
            self.cache_path = Path(cache_path)
        #: why the token cache could not be written last time (``None``: it was)
        self.cache_error: str | None = None
        self.warn_cache_errors = warn_cache_errors
        self.credentials = Credentials(endpoint=self.endpoint, clock=clock)
        self._lock = threading.RLock()
        if self.cache_path is not None:
            # keyed by endpoint and user: another user's tokens are never loaded
            self.credentials.load(
                self.cache_path, endpoint=self.endpoint, username=self._username or None
            )
        handlers: list[urllib.request.BaseHandler] = [_NoFollow307()]
        if is_loopback(parsed.hostname):
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return f"SectigoClient({self.endpoint!r}, user={self._username!r})"

    # -- authentication -------------------------------------------------------------------

    @property
    def has_password(self) -> bool:
        return bool(self._username and self._password)

    def authenticate(self) -> None:
        """Password login (``POST /auth/pwd``); stores and caches the new tokens.

        When the server rejects the credentials (401/403) the tokens held and cached
        for this user are forgotten too: a wrong password never leaves them usable.
        """
        if not self.has_password:
            raise SectigoError("no API access credentials (username and password required)")
        body = json.dumps({"username": self._username, "password": self._password}).encode()
        with self._lock:
            resp = self._send(paths.AUTH_PWD.method, paths.AUTH_PWD.path(), data=body,
                              what="login", auth=False)
            if resp.status in (401, 403):
                self._forget_user_tokens()
            self._store_tokens(resp, "login")

    def _forget_user_tokens(self) -> None:
        """Drop the tokens in memory, and the cache file if it holds this user's."""
        self.credentials.clear()
        if self.cache_path is None:
            return
        probe = Credentials(endpoint=self.endpoint)
        if probe.load(self.cache_path, endpoint=self.endpoint, username=self._username):
            try:
                Credentials.remove(self.cache_path)
            except OSError as exc:
                log.warning("cannot remove Sectigo token cache %s: %s",
                            self.cache_path, exc.strerror or exc)

    def refresh(self) -> None:
        """Refresh the access token (``POST /auth/refresh`` with the raw refresh token)."""
        with self._lock:
            if not self.credentials.refresh_token:
                raise SectigoError("no refresh token to refresh with")
            data = self.credentials.refresh_token.encode("ascii")
            resp = self._send(paths.AUTH_REFRESH.method, paths.AUTH_REFRESH.path(), data=data,
                              what="refresh", auth=False)
            self._store_tokens(resp, "refresh")

    def ensure_authenticated(self) -> None:
        """The preflight run before each authenticated call: refresh or log in when the
        access token has expired; then check and cache the tokens."""
        with self._lock:
            creds = self.credentials
            if creds.valid():
                return
            if creds.refreshable():
                try:
                    self.refresh()
                    return
                except SectigoError as exc:
                    log.debug("token refresh failed (%s); logging in again", exc)
            if not self.has_password:
                creds.clear()
                self._save_cache()
                raise SectigoError(
                    "no API access credentials: cached tokens are missing or expired "
                    "and no username/password was given"
                )
            self.authenticate()

    def _store_tokens(self, resp: _Response, what: str) -> None:
        if resp.status != 200:
            self._raise_auth(resp, what)
        doc = self._json(resp, what)
        if not isinstance(doc, dict):
            raise SectigoError(f"{what}: server answered JSON without tokens")
        access = doc.get("accessToken")
        refresh = doc.get("refreshToken") or ""
        if not isinstance(access, str) or not isinstance(refresh, str):
            raise SectigoError(f"{what}: server answered JSON without tokens")
        creds = self.credentials
        try:
            creds.update(access, refresh)
            creds.check()
            if what == "login":
                creds.username = self._username
        except SectigoError as exc:
            creds.clear()
            self._save_cache()
            raise SectigoError(f"{what}: {exc}") from None
        self._save_cache()

    def _raise_auth(self, resp: _Response, what: str) -> None:
        status = resp.status
        if status == 401:
            if what == "login":
                msg = "could not authenticate credentials"
            else:
                msg = "refresh token rejected"
        elif status == 403:
            msg = "user is not authorized"
        elif status == 307:
            msg = "account requires TLS client authentication"
        else:
            detail, body = self._error_detail(resp)
            raise SectigoAPIError(f"{what}: {detail} ({status})", status=status, body=body)
        _, body = self._error_detail(resp)
        raise SectigoAPIError(f"{msg} ({status})", status=status, body=body)

    def _save_cache(self) -> None:
        if self.cache_path is None:
            return
        try:
            self.credentials.save(self.cache_path)
        except Exception as exc:  # a cache failure must not break the call
            self.cache_error = str(exc) or type(exc).__name__
            if self.warn_cache_errors:
                log.warning("Sectigo token cache not written: %s", self.cache_error)
        else:
            self.cache_error = None

    def clear_cache(self) -> None:
        """Forget the tokens and delete the cache file."""
        with self._lock:
            self.credentials.clear()
            if self.cache_path is not None:
                Credentials.remove(self.cache_path)

    # -- HTTP ---------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        content_type: str = JSON_TYPE,
        accept: str = JSON_TYPE,
        what: str,
        auth: bool = True,
    ) -> _Response:
        """One API call; returns the response whatever its status.

        Transport failures raise ``SectigoError(status=0)``; GETs are retried.
        """
        idempotent = method in ("GET", "HEAD")
        url = self.endpoint + path
        relogged = False
        attempt = 0
        while True:
            attempt += 1
            headers = {"Content-Type": content_type, "Accept": accept}
            if auth:
                self.ensure_authenticated()
                headers["Authorization"] = "Bearer " + self.credentials.access_token
                headers["User-Agent"] = USER_AGENT
            # the scheme was checked to be http(s) in __init__
            req = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
            try:
                resp = self._open(req)
            except SectigoError as exc:
                if idempotent and attempt < self.retries:
                    log.info("%s %s -> %s; retrying", method, path, peer_text(str(exc), 300))
                    self._sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                log.info("%s %s -> %s", method, path, peer_text(str(exc), 300))
                raise SectigoError(f"{what}: {exc}", status=0) from exc.__cause__
            # the path only: never headers (tokens), bodies (passwords) or query strings
            log.info("%s %s -> %d", method, path.split("?", 1)[0], resp.status)
            if resp.status in _RETRY_STATUSES and idempotent and attempt < self.retries:
                self._sleep(self.backoff * 2 ** (attempt - 1))
                continue
            if resp.status == 401 and auth and not relogged and self.has_password:
                # the server no longer accepts a token we believed valid (restart,
                # revoked session): the request was not processed, log in once more
                relogged = True
                with self._lock:
                    self.credentials.clear()
                continue
            return resp

    def _open(self, req: urllib.request.Request) -> _Response:
        # the endpoint as configured (scheme, host, port): the user sees which
        # service was tried, e.g. the real Sectigo host when SECTIGO_ENDPOINT is unset
        host = self.endpoint
        try:
            with self._opener.open(req, timeout=self.timeout) as raw:
                body = raw.read(MAX_BODY + 1)
                return _Response(raw.status, raw.reason or "", raw.headers, body[: MAX_BODY + 1])
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read(MAX_BODY + 1)
            except (OSError, http.client.HTTPException):
                body = b""
            headers = exc.headers if exc.headers is not None else email.message.Message()
            return _Response(exc.code, str(exc.reason or ""), headers, body)
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, socket.timeout | TimeoutError):
                raise SectigoError(f"{host} did not answer within {self.timeout:g} s") from exc
            text = getattr(reason, "strerror", None) or str(reason)
            if "WRONG_VERSION_NUMBER" in str(reason) and host.startswith("https://"):
                raise SectigoError(
                    f"not a TLS server at {host} (answered in plaintext); use http:// for "
                    "a plaintext service, or check the port") from exc
            raise SectigoError(f"cannot reach endpoint {host}: {text}") from exc
        except TimeoutError as exc:
            raise SectigoError(f"{host} did not answer within {self.timeout:g} s") from exc
        except http.client.BadStatusLine as exc:
            if isinstance(exc, http.client.RemoteDisconnected):
                raise SectigoError(f"{host} closed the connection without answering") from exc
            answered = _not_http(getattr(exc, "line", exc.args[0] if exc.args else ""))
            raise SectigoError(
                f"not a Sectigo API at {host} (answered {answered}); check the endpoint "
                "(SECTIGO_ENDPOINT)") from exc
        except (OSError, http.client.HTTPException) as exc:
            text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise SectigoError(f"connection to {host} failed: {text}") from exc

    @staticmethod
    def _error_detail(resp: _Response) -> tuple[str, dict[str, Any] | None]:
        """A short description of an error answer and its decoded APIError body."""
        media = resp.media_type
        body: dict[str, Any] | None = None
        detail = ""
        if _is_json_type(media):
            try:
                doc = json.loads(resp.body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                doc = None
            if isinstance(doc, dict):
                body = doc
                for key in ("message", "error", "detail"):
                    if isinstance(doc.get(key), str) and doc[key].strip():
                        detail = doc[key]
                        break
        elif media == "text/plain":
            detail = resp.body.decode("utf-8", "replace")
        detail = " ".join(detail.split())
        if len(detail) > 300:
            detail = detail[:297] + "..."
        if not detail:
            detail = resp.reason or http.client.responses.get(resp.status, "error")
            if media and not _is_json_type(media) and media != "text/plain":
                detail += f" ({media})"
        return detail, body

    def _check(self, resp: _Response, what: str, *, not_found: str | None = None) -> None:
        if 200 <= resp.status < 300:
            return
        detail, body = self._error_detail(resp)
        if resp.status == 404 and not_found:
            message = f"{not_found} not found (404)"
        elif resp.status == 401:
            message = f"{what}: not authenticated: {detail} (401)"
        elif resp.status == 403:
            message = f"{what}: not authorized: {detail} (403)"
        else:
            message = f"{what}: {detail} ({resp.status})"
        raise SectigoAPIError(message, status=resp.status, body=body)

    @staticmethod
    def _json(resp: _Response, what: str) -> Any:
        media = resp.media_type
        if not _is_json_type(media):
            shown = media or "no content type"
            raise SectigoError(f"{what}: server answered {shown}, not JSON", status=resp.status)
        try:
            return json.loads(resp.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise SectigoError(
                f"{what}: server answered invalid JSON", status=resp.status
            ) from None

    def _get_json(self, path: str, what: str, *, not_found: str | None = None) -> Any:
        resp = self._send("GET", path, what=what)
        self._check(resp, what, not_found=not_found)
        return self._json(resp, what)

    def _post_json(
        self, method: str, path: str, doc: Any, what: str, *, not_found: str | None = None
    ) -> _Response:
        data = json.dumps(doc).encode()
        resp = self._send(method, path, data=data, what=what)
        self._check(resp, what, not_found=not_found)
        return resp

    @staticmethod
    def _expect_dict(doc: Any, what: str) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise SectigoError(f"{what}: server answered {type(doc).__name__}, not an object")
        return doc

    @staticmethod
    def _expect_list(doc: Any, what: str) -> list[Any]:
        if not isinstance(doc, list):
            raise SectigoError(f"{what}: server answered {type(doc).__name__}, not a list")
        return doc

    # -- account ------------------------------------------------------------------------

    def authorities(self) -> list[dict[str, Any]]:
        """``GET /api/v1/authorities/allowed``: the Authority list."""
        return self._expect_list(self._get_json(paths.AUTHORITIES.path(), "authorities"),
                                 "authorities")

    def balance(self, authority_id: int) -> int:
        """``GET /api/v1/authorities/{id}/balanceavailable``: a bare integer."""
        what = f"balance of authority {int(authority_id)}"
        doc = self._get_json(
            paths.BALANCE.path(int(authority_id)),
            what,
            not_found=f"authority {int(authority_id)}",
        )
        if isinstance(doc, bool) or not isinstance(doc, int):
            raise SectigoError(f"{what}: server answered {doc!r}, not an integer")
        return doc

    def licenses(self) -> dict[str, Any]:
        """``GET /api/v1/devices``: ``{"ordered": int, "issued": int}``."""
        return self._expect_dict(self._get_json(paths.DEVICES.path(), "licenses"), "licenses")

    def profiles(self) -> list[dict[str, Any]]:
        """``GET /api/v1/profiles``."""
        return self._expect_list(self._get_json(paths.PROFILES.path(), "profiles"), "profiles")

    def profile_detail(self, profile_id: int) -> dict[str, Any]:
        """``GET /api/v1/profiles/{id}``."""
        pid = int(profile_id)
        doc = self._get_json(paths.PROFILE.path(pid), f"profile {pid}",
                             not_found=f"profile {pid}")
        return self._expect_dict(doc, f"profile {pid}")

    def profile_params(self, profile_id: int) -> list[dict[str, Any]]:
        """``GET /api/v1/profiles/{id}/parameters``: the ProfileParam list."""
        pid = int(profile_id)
        doc = self._get_json(paths.PROFILE_PARAMS.path(pid), f"profile {pid} parameters",
                             not_found=f"profile {pid}")
        return self._expect_list(doc, f"profile {pid} parameters")

    def organization(self) -> dict[str, Any]:
        """``GET /api/v1/organizations/user``."""
        return self._expect_dict(self._get_json(paths.ORGANIZATION.path(), "organization"),
                                 "organization")

    # -- batches --------------------------------------------------------------------------

    def create_single_cert_batch(
        self, authority_id: int, batch_name: str, params: Mapping[str, str]
    ) -> dict[str, Any]:
        """``PUT /api/v1/batches/createSingleCertBatch``; returns the BatchResponse.

        Never retried: a repeated PUT could issue (and bill) a second certificate.
        """
        doc = {
            "authorityId": int(authority_id),
            "batchName": str(batch_name),
            "profileParams": {str(k): str(v) for k, v in params.items()},
        }
        resp = self._post_json(
            paths.BATCH_CREATE.method, paths.BATCH_CREATE.path(), doc, "create batch",
            not_found=f"authority {int(authority_id)}",
        )
        return self._expect_dict(self._json(resp, "create batch"), "create batch")

    def upload_csr(
        self,
        profile_id: int,
        filename: str,
        data: bytes,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """``POST /api/v1/batches/upload`` (multipart): one file with one or more PEM
        CSRs (or a zip of ``.csr``/``.pem`` files); returns the BatchResponse."""
        pid = int(profile_id)
        boundary = "trisa-" + uuid.uuid4().hex
        name = Path(filename).name or "request.csr"
        name = name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        request = {
            "profileId": pid,
            "batchType": "BATCH",
            "profileParams": {str(k): str(v) for k, v in (params or {}).items()},
        }
        file_type = "application/zip" if data[:4] == b"PK\x03\x04" else "application/octet-stream"
        parts = [
            ('Content-Disposition: form-data; name="profileId"\r\n\r\n', str(pid).encode()),
            (
                'Content-Disposition: form-data; name="csrBatchRequest"; filename="blob"\r\n'
                "Content-Type: application/json\r\n\r\n",
                json.dumps(request).encode(),
            ),
            (
                f'Content-Disposition: form-data; name="files"; filename="{name}"\r\n'
                f"Content-Type: {file_type}\r\n\r\n",
                bytes(data),
            ),
        ]
        body = b"".join(
            f"--{boundary}\r\n".encode() + head.encode() + content + b"\r\n"
            for head, content in parts
        ) + f"--{boundary}--\r\n".encode()
        resp = self._send(
            paths.BATCH_UPLOAD.method, paths.BATCH_UPLOAD.path(), data=body,
            content_type=f"multipart/form-data; boundary={boundary}", what="upload CSR",
        )
        self._check(resp, "upload CSR", not_found=f"profile {pid}")
        return self._expect_dict(self._json(resp, "upload CSR"), "upload CSR")

    def batch_detail(self, batch_id: int) -> dict[str, Any]:
        """``GET /api/v1/batches/{id}``; a ``COLLECTED`` or empty status is replaced by
        the text status endpoint's answer (upstream hotfix #248)."""
        bid = int(batch_id)
        doc = self._expect_dict(
            self._get_json(paths.BATCH.path(bid), f"batch {bid}", not_found=f"batch {bid}"),
            f"batch {bid}",
        )
        status = doc.get("status")
        if not status or (isinstance(status, str) and normalize_status(status) == COLLECTED):
            doc["status"] = self.batch_status(bid)
        return doc

    def batch_status(self, batch_id: int) -> str:
        """``GET /api/v1/batches/{id}/status`` (plain text), normalised:
        ``"Ready for download"`` → ``"READY_FOR_DOWNLOAD"``."""
        bid = int(batch_id)
        what = f"status of batch {bid}"
        resp = self._send(paths.BATCH_STATUS.method, paths.BATCH_STATUS.path(bid), what=what,
                          accept="text/plain, application/json")
        self._check(resp, what, not_found=f"batch {bid}")
        media = resp.media_type
        if _is_json_type(media):
            doc = self._json(resp, what)
            text = doc if isinstance(doc, str) else str(doc.get("status", "")) if isinstance(
                doc, dict) else ""
        elif media in ("text/plain", ""):
            text = resp.body.decode("utf-8", "replace")
        else:
            raise SectigoError(f"{what}: server answered {media}, not text", status=resp.status)
        status = normalize_status(text)
        if not status or len(status) > 200:
            raise SectigoError(f"{what}: server answered an empty or unusable status")
        return status

    def processing_info(self, batch_id: int) -> dict[str, Any]:
        """``GET /api/v1/batches/{id}/processing_info``: ``{active, success, failed}``."""
        bid = int(batch_id)
        doc = self._get_json(paths.BATCH_INFO.path(bid),
                             f"processing info of batch {bid}", not_found=f"batch {bid}")
        return self._expect_dict(doc, f"processing info of batch {bid}")

    def _download(self, batch_id: int) -> tuple[str, bytes]:
        bid = int(batch_id)
        what = f"download batch {bid}"
        resp = self._send(
            paths.BATCH_DOWNLOAD.method, paths.BATCH_DOWNLOAD.path(bid), what=what,
            content_type="application/octet-stream", accept="application/octet-stream",
        )
        self._check(resp, what, not_found=f"batch {bid}")
        if resp.status != 200:
            raise SectigoError(f"{what}: unexpected status ({resp.status})", status=resp.status)
        media = resp.media_type
        if media not in _ZIP_TYPES:
            raise SectigoError(f"{what}: server answered {media or 'no content type'}, "
                               "not a zip file", status=resp.status)
        if len(resp.body) > MAX_BODY:
            raise SectigoError(f"{what}: answer larger than {MAX_BODY} bytes")
        if not zipfile.is_zipfile(io.BytesIO(resp.body)):
            raise SectigoError(f"{what}: answer is not a zip archive", status=resp.status)
        name = _safe_filename(resp.headers.get("Content-Disposition"), f"{bid}.zip")
        return name, resp.body

    def download_bytes(self, batch_id: int) -> bytes:
        """``GET /api/v1/batches/{id}/download``: the zip archive's bytes."""
        return self._download(batch_id)[1]

    def download(
        self, batch_id: int, directory: str | os.PathLike[str], *, make_dirs: bool = False
    ) -> Path:
        """Download the batch's zip into ``directory``; return its path.

        ``directory`` must exist unless ``make_dirs`` is true: then a missing one is
        created (mode 0700, parents allowed) once the archive has arrived. A path that
        exists and is not a directory is always refused, before any network traffic.
        The name comes from Content-Disposition (sanitised), else ``<id>.zip``;
        nothing is written unless a real zip archive arrived."""
        outdir = Path(directory)
        if outdir.exists() and not outdir.is_dir():
            raise SectigoError(f"download path {outdir} is not a directory")
        if not outdir.exists() and not make_dirs:
            raise SectigoError(f"download directory {outdir} does not exist")
        name, data = self._download(batch_id)
        if not outdir.is_dir():
            make_private_dir(outdir)
        target = outdir / name
        try:
            return write_private(target, data)  # the bundle holds a (wrapped) private key
        except Exception as exc:
            raise SectigoError(f"cannot write {target}: {_reason(exc)}") from exc

    # -- certificates ---------------------------------------------------------------------

    def find(
        self, common_name: str | None = None, serial: str | int | None = None
    ) -> dict[str, Any]:
        """``POST /api/v1/certificates/find`` by common name and/or serial (hex);
        returns ``{"totalCount": int, "items": [...]}``. Safe to repeat but not
        retried (a POST)."""
        doc: dict[str, str] = {}
        if common_name is not None and str(common_name).strip():
            doc["commonName"] = str(common_name).strip()
        if serial is not None and str(serial).strip():
            doc["serialNumber"] = normalize_serial(serial)
        if not doc:
            raise SectigoError("find needs a common name or a serial number")
        resp = self._post_json(paths.CERTIFICATES_FIND.method, paths.CERTIFICATES_FIND.path(),
                               doc, "find certificates")
        return self._expect_dict(self._json(resp, "find certificates"), "find certificates")

    def revoke(self, profile_id: int, reason: str | int, serial: str | int) -> None:
        """``POST /api/v1/certificates/{profileId}/revoke``. ``reason`` is an RFC 5280
        name in any spacing/case or a code (7 is refused: ConfigurationError)."""
        code = parse_reason(reason)
        hexserial = normalize_serial(serial)
        pid = int(profile_id)
        try:
            self._post_json(
                paths.CERTIFICATES_REVOKE.method, paths.CERTIFICATES_REVOKE.path(pid),
                {"reasonCode": code, "serialNumber": hexserial},
                f"revoke certificate {hexserial}",
                # a wrong profile is the usual cause: name the one that was asked
                not_found=f"certificate {hexserial} in profile {pid}",
            )
        except SectigoAPIError as exc:
            if exc.status != 404:
                raise
            elsewhere = self._found_elsewhere(hexserial)
            if not elsewhere:
                raise
            raise SectigoAPIError(
                f"certificate {hexserial} is not in profile {pid} (404): {elsewhere} under "
                "another profile; give that profile's id with -p", status=exc.status,
            ) from exc

    def _found_elsewhere(self, hexserial: str) -> str:
        """``it exists (CN example.com, status valid)`` when the API finds the serial,
        else ``""`` (also when it cannot be asked): for a revoke's 404. Read only."""
        try:
            found = self.find(serial=hexserial)
        except SectigoError:
            return ""
        items = [i for i in found.get("items") or () if isinstance(i, dict)
                 and str(i.get("serialNumber", "")).upper() == hexserial]
        if not items:
            return ""
        item = items[0]
        return (f"it exists (common name {peer_text(str(item.get('commonName', '?')), 64)}, "
                f"status {peer_text(str(item.get('status', '?')), 20)})")
