"""Times as the TUI shows them: stored UTC (SQLite hands back naive datetimes) shown in local time.

One format everywhere: a date reads `YYYY-MM-DD`, a time of day `HH:MM`, a moment `YYYY-MM-DD HH:MM`
(`date` and `clock` are its two halves). Every date on screen comes from here; nothing else calls
strftime. Spans of time read as durations (`duration`, `relative`), never as dates.
"""

from __future__ import annotations

from datetime import datetime, timezone

DATE = "%Y-%m-%d"
CLOCK = "%H:%M"
STAMP = f"{DATE} {CLOCK}"
NONE = "—"


def as_utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def local(dt: datetime) -> datetime:
    """`dt` in the machine's local time; a naive `dt` is UTC (as the store hands it back)."""
    return as_utc(dt).astimezone()


def stamp(dt: datetime | None) -> str:
    """Local date and minute, the resolution a person scanning a table needs: 2026-11-20 12:04."""
    return local(dt).strftime(STAMP) if dt else NONE


def date(dt: datetime | None) -> str:
    """The date half of `stamp`: 2026-11-20."""
    return local(dt).strftime(DATE) if dt else NONE


def clock(dt: datetime | None) -> str:
    """The time-of-day half of `stamp`: 12:04."""
    return local(dt).strftime(CLOCK) if dt else NONE


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:02.0f}h"


def relative(dt: datetime | None, now: datetime) -> str:
    """'in 2h05m' or '3m10s ago'; callers pass `now` so tests can fix the clock."""
    dt = as_utc(dt)
    if dt is None:
        return NONE
    delta = (dt - as_utc(now)).total_seconds()
    return f"in {duration(delta)}" if delta >= 0 else f"{duration(-delta)} ago"
