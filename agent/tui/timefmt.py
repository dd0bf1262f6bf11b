"""Times as the TUI shows them: stored UTC (SQLite hands back naive datetimes) shown in local time."""

from __future__ import annotations

from datetime import datetime, timezone


def as_utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def stamp(dt: datetime | None) -> str:
    """Local date and minute, the resolution a person scanning a table needs."""
    dt = as_utc(dt)
    return dt.astimezone().strftime("%Y-%m-%d %H:%M") if dt else "—"


def short(dt: datetime | None) -> str:
    """Month, day and minute: for narrow columns of recent events."""
    dt = as_utc(dt)
    return dt.astimezone().strftime("%m-%d %H:%M") if dt else "—"


def day(dt: datetime) -> str:
    return as_utc(dt).astimezone().strftime("%Y-%m-%d")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
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
        return "—"
    delta = (dt - as_utc(now)).total_seconds()
    return f"in {duration(delta)}" if delta >= 0 else f"{duration(-delta)} ago"
