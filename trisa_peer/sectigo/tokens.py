"""Sectigo API tokens: JWT claims read without verification, and the token cache.

The IoT Manager hands out two HS512 JWTs (an access token and a refresh token). The
client cannot verify them (it does not know the key) and does not need to: it only
reads ``iat``/``exp`` (and ``nbf``) to decide whether to refresh or log in again.
Lifetimes are always read from the tokens, never assumed.

The cache (``${XDG_CACHE_HOME:-~/.cache}/trisa/sectigo/credentials.json``) is a JSON
object with the upstream YAML keys (``access_token``, ``refresh_token``, ``subject``,
``issued_at``, ``expires_at``, ``not_before``, ``refresh_by`` as RFC 3339 UTC strings)
plus ``endpoint`` and ``username``: tokens minted by one server are never sent to
another, and tokens cached for one user are never used for another (a client with a
configured username ignores a cache written for a different or unknown user). It is
written 0600 in a 0700 directory; the password is never written.

:func:`mint` and :func:`verify` (HS512) are used by the local emulator only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import SectigoError, TrisaPeerError
from ..fsutil import write_private

__all__ = [
    "Credentials",
    "decode_claims",
    "default_cache_path",
    "mint",
    "verify",
]


def default_cache_path() -> Path:
    """``${XDG_CACHE_HOME:-$HOME/.cache}/trisa/sectigo/credentials.json``."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base.strip() else Path.home() / ".cache"
    return root / "trisa" / "sectigo" / "credentials.json"


def _b64url_decode(text: str) -> bytes:
    pad = "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(text + pad)


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, *without* signature verification.

    Raises :class:`SectigoError` for anything that is not a three-part JWT with a
    JSON object payload, or whose ``iat``/``exp`` are missing.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise SectigoError("token is not a JWT")
    try:
        claims = json.loads(_b64url_decode(parts[1]))
    except (ValueError, binascii.Error) as exc:
        raise SectigoError("token is not a JWT: payload is not base64 JSON") from exc
    if not isinstance(claims, dict):
        raise SectigoError("token is not a JWT: payload is not an object")
    for name in ("iat", "exp"):
        value = claims.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise SectigoError("jwt claims do not have required timestamps")
    return claims


def mint(claims: Mapping[str, Any], secret: bytes) -> str:
    """An HS512 JWT carrying ``claims`` (emulator side)."""
    header = _b64url_encode(json.dumps({"alg": "HS512", "typ": "JWT"}).encode())
    payload = _b64url_encode(json.dumps(dict(claims), separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    sig = hmac.new(secret, signing_input, hashlib.sha512).digest()
    return f"{header}.{payload}.{_b64url_encode(sig)}"


def verify(token: str, secret: bytes, *, now: float) -> dict[str, Any] | None:
    """The claims of an HS512 token signed with ``secret`` that is in its validity
    window at ``now``; ``None`` for anything else (emulator side)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(_b64url_decode(parts[0]))
        sig = _b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        return None
    if not isinstance(header, dict) or header.get("alg") != "HS512":
        return None
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha512)
    if not hmac.compare_digest(expected.digest(), sig):
        return None
    try:
        claims = decode_claims(token.strip())
    except SectigoError:
        return None
    if not now < float(claims["exp"]):
        return None
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and now < float(nbf):
        return None
    return claims


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Credentials:
    """The token pair and the timestamps read from it (upstream ``creds.go``)."""

    access_token: str = ""
    refresh_token: str = ""
    subject: str = ""
    issued_at: float = 0.0
    expires_at: float = 0.0
    not_before: float = 0.0
    refresh_by: float = 0.0
    endpoint: str = ""
    username: str = ""
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def update(self, access_token: str, refresh_token: str) -> None:
        """Store a new pair (an empty refresh token keeps the current one)."""
        if not refresh_token:
            refresh_token = self.refresh_token
        if not access_token or not refresh_token:
            raise SectigoError("server answered without an access or refresh token")
        access = decode_claims(access_token)
        refresh = decode_claims(refresh_token)
        self.access_token = access_token
        self.refresh_token = refresh_token
        sub = access.get("sub")
        self.subject = sub if isinstance(sub, str) else ""
        self.issued_at = float(access["iat"])
        self.expires_at = float(access["exp"])
        self.refresh_by = float(refresh["exp"])
        nbf = refresh.get("nbf")
        self.not_before = float(nbf) if isinstance(nbf, int | float) else float(refresh["iat"])

    def clear(self) -> None:
        self.access_token = self.refresh_token = self.subject = self.username = ""
        self.issued_at = self.expires_at = self.not_before = self.refresh_by = 0.0

    def valid(self) -> bool:
        """The access token is present and not expired."""
        return bool(self.access_token) and self.clock() < self.expires_at

    def current(self) -> bool:
        """Both tokens are present and the refresh token has not expired."""
        return bool(self.access_token and self.refresh_token) and self.clock() < self.refresh_by

    def refreshable(self) -> bool:
        """The refresh token is present and inside its validity window."""
        now = self.clock()
        return bool(self.refresh_token) and self.not_before < now < self.refresh_by

    def check(self) -> None:
        if bool(self.access_token) != bool(self.refresh_token):
            raise SectigoError("credentials are missing an access or refresh token")
        if not self.current():
            raise SectigoError("credentials are expired or invalid")

    # -- cache -------------------------------------------------------------------------

    def to_json(self) -> bytes:
        data: dict[str, str] = {"endpoint": self.endpoint}
        if self.username:
            data["username"] = self.username
        if self.access_token:
            data["access_token"] = self.access_token
        if self.refresh_token:
            data["refresh_token"] = self.refresh_token
        if self.subject:
            data["subject"] = self.subject
        for name in ("issued_at", "expires_at", "not_before", "refresh_by"):
            value = float(getattr(self, name))
            if value:
                data[name] = _rfc3339(value)
        return (json.dumps(data, indent=2) + "\n").encode()

    def save(self, path: Path) -> None:
        """Write the cache 0600 (directory 0700) atomically."""
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # e.g. left 0755 by the upstream Go CLI
                path.parent.chmod(0o700)
        except OSError as exc:
            raise SectigoError(
                f"cannot create cache directory {path.parent}: {exc.strerror}"
            ) from exc
        try:
            write_private(path, self.to_json())
        except (OSError, TrisaPeerError) as exc:
            cause = exc if isinstance(exc, OSError) else exc.__cause__
            reason = getattr(cause, "strerror", None) or str(exc)
            raise SectigoError(f"cannot write {path}: {reason}") from exc

    def load(self, path: Path, *, endpoint: str, username: str | None = None) -> bool:
        """Load cached tokens for ``endpoint`` (and ``username`` unless ``None``);
        ``False`` when none are usable.

        Unreadable, foreign-endpoint, foreign-user (or user-less, when a username is
        given) or invalid caches are ignored (never an error): the client falls back
        to a password login, whose tokens then replace the cache.
        """
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return False
        if not isinstance(data, dict) or data.get("endpoint") != endpoint:
            return False
        cached_user = data.get("username")
        if not isinstance(cached_user, str):
            cached_user = ""
        if username is not None and cached_user != username:
            return False
        access = data.get("access_token")
        refresh = data.get("refresh_token")
        if not isinstance(access, str) or not isinstance(refresh, str):
            return False
        try:
            self.update(access, refresh)
        except SectigoError:
            self.clear()
            return False
        self.endpoint = endpoint
        self.username = cached_user
        return True

    @staticmethod
    def remove(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
