"""Which database a store uses: ``--db`` values parsed, and URLs redacted for display.

Accepted values:

* a plain path (``transfers.db``) or ``sqlite:///relative/path``,
  ``sqlite:////absolute/path``, ``sqlite:///:memory:`` (SQLAlchemy's convention: three
  slashes, then the path);
* ``postgresql://[user@]host[:port]/dbname[?param=value...]`` (also ``postgres://``),
  any libpq URL parameter allowed (``sslmode=verify-full``, ``sslrootcert=...``).

A password inside the URL is refused: ``--db`` is visible in the process list and in
shell history. Give it through libpq's ``PGPASSWORD`` or ``PGPASSFILE`` (or a password
file, see :class:`~trisa_peer.storage.database.PostgresDatabase`). :func:`redact`
removes passwords from any text that may carry a URL or a libpq connection string.

Not checked here: whether the file or the server exists (that is the backend's job).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from ..errors import ConfigurationError

__all__ = ["DatabaseURL", "parse_url", "redact"]

Backend = Literal["sqlite", "postgresql"]

_PG_SCHEMES = ("postgresql", "postgres")
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/@\s:]*):[^@\s/]*@", re.I)
_KW_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('[^']*'|\S+)", re.I)


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed ``--db`` value. ``path`` for SQLite, ``conninfo`` for PostgreSQL."""

    backend: Backend
    path: str = ""
    conninfo: str = ""

    @property
    def display(self) -> str:
        """What errors and logs may show (never a password: none is accepted)."""
        return self.path if self.backend == "sqlite" else redact(self.conninfo)

    @property
    def in_memory(self) -> bool:
        return self.backend == "sqlite" and self.path == ":memory:"

    def __str__(self) -> str:
        return self.display


def parse_url(value: str | os.PathLike[str]) -> DatabaseURL:
    """Parse a ``--db`` value; :class:`ConfigurationError` (one line) when malformed."""
    text = os.fspath(value).strip()
    if not text:
        raise ConfigurationError("--db: empty database location")
    scheme, sep, _ = text.partition("://")
    if not sep:
        return DatabaseURL("sqlite", path=text)
    scheme = scheme.lower()
    if scheme == "sqlite":
        path = text[len("sqlite:///"):] if text.startswith("sqlite:///") else ""
        if not path:
            raise ConfigurationError(
                f"--db {text}: a SQLite URL is sqlite:///relative/path or "
                "sqlite:////absolute/path"
            )
        return DatabaseURL("sqlite", path=unquote(path))
    if scheme in _PG_SCHEMES:
        parts = urlsplit(text)
        if parts.password is not None:
            raise ConfigurationError(
                f"--db {redact(text)}: a password in the URL shows in the process list; "
                "put it in PGPASSFILE or PGPASSWORD, or use --db-password-file"
            )
        if "password=" in (parts.query or "").lower():
            raise ConfigurationError(
                f"--db {redact(text)}: a password in the URL shows in the process list; "
                "put it in PGPASSFILE or PGPASSWORD, or use --db-password-file"
            )
        if not parts.path.strip("/"):
            raise ConfigurationError(
                f"--db {text}: name the database (postgresql://host:5432/DBNAME)"
            )
        return DatabaseURL("postgresql", conninfo=text)
    raise ConfigurationError(
        f"--db {redact(text)}: unknown database scheme {scheme!r} "
        "(use a file path, sqlite:///path or postgresql://host/dbname)"
    )


def redact(text: str) -> str:
    """``text`` with every URL password and ``password=...`` setting replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:***@", text)
    return _KW_PASSWORD.sub(lambda m: f"{m.group('head')}***", text)
