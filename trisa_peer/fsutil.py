"""Crash-safe file writes: nothing half-written, private files 0600 from birth.

Every file the toolkit writes goes through :func:`atomic_write`: the data lands in a
temporary file in the same directory (created with the final mode, so a private key is
never readable by others, not even for an instant), is flushed and fsynced, then renamed
over the target. A failure leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from .errors import ConfigurationError

__all__ = [
    "PRIVATE_MODE",
    "PUBLIC_MODE",
    "atomic_write",
    "create_private",
    "read_private_text",
    "write_private",
]

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = PUBLIC_MODE) -> Path:
    """Write ``data`` to ``path`` atomically with permissions ``mode``; return the path."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise ConfigurationError(f"{target}: directory {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ConfigurationError(f"{target}: cannot write: {exc.strerror}") from exc
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigurationError(f"{target}: cannot write: {exc.strerror}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def write_private(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write a secret (private key, token cache, password) readable by the owner only."""
    return atomic_write(path, data, mode=PRIVATE_MODE)


def create_private(path: str | os.PathLike[str]) -> None:
    """Make ``path`` a private file: create it empty with mode 0600, or tighten an
    existing one (and its SQLite ``-wal``/``-shm`` companions) to 0600.

    Used before SQLite opens a database holding secrets; SQLite gives the ``-wal`` and
    ``-shm`` files it creates the database file's mode.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_MODE)
    except FileExistsError:
        for candidate in (name, f"{name}-wal", f"{name}-shm"):
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(candidate)
                if st.st_mode & 0o077 and st.st_uid == os.getuid():
                    os.chmod(candidate, PRIVATE_MODE)
        return
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot create: {exc.strerror}") from exc
    os.close(fd)


def read_private_text(path: str | os.PathLike[str], what: str) -> str:
    """The UTF-8 text of a secret file (a password, tokens, signing keys), refused like
    ssh refuses a key when group or others may read it. Every failure is one
    :class:`ConfigurationError` line naming the file and ``what`` it is, never its
    content."""
    name = os.fspath(path)
    try:
        if os.stat(name).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(f"{name}: {what} is readable by others; chmod 600 it")
        return Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{name}: cannot read {what}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise ConfigurationError(f"{name}: {what} is not UTF-8 text") from None
