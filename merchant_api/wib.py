"""Time as the back office counts it: microseconds since the epoch, business days in WIB.

Jakarta keeps Western Indonesia Time (WIB, UTC+7) all year, with no daylight saving, so a
fixed offset is exact and needs no time-zone database.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone

WIB = timezone(timedelta(hours=7), "WIB")

# The API's clock, as an offset from the machine's (see `set_clock_offset`).
_offset_us = 0


def set_clock_offset(seconds: int) -> None:
    """Run this process's business clock `seconds` off the machine's clock.

    For simulations and drills only (`jakartaone demo` replays a past business day, so that
    the day is closed when its nightly job runs): set from JAKARTAONE_CLOCK_OFFSET_SECONDS,
    which production leaves at 0."""
    global _offset_us
    _offset_us = seconds * 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000 + _offset_us


def business_date(at_us: int) -> str:
    """The WIB calendar day of `at_us`, as 'YYYY-MM-DD'."""
    return datetime.fromtimestamp(at_us / 1_000_000, WIB).date().isoformat()


def month(at_us: int) -> str:
    """The WIB calendar month of `at_us`, as 'YYYY-MM' (Bank Indonesia's monthly limits)."""
    return business_date(at_us)[:7]


def day_bounds_us(day: date) -> tuple[int, int]:
    """[start, end) of a WIB business day in microseconds since the epoch."""
    start = datetime(day.year, day.month, day.day, tzinfo=WIB)
    end = start + timedelta(days=1)
    return int(start.timestamp()) * 1_000_000, int(end.timestamp()) * 1_000_000


def to_datetime(at_us: int) -> datetime:
    """A UTC datetime for the API's RFC 3339 fields."""
    return datetime.fromtimestamp(at_us // 1_000_000, UTC).replace(microsecond=at_us % 1_000_000)
