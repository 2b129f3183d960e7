"""Own certificate, key, trust pool and CRL loaded from files, reloaded when they change.

The server's credential fetcher asks :meth:`FileMaterial.current` before every new TLS
handshake; a stat of each file decides whether to reload, so a certificate written to
disk is served to the next connection without a restart, and connections (and calls)
already open keep the material they were set up with. A reload that fails (a half-written
file, a key that does not match) keeps the previous material and logs the reason once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..certs import Identity, load_identity
from ..errors import CertificateError, ConfigurationError
from ..trust import TrustPool
from ..verify import CrlChecker

__all__ = ["FileMaterial", "Material"]

log = logging.getLogger("trisa_peer.transport")


@dataclass(frozen=True)
class Material:
    """One consistent generation of the node's TLS material."""

    identity: Identity
    pool: TrustPool
    crl: CrlChecker | None
    generation: int


class FileMaterial:
    """Identity (cert + key), trust pool and optional CRLs, watched on disk."""

    def __init__(
        self,
        cert: str | os.PathLike[str],
        key: str | os.PathLike[str] | None,
        trust: Sequence[str | os.PathLike[str]],
        *,
        crl: Sequence[str | os.PathLike[str]] = (),
        password: str | None = None,
    ) -> None:
        self.cert = Path(cert)
        self.key = Path(key) if key else None
        self.trust = [Path(p) for p in trust]
        self.crl_paths = [Path(p) for p in crl]
        if not self.trust:
            raise ConfigurationError("a trust pool (at least one trust file) is required")
        self._password = password
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Material], None]] = []
        self._stamp = self._stamps()
        self._material = self._load(1)

    def _paths(self) -> list[Path]:
        return [p for p in (self.cert, self.key, *self.trust, *self.crl_paths) if p is not None]

    def _stamps(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in self._paths():
            try:
                st = path.stat()
            except OSError:
                out.append((0, 0))
            else:
                out.append((st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _load(self, generation: int) -> Material:
        identity = load_identity(self.cert, key_path=self.key, password=self._password)
        pool = TrustPool.load(*self.trust)
        crl = CrlChecker.load(self.crl_paths, pool) if self.crl_paths else None
        return Material(identity, pool, crl, generation)

    def subscribe(self, listener: Callable[[Material], None]) -> None:
        """Call ``listener`` with each new generation after a reload."""
        self._listeners.append(listener)

    def current(self) -> Material:
        """The newest valid material, reloading first if any file changed on disk."""
        stamp = self._stamps()
        if stamp == self._stamp:
            return self._material
        with self._lock:
            if stamp == self._stamp:
                return self._material
            try:
                fresh = self._load(self._material.generation + 1)
            except CertificateError as exc:
                log.warning("keeping current TLS material; reload failed: %s", exc)
                self._stamp = stamp  # do not retry until a file changes again
                return self._material
            self._stamp = stamp
            self._material = fresh
        log.info(
            "reloaded TLS material generation=%d leaf=%s",
            fresh.generation,
            fresh.identity.fingerprint,
        )
        for listener in self._listeners:
            listener(fresh)
        return fresh
