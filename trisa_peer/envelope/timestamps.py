"""RFC 3339 timestamps as TRISA writes and reads them (upstream writes
``time.RFC3339Nano``).

Envelopes carry Go ``time.RFC3339Nano`` in UTC: fractional seconds with trailing
zeros trimmed and a ``Z`` suffix. Receivers accept RFC3339Nano or RFC3339 with any
numeric offset. Python datetimes hold microseconds, so nanosecond digits beyond the
sixth are accepted on input and truncated.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache

from ..clock import Clock, utcnow

__all__ = ["Clock", "format_timestamp", "format_timestamp_seconds", "parse_timestamp", "utcnow"]

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
_MAX_LEN = 64


def _as_utc(dt: datetime) -> datetime:
    if not isinstance(dt, datetime):
        raise TypeError("timestamp must be a datetime")
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        raise ValueError("timestamp must be timezone-aware")
    return dt.astimezone(UTC)


def format_timestamp(dt: datetime) -> str:
    """Go ``RFC3339Nano`` in UTC: ``2022-03-29T14:16:29.755212Z`` (zeros trimmed, ``Z``)."""
    utc = _as_utc(dt)
    text = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    )
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def format_timestamp_seconds(dt: datetime) -> str:
    """RFC 3339 at second precision in UTC, as SigningKey ``not_before``/``not_after``."""
    return format_timestamp(_as_utc(dt).replace(microsecond=0))


def parse_timestamp(text: str) -> datetime:
    """Parse RFC3339Nano or RFC3339 (any offset) into an aware UTC datetime.

    Raises :class:`ValueError` for anything else (including out-of-range fields).
    """
    if not isinstance(text, str):
        raise TypeError("timestamp must be a string")
    if len(text) > _MAX_LEN:
        raise ValueError("timestamp too long")
    return _parse(str(text))


@lru_cache(maxsize=256)
def _parse(text: str) -> datetime:
    """:func:`parse_timestamp` of one checked string, remembered: one transfer parses
    the same few timestamps several times on each side (validation at seal and open,
    the freshness check, the handler). Results are immutable; failures (ValueError)
    are not cached; at most 256 strings of at most 64 characters are kept."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("timestamp is not RFC 3339")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    frac = match.group(7) or ""
    micro = int((frac + "000000")[:6])
    zone = match.group(8)
    if zone in ("Z", "z"):
        tz = UTC
    else:
        oh, om = int(zone[1:3]), int(zone[4:6])
        if oh > 23 or om > 59:
            raise ValueError("timestamp offset out of range")
        delta = timedelta(hours=oh, minutes=om)
        tz = timezone(-delta if zone[0] == "-" else delta)
    try:
        local = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        return local.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError("timestamp out of range") from exc
