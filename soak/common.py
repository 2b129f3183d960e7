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



def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
