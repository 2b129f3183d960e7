"""The log format of the console scripts: text (the default) or one JSON object per line.

:func:`use_format` is the one place that chooses it (the runner calls it after
``logging.basicConfig``). The JSON form writes, per record: ``time`` (UTC, ISO 8601
with microseconds and ``+00:00``), ``zone`` (``UTC``), ``level``, ``logger``,
``message``, ``request_id`` (from :func:`trisa_peer.events.request_id`, null outside a
call) and the structured fields a call site passes as ``extra`` from :data:`FIELDS`
(e.g. the transfer line's ``envelope_id``, ``peer``, ``state``, ``code``, ``latency``).
An exception is written as its type and first line only, never a traceback with local
values. Messages are what the code logs already: it logs no keys, passwords, tokens or
payloads (tests/test_json_logs.py checks a run), and peer text in them went through
:func:`~trisa_peer.logtext.peer_text`. JSON escaping (ASCII only) keeps every record on one line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from . import events

__all__ = ["FIELDS", "LOG_FORMATS", "JsonFormatter", "use_format"]

LOG_FORMATS = ("text", "json")

#: ``extra`` keys copied into the JSON object (anything else in ``extra`` is dropped).
FIELDS = ("event", "direction", "peer", "envelope_id", "state", "code", "latency",
          "step", "outcome", "reason", "fingerprint", "service", "method", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; ``worker``: the ``--workers`` index,
    written with the process id (the supervisor sets it in each worker)."""

    def __init__(self, *, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="microseconds"),
            "zone": "UTC",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": events.request_id(),
        }
        if self.worker is not None:
            doc["worker"] = self.worker
            doc["pid"] = record.process
        for key in FIELDS:
            if key in record.__dict__:
                doc[key] = record.__dict__[key]
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return json.dumps(doc, ensure_ascii=True, default=str)


def use_format(name: str) -> None:
    """Give the root logger's stderr handlers the ``name`` format ("text" keeps them)."""
    if name == "text":
        return
    if name != "json":
        raise ValueError(f"unknown log format {name!r}")
    formatter = JsonFormatter()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
            handler.setFormatter(formatter)
