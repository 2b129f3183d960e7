"""The Sectigo IoT Manager API: a client (:class:`SectigoClient`) and a local
Sectigo-compatible service backed by the project's CA (:class:`SectigoEmulator`,
imported lazily from :mod:`trisa_peer.sectigo.emulator`)."""

from __future__ import annotations

from .client import DEFAULT_TIMEOUT, SectigoClient, normalize_serial
from .models import DEFAULT_ENDPOINT, READY_FOR_DOWNLOAD, SectigoAPIError, normalize_status
from .tokens import Credentials, default_cache_path

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_TIMEOUT",
    "READY_FOR_DOWNLOAD",
    "Credentials",
    "SectigoAPIError",
    "SectigoClient",
    "default_cache_path",
    "normalize_serial",
    "normalize_status",
]
