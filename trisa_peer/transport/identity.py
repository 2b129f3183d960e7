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
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..certs import Identity, load_identity
from ..errors import CertificateError, ConfigurationError
from ..trust import TrustPool
from ..verify import CrlChecker

__all__ = ["FileMaterial", "Material", "load_node_identity"]

log = logging.getLogger("trisa_peer.transport")


def load_node_identity(
    cert: Path, key: Path | None, *, password: str | None = None
) -> Identity:
    """The node's identity from ``--cert`` (and ``--key``); when that fails because the
    two files are swapped, hold the wrong kind of PEM, or do not belong together, the
    error says so and names the flag to fix (:func:`identity_mixup`)."""
    try:
        return load_identity(cert, key_path=key, password=password)
    except CertificateError as exc:
        mixup = identity_mixup(cert, key, failure=str(exc))
        if mixup is None:
            raise
        raise CertificateError(mixup) from exc


_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def _pem_kinds(path: Path) -> set[str] | None:
    """``{"key", "cert"}`` (or part of it) for a PEM file; None when unreadable or not PEM."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    kinds = set()
    for label in _PEM_LABEL.findall(data):
        if label.endswith(b"PRIVATE KEY"):
            kinds.add("key")
        elif label in (b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"):
            kinds.add("cert")
    return kinds or None


def identity_mixup(cert: Path, key: Path | None, *, failure: str = "") -> str | None:
    """One line naming how ``--cert``/``--key`` are mixed up, or None when they are not.

    A PEM look at both files (what each holds); a key and a certificate in their places
    that do not belong together are reported only when the load's ``failure`` said so.
    Never reads out key material."""
    has = _pem_kinds(cert)
    if has is None:
        return None
    if key is None:
        if has == {"key"}:
            return (f"{cert} (given as --cert) holds a private key, not a certificate; give "
                    "the certificate with --cert and the key with --key")
        return None
    key_has = _pem_kinds(key)
    if key_has is None:
        return None
    if has == {"key"} and "cert" in key_has:
        return (f"--cert and --key are swapped: {cert} holds a private key and {key} a "
                "certificate; give the certificate with --cert and the key with --key")
    if key_has == {"cert"}:
        return (f"{key} (given as --key) holds a certificate, not a private key; give the "
                "private key file with --key")
    if has == {"key"}:
        return (f"{cert} (given as --cert) holds a private key, not a certificate; give "
                "the certificate file with --cert")
    if "cert" in has and key_has == {"key"} and "does not match" in failure:
        return (f"the private key in {key} (--key) does not match the certificate in "
                f"{cert} (--cert): they are not a pair; give --key the key the certificate "
                "was issued for, or --cert that key's certificate")
    return None


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
        identity = load_node_identity(self.cert, self.key, password=self._password)
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
