"""Sealing keys: ours (selected by ``public_key_signature``) and our peers' (with a TTL).

Our ring holds the private key of every identity generation this node has used, so an
envelope sealed to the key of a certificate we have just rotated away from still opens.
Peers' keys come from KeyExchange and expire after ``ttl`` seconds (the TRISA docs
suggest at most an hour); without one the directory's ``signing_certificate``, else the
registered identity certificate, supplies the key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from ..envelope import public_key_signature
from ..records import PeerRecord

__all__ = ["KeyRing", "PeerKeys", "record_key"]


class KeyRing:
    """Our private keys, newest first, addressable by public-key signature."""

    def __init__(self) -> None:
        self._keys: dict[str, PrivateKeyTypes] = {}
        self._current: PrivateKeyTypes | None = None
        self._lock = threading.Lock()

    def add(self, key: PrivateKeyTypes) -> None:
        sig = public_key_signature(key.public_key()).lower()
        with self._lock:
            self._keys[sig] = key
            self._current = key

    def select(self, signature: str) -> PrivateKeyTypes | None:
        """The key named by ``signature``; the current key when the envelope names none."""
        if not signature.strip():
            return self._current
        return self._keys.get(signature.strip().lower())

    @property
    def current(self) -> PrivateKeyTypes:
        if self._current is None:
            raise RuntimeError("key ring is empty")
        return self._current


def record_key(record: PeerRecord) -> PublicKeyTypes | None:
    """The sealing key a directory record offers: signing certificate, else identity."""
    cert = record.signing_certificate or record.identity_certificate
    return cert.public_key() if cert is not None else None


class PeerKeys:
    """Peers' sealing keys learnt by KeyExchange, each valid for ``ttl`` seconds."""

    def __init__(self, *, ttl: float = 3600.0, monotonic: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._now = monotonic
        self._keys: dict[str, tuple[PublicKeyTypes, float]] = {}

    def put(self, common_name: str, key: PublicKeyTypes) -> None:
        self._keys[common_name.lower()] = (key, self._now() + self.ttl)

    def get(self, common_name: str) -> PublicKeyTypes | None:
        hit = self._keys.get(common_name.lower())
        if hit is None or hit[1] <= self._now():
            return None
        return hit[0]

    def drop(self, common_name: str) -> None:
        self._keys.pop(common_name.lower(), None)
