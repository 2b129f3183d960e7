"""Throw-away PostgreSQL databases for tests, reliability cases and benchmarks.

:class:`TemporaryDatabase` creates ``<prefix>_<pid>_<random>`` on the server named by
``TRISA_PEER_TEST_PG`` (default ``postgresql://root@127.0.0.1:5432/postgres``, the
project machines' trust-auth server) and drops it (``WITH (FORCE)``) on exit. A server
that cannot be reached raises :class:`~trisa_peer.errors.StoreError` with one line: a
test that needs PostgreSQL fails, it never silently skips.
"""

from __future__ import annotations

import os
import uuid

from ..errors import StoreError
from ..storage import redact

__all__ = ["ADMIN_URL", "TemporaryDatabase", "admin_url"]

ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"


def admin_url() -> str:
    return os.environ.get("TRISA_PEER_TEST_PG", ADMIN_URL)


class TemporaryDatabase:
    """A database that lives for one ``with`` block; ``.url`` names it."""

    def __init__(self, prefix: str = "trisa_peer_tmp") -> None:
        self.admin = admin_url()
        self.name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        head, _, _ = self.admin.rpartition("/")
        self.url = f"{head}/{self.name}"

    def _admin(self, sql: str) -> None:
        import psycopg

        try:
            with psycopg.connect(self.admin, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql)
        except psycopg.OperationalError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreError(
                f"PostgreSQL is not reachable at {redact(self.admin)}: {redact(first)} "
                "(start it, or set TRISA_PEER_TEST_PG)"
            ) from exc

    def create(self) -> TemporaryDatabase:
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def __enter__(self) -> TemporaryDatabase:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.drop()
