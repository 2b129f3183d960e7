"""The record of a handshake: the eight steps as they happened, for display and logs.

Pure: imports neither grpc nor the generated protobuf code.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import HandshakeError
from .steps import HandshakeStep, Reason

__all__ = ["HandshakeTrace", "StepRecord"]


@dataclass(frozen=True)
class StepRecord:
    """One step's outcome: ``pass``, ``fail`` or ``skip``, with a reason and duration."""

    step: HandshakeStep
    outcome: str
    detail: str = ""
    reason: Reason | None = None
    duration_ms: float = 0.0


@dataclass
class HandshakeTrace:
    """The eight steps as they happened, in order, for display and logs."""

    records: list[StepRecord] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, step: HandshakeStep, detail: str = "") -> Iterator[list[str]]:
        """Time a step; yields a one-element list the caller may set to a detail text.

        A :class:`HandshakeError` escaping the block is recorded as a failure of the
        step *it* names (which may be a later step) and re-raised.
        """
        note = [detail]
        start = time.perf_counter()
        try:
            yield note
        except HandshakeError as exc:
            ms = (time.perf_counter() - start) * 1000
            self.records.append(StepRecord(exc.step, "fail", str(exc), exc.reason, ms))
            raise
        ms = (time.perf_counter() - start) * 1000
        self.records.append(StepRecord(step, "pass", note[0], None, ms))

    def add(
        self, step: HandshakeStep, outcome: str, detail: str = "", reason: Reason | None = None
    ) -> None:
        self.records.append(StepRecord(step, outcome, detail, reason))

    @property
    def ok(self) -> bool:
        steps = {r.step for r in self.records if r.outcome == "pass"}
        return all(r.outcome != "fail" for r in self.records) and steps == set(HandshakeStep)

    def failed(self) -> StepRecord | None:
        return next((r for r in self.records if r.outcome == "fail"), None)

    def render(self) -> str:
        """A fixed-width table of the eight steps (missing ones shown as not reached)."""
        by_step: dict[HandshakeStep, StepRecord] = {}
        for rec in self.records:
            by_step[rec.step] = rec
        lines = []
        for step in HandshakeStep:
            found = by_step.get(step)
            if found is None:
                lines.append(f"  [ -- ] {int(step)} {step.title:<48} not reached")
                continue
            rec = found
            mark = {"pass": " ok ", "fail": "FAIL", "skip": "skip"}.get(rec.outcome, rec.outcome)
            took = f"{rec.duration_ms:7.1f} ms" if rec.duration_ms else " " * 10
            lines.append(f"  [{mark}] {int(step)} {step.title:<48} {took}  {rec.detail}")
        return "\n".join(lines)
