"""The bench scripts' child processes, spoken to in lines (standard library only, so
that a child importing its own script stays light)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

__all__ = ["LineChild"]


class LineChild:
    """A bench script's child process spoken to in lines: commands on its stdin, one
    ``READY`` line and then one JSON line per answer on its stdout; closing its stdin
    stops it (killed after 15 s)."""

    def __init__(self, argv: list[str], what: str) -> None:
        self.what = what
        self.proc = subprocess.Popen([sys.executable, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "READY":
            self.stop()
            raise RuntimeError(f"{self.what} did not start: {line or 'no output'}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return dict(json.loads(self.proc.stdout.readline()))

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
