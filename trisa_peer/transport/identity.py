"""Own certificate, key, trust pool and CRL loaded from files, reloaded when they change.

The server's credential fetcher asks :meth:`FileMaterial.current` before every new TLS
handshake; a stat of each file decides whether to reload, so a certificate written to
disk is served to the next connection without a restart, and connections (and calls)
already open keep the material they were set up with. :meth:`FileMaterial.poll` (every
``--reload-interval`` seconds, and on SIGHUP) also retries a reload that failed, since
a certificate that was not yet valid may have become valid.

Only a consistent set replaces the one in use (:func:`trisa_peer.reload.check_own_identity`):
the key matches the certificate, which chains to the trust pool and is valid now. A
set that fails (a half-written file, a key that does not match, an expired or foreign
certificate, a wrong PKCS#12 password) keeps the previous material and logs the reason
once per distinct problem. The first load applies the same checks: a node does not
start with an expired certificate. The PKCS#12 password comes from ``password`` (fixed
for the life of the process) or ``password_file`` (read again at every reload, so a
reissue's new password can be installed with its certificate).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..certs import Identity, load_identity
from ..clock import Clock, utcnow
from ..errors import CertificateError, ConfigurationError, TrisaPeerError
from ..reload import ProblemOnce, check_own_identity, describe_certificate, expiry_problem
from ..storage.database import read_password_file
from ..trust import TrustPool
from ..verify import CrlChecker, CrlSource

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
        password_file: str | os.PathLike[str] | None = None,
        clock: Clock = utcnow,
        crl_source: CrlSource | None = None,
    ) -> None:
        self.cert = Path(cert)
        self.crl_source = crl_source  # CRLs from distribution points (crlfetch.py)
        self.key = Path(key) if key else None
        self.trust = [Path(p) for p in trust]
        self.crl_paths = [Path(p) for p in crl]
        self.password_file = Path(password_file) if password_file else None
        if not self.trust:
            raise ConfigurationError("a trust pool (at least one trust file) is required")
        if password is not None and self.password_file is not None:
            raise ConfigurationError("give the PKCS#12 password once: a password or a "
                                     "password file, not both")
        self.clock = clock
        self._password = password
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Material], None]] = []
        self._problem = ProblemOnce()  # the last reload failure logged
        self._stamp = self._stamps()
        self._digest = self._contents()
        self._material = self._load(1)

    def _paths(self) -> list[Path]:
        return [p for p in (self.cert, self.key, self.password_file, *self.trust,
                            *self.crl_paths) if p is not None]

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

    def _contents(self) -> bytes:
        """A digest of every file's bytes: whether a forced reload has anything new."""
        digest = hashlib.sha256()
        for path in self._paths():
            try:
                data = path.read_bytes()
            except OSError:
                data = b"\0missing"
            digest.update(len(data).to_bytes(8, "big") + data)
        return digest.digest()

    def _load(self, generation: int) -> Material:
        password = (read_password_file(self.password_file) if self.password_file is not None
                    else self._password)
        identity = load_node_identity(self.cert, self.key, password=password)
        pool = TrustPool.load(*self.trust)
        check_own_identity(identity, pool, self.clock())
        crl = (CrlChecker.load(self.crl_paths, pool, source=self.crl_source)
               if self.crl_paths or self.crl_source is not None else None)
        return Material(identity, pool, crl, generation)

    def subscribe(self, listener: Callable[[Material], None]) -> None:
        """Call ``listener`` with each new generation after a reload."""
        self._listeners.append(listener)

    @property
    def reload_problem(self) -> str | None:
        """Why the files on disk are not in use (the last reload failed), or None."""
        return self._problem.last

    def problem(self) -> str | None:
        """Why the material in use cannot be served now (it expired), or None."""
        return expiry_problem(self._material.identity.leaf, self.clock())

    def current(self) -> Material:
        """The newest valid material, reloading first if any file changed on disk."""
        stamp = self._stamps()
        if stamp == self._stamp:
            return self._material
        return self._reload(stamp, force=False)

    def poll(self, *, force: bool = False) -> Material:
        """As :meth:`current`, and also retry a reload that failed (the same problem is
        not logged again). ``force`` (SIGHUP) reads the files even if their size and
        time look unchanged; unchanged content is not a new generation."""
        stamp = self._stamps()
        if stamp == self._stamp and not force and self._problem.last is None:
            return self._material
        return self._reload(stamp, force=force or self._problem.last is not None)

    def _reload(self, stamp: tuple[tuple[int, int], ...], *, force: bool) -> Material:
        with self._lock:
            if stamp == self._stamp and not force:
                return self._material
            digest = self._contents()
            if digest == self._digest and self._problem.last is None:
                self._stamp = stamp
                return self._material
            old = self._material
            try:
                fresh = self._load(old.generation + 1)
            except TrisaPeerError as exc:
                self._stamp = stamp  # retried by poll(), not by every handshake
                if self._problem.report(str(exc)):
                    log.warning("keeping the TLS material in use (%s); the files on disk "
                                "were not loaded: %s", describe_certificate(old.identity.leaf),
                                exc)
                return old
            self._stamp, self._digest = stamp, digest
            self._material = fresh
            self._problem.clear()
        log.info(
            "reloaded TLS material generation=%d %s fingerprint=%s not_after=%s",
            fresh.generation,
            describe_certificate(fresh.identity.leaf),
            fresh.identity.fingerprint,
            f"{fresh.identity.leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
        )
        for listener in self._listeners:
            listener(fresh)
        return fresh
