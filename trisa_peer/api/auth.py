"""Bearer tokens of the HTTP API, read from a private file (no web framework here).

The token file holds one or more tokens, one per line (blank lines and ``#`` comments
ignored); several lines let an operator rotate without a gap: add the new token, move
the back office to it, remove the old one. The file is re-read when its modification
time, size or inode changes (checked at most once a second, and at every request after
that second), so rotation needs no restart; a re-read that fails (the file removed,
made readable by others, emptied) keeps the previous tokens and logs one line.

Checked: the file is private (no group or other permission bits, like ssh keys), each
token is at least :data:`MIN_TOKEN_LENGTH` characters of printable ASCII without spaces;
a presented token is compared with every token in constant time
(:func:`hmac.compare_digest` on SHA-256 digests, so neither the length nor the position
of a mismatch leaks). Not checked here: where the token came from (the app accepts only
the ``Authorization: Bearer`` header and refuses any ``token``/``access_token`` query
parameter), TLS (see :mod:`trisa_peer.api.server`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time

from ..errors import ConfigurationError
from ..fsutil import read_private_text

__all__ = ["MIN_TOKEN_LENGTH", "TokenFile", "read_tokens"]

log = logging.getLogger("trisa_peer.api")

#: shorter tokens are refused at start: a bearer token is the API's only secret on loopback
MIN_TOKEN_LENGTH = 16
#: the file is looked at again at most this often (seconds)
RECHECK_INTERVAL = 1.0


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def read_tokens(path: str | os.PathLike[str]) -> list[str]:
    """The tokens in ``path``; :class:`ConfigurationError` (one line, never a token)
    when the file is not private, unreadable, empty or holds a malformed token."""
    name = os.fspath(path)
    text = read_private_text(name, "API token file")
    tokens: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigurationError(f"{name}: line {number}: API token shorter than "
                                     f"{MIN_TOKEN_LENGTH} characters")
        if not all(33 <= ord(ch) < 127 for ch in token):
            raise ConfigurationError(f"{name}: line {number}: API token is not printable "
                                     "ASCII without spaces")
        tokens.append(token)
    if not tokens:
        raise ConfigurationError(f"{name}: API token file holds no token")
    return tokens


class TokenFile:
    """The accepted tokens, kept as digests and re-read when the file changes."""

    def __init__(self, path: str | os.PathLike[str], *,
                 recheck_interval: float = RECHECK_INTERVAL) -> None:
        self.path = os.fspath(path)
        self.recheck_interval = recheck_interval
        self._lock = threading.Lock()
        self._digests = [_digest(t) for t in read_tokens(self.path)]  # raises at start
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _refresh(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._checked < self.recheck_interval:
                return
            self._checked = now
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                self._digests = [_digest(t) for t in read_tokens(self.path)]
            except ConfigurationError as exc:
                log.warning("API tokens not reloaded, the previous ones stay: %s", exc)
            else:
                log.info("API tokens reloaded from %s (%d)", self.path, len(self._digests))

    def accepts(self, presented: str) -> bool:
        """True when ``presented`` equals one of the file's tokens (constant time: every
        token is compared, whatever matched)."""
        self._refresh()
        offered = _digest(presented)
        with self._lock:
            digests = list(self._digests)
        found = False
        for digest in digests:
            found |= hmac.compare_digest(offered, digest)
        return found
