"""The local deny-list: counterparties refused at once, whatever the directory says.

A text file, one entry a line; ``#`` starts a comment. An entry is either a SHA-256
certificate fingerprint (64 hex digits, colons and a ``sha256:`` prefix allowed) or a
common name (compared case-insensitively)::

    # compromised 2026-11-30, ticket 4711
    mallory.vasp.test
    sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

The file is re-read when its modification time, size or inode changes, checked at most
every ``check_interval`` seconds on the request path, and at once on :meth:`reload`
(``serve`` calls it on SIGHUP). A file that cannot be read or parsed on a reload keeps
the previous list in force (and logs one error line); at start it is a configuration
error.

Pure: standard library only.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationError

__all__ = ["DenyList", "DenyRules", "parse_deny_list"]

log = logging.getLogger("trisa_peer.handshake")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[a-z0-9*]([a-z0-9.*-]{0,251}[a-z0-9])?")


@dataclass(frozen=True)
class DenyRules:
    names: frozenset[str] = frozenset()
    fingerprints: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.names) + len(self.fingerprints)


def parse_deny_list(text: str, source: str = "deny-list") -> DenyRules:
    """The rules of a deny-list file; :class:`ConfigurationError` names a bad line."""
    names: set[str] = set()
    prints: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        entry = raw.split("#", 1)[0].strip().lower()
        if not entry:
            continue
        compact = entry.removeprefix("sha256:").replace(":", "")
        if _HEX64.fullmatch(compact):
            prints.add(compact)
        elif _NAME.fullmatch(entry):
            names.add(entry)
        else:
            raise ConfigurationError(
                f"{source}:{number}: not a common name or a SHA-256 fingerprint: "
                f"{entry[:80]!r}")
    return DenyRules(frozenset(names), frozenset(prints))


class DenyList:
    """A deny-list file, re-read when it changes (see the module text)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        check_interval: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.check_interval = check_interval
        self._now = monotonic
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = monotonic()
        self.rules = self._read()  # ConfigurationError at start
        self.reloads = 0

    def _read(self) -> DenyRules:
        try:
            stat = os.stat(self.path)
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigurationError(f"{self.path}: cannot read the deny-list: {why}") from None
        rules = parse_deny_list(text, str(self.path))
        self._stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        return rules

    def reload(self) -> bool:
        """Re-read the file now; False (previous list kept, error logged) on failure."""
        with self._lock:
            self._checked = self._now()
            try:
                rules = self._read()
            except ConfigurationError as exc:
                log.error("deny-list not reloaded, previous list kept: %s", exc)
                return False
            self.rules = rules
            self.reloads += 1
        log.info("deny-list %s loaded: %d entries", self.path, len(rules))
        return True

    def maybe_reload(self) -> None:
        """Re-read the file if it changed; at most every ``check_interval`` seconds."""
        now = self._now()
        if now - self._checked < self.check_interval:
            return
        self._checked = now
        try:
            stat = os.stat(self.path)
            stamp: tuple[int, int, int] | None = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self.reload()

    def match(self, common_name: str, fingerprint: str) -> str | None:
        """The entry that denies this certificate, or None."""
        self.maybe_reload()
        rules = self.rules
        if fingerprint.lower() in rules.fingerprints:
            return f"sha256:{fingerprint.lower()}"
        name = common_name.strip().lower()
        if name and name in rules.names:
            return name
        return None
