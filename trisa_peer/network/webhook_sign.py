"""Webhook request signatures: HMAC-SHA256 over the timestamp and the body, with a key id.

The node signs every webhook request with the *newest* key of its key file and sends
three headers (see ``docs/webhook.md``)::

    Trisa-Webhook-Timestamp: <Unix time in whole seconds, decimal>
    Trisa-Webhook-Key-Id:    <the key's id>
    Trisa-Webhook-Signature: v1=<lower-case hex of HMAC-SHA256(secret, timestamp + "." + body)>

``secret`` is the key's text as UTF-8 bytes and ``body`` the exact request bytes. A back
office verifies with the key named by the id, compares in constant time and accepts a
timestamp within :data:`MAX_SKEW` seconds of its own clock, either way.

The key file (0600, never a flag): one key per line, ``KEY_ID SECRET``; blank lines and
``#`` comments ignored; the *last* key signs, the others stay listed for the back office
side of a rotation. Checked: the mode, the id's form, the secret's length (at least
:data:`MIN_SECRET` characters), unique ids. Not checked: the secret's entropy.

Pure: no network, no grpc; :func:`verify` is what a back office (and the tests) run.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigurationError
from ..fsutil import read_private_text

__all__ = [
    "KEY_ID_HEADER", "MAX_SKEW", "MIN_SECRET", "SIGNATURE_HEADER", "TIMESTAMP_HEADER",
    "SigningKey", "load_keys", "parse_keys", "sign", "signature", "verify",
]

TIMESTAMP_HEADER = "Trisa-Webhook-Timestamp"
KEY_ID_HEADER = "Trisa-Webhook-Key-Id"
SIGNATURE_HEADER = "Trisa-Webhook-Signature"
#: Seconds of clock difference a back office should accept, either way.
MAX_SKEW = 300
#: Shortest secret accepted (characters).
MIN_SECRET = 32
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    secret: bytes

    def __repr__(self) -> str:  # never show the secret
        return f"SigningKey({self.key_id!r})"


def parse_keys(text: str, *, source: str = "key file") -> list[SigningKey]:
    """The keys of a key file's text, oldest first (the last one signs)."""
    keys: list[SigningKey] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigurationError(
                f"{source}: line {number}: expected 'KEY_ID SECRET'")
        key_id, secret = parts
        if not _KEY_ID.fullmatch(key_id):
            raise ConfigurationError(
                f"{source}: line {number}: key id must be 1-64 of A-Z a-z 0-9 . _ -")
        if len(secret) < MIN_SECRET:
            raise ConfigurationError(
                f"{source}: line {number}: secret shorter than {MIN_SECRET} characters")
        if any(k.key_id == key_id for k in keys):
            raise ConfigurationError(f"{source}: line {number}: key id {key_id} listed twice")
        keys.append(SigningKey(key_id, secret.encode("utf-8")))
    if not keys:
        raise ConfigurationError(f"{source}: no key in the file")
    return keys


def load_keys(path: str | os.PathLike[str]) -> list[SigningKey]:
    """Read a key file; refused when group or others may read it."""
    name = os.fspath(path)
    return parse_keys(read_private_text(name, "webhook key file"), source=name)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``v1=`` and the hex HMAC-SHA256 of ``timestamp + "." + body``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def sign(keys: Sequence[SigningKey], body: bytes, now: float) -> dict[str, str]:
    """The three signature headers for ``body`` sent at ``now`` (newest key signs)."""
    key = keys[-1]
    timestamp = str(int(now))
    return {TIMESTAMP_HEADER: timestamp, KEY_ID_HEADER: key.key_id,
            SIGNATURE_HEADER: signature(key.secret, timestamp, body)}


def verify(headers: Mapping[str, str], body: bytes, keys: Sequence[SigningKey], now: float,
           *, max_skew: int = MAX_SKEW) -> str | None:
    """What a back office checks: None when the request is signed by one of ``keys``
    within ``max_skew`` seconds of ``now``, else the reason (for a 401)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    key_id = lowered.get(KEY_ID_HEADER.lower(), "")
    sent = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not timestamp.isascii() or not timestamp.isdigit():
        return "missing or malformed timestamp"
    if abs(now - int(timestamp)) > max_skew:
        return "timestamp outside the accepted clock skew"
    key = next((k for k in keys if k.key_id == key_id), None)
    if key is None:
        return "unknown key id"
    if not hmac.compare_digest(sent.encode("utf-8", "replace"),
                               signature(key.secret, timestamp, body).encode("ascii")):
        return "bad signature"
    return None
