"""Storage shared by the stores: database URLs, the two backends, schema migrations.

* :mod:`.url`: ``--db`` values (a path, ``sqlite:///...``, ``postgresql://...``) and
  redaction of passwords in anything shown;
* :mod:`.database`: :class:`Database` with its SQLite and PostgreSQL backends: the one
  place that owns connections, transactions, durability settings and error translation;
* :mod:`.migrate`: versioned schema migrations.

Nothing here knows what a transfer or a VASP record is; the stores
(:mod:`trisa_peer.network.store`, :mod:`trisa_peer.directory.store`) do.
"""

from .database import DIALECTS, Database, PostgresDatabase, SQLiteDatabase, Tx, open_database
from .migrate import current_version, migrate
from .url import DatabaseURL, parse_url, redact

__all__ = [
    "DIALECTS",
    "Database",
    "DatabaseURL",
    "PostgresDatabase",
    "SQLiteDatabase",
    "Tx",
    "current_version",
    "migrate",
    "open_database",
    "parse_url",
    "redact",
]
