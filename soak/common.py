"""Shared pieces of the reliability cases: the result type, targets, RSS."""

from __future__ import annotations

import operator
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, "==": operator.eq, ">=": operator.ge, ">": operator.gt,
}


@dataclass
class Result:
    """Figures of one case and the targets they are held to."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    misses: list[str] = field(default_factory=list)

    def figure(self, key: str, value: Any) -> Any:
        self.figures[key] = value
        return value

    def target(self, key: str, op: str, bound: Any) -> None:
        """Record a miss unless ``figures[key] op bound`` holds."""
        value = self.figures[key]
        if not _OPS[op](value, bound):
            self.misses.append(f"{key}={value}, target {op} {bound}")

    @property
    def ok(self) -> bool:
        return not self.misses

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "figures": self.figures, "misses": self.misses}


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def scaled(full: int, scale: float, minimum: int = 1) -> int:
    """``full`` times ``scale``, at least ``minimum``."""
    return max(minimum, int(full * scale))


def stop_process(proc: subprocess.Popen[str], *, timeout: float = 15.0,
                 ask: Callable[[], None] | None = None) -> None:
    """Stop a child politely (``ask``, default SIGTERM), then kill it after ``timeout``."""
    if proc.poll() is not None:
        return
    (ask or proc.terminate)()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


PG_ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"


class PgDatabase:
    """A PostgreSQL database created for one case and dropped after it
    (``TRISA_PEER_TEST_PG`` names the admin URL; default: the machine's trust-auth
    server). Fails, never skips, when PostgreSQL is down."""

    def __init__(self, prefix: str) -> None:
        import os
        import uuid

        self.admin = os.environ.get("TRISA_PEER_TEST_PG", PG_ADMIN_URL)
        self.name = f"trisa_peer_{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        head, _, _ = self.admin.rpartition("/")
        self.url = f"{head}/{self.name}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def __enter__(self) -> PgDatabase:
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc: object) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
