"""The current time, and the one type every injectable clock has.

Everything that reads the time takes a ``clock`` so that tests can freeze it; the
default is :func:`utcnow`. A clock returns an *aware* UTC datetime: code that
compares validity windows or writes RFC 3339 timestamps relies on it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utcnow"]

#: A source of the current time (aware UTC datetimes); injectable for tests.
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)
