"""PostgreSQL for the tests: one database per pytest process, one schema per test.

``make test`` runs every store test on SQLite and on PostgreSQL. PostgreSQL must be
reachable at ``TRISA_PEER_TEST_PG`` (default ``postgresql://root@127.0.0.1:5432/postgres``,
the project machines' trust-auth server): if it is not, the PostgreSQL cases fail
(never skip). Only ``TRISA_PEER_TEST_NO_POSTGRES=1`` (which ``.ci/run`` never sets)
leaves them out, and the session header says so.

The per-process database is ``trisa_peer_t_<pid>_<random>``, created on first use and
dropped at exit; each test gets a fresh schema in it through the URL's
``options=-csearch_path=...``, so tests never see each other's tables.
"""

from __future__ import annotations

import atexit
import os
import uuid
from urllib.parse import quote

from trisa_peer.testing.postgres import TemporaryDatabase, admin_url

ADMIN_URL = admin_url()
OPT_OUT = os.environ.get("TRISA_PEER_TEST_NO_POSTGRES", "") not in ("", "0")

#: the backends every store test runs on
BACKENDS: tuple[str, ...] = ("sqlite",) if OPT_OUT else ("sqlite", "postgresql")

_database: TemporaryDatabase | None = None


def database_url() -> str:
    """This process's test database (created on first call, dropped at exit)."""
    global _database
    if _database is None:
        db = TemporaryDatabase("trisa_peer_t").create()
        atexit.register(db.drop)
        _database = db
    return _database.url


def fresh_schema_url() -> str:
    """A URL whose connections see only a new, empty schema."""
    import psycopg

    url = database_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{url}?options={quote(f'-csearch_path={schema}')}"
