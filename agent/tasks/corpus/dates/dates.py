"""Inclusive date ranges: listing, overlap, business days and month arithmetic."""

from __future__ import annotations

from datetime import date, timedelta

ONE_DAY = timedelta(days=1)
WEEKEND = (5, 6)  # Saturday and Sunday as date.weekday() numbers
MONTHS_PER_YEAR = 12
MONTHS_PER_QUARTER = 3
DAYS_PER_WEEK = 7


def days_between(start: date, end: date) -> list[date]:
    """Return every date from start to end, both included."""
    if end < start:
        raise ValueError("end is before start")
    days = []
    current = start
    while current <= end:
        days.append(current)
        current += ONE_DAY
    return days


def overlap(first: tuple[date, date], second: tuple[date, date]) -> int:
    """Return how many days two inclusive date ranges share."""
    start = max(first[0], second[0])
    end = min(first[1], second[1])
    if end < start:
        return 0
    return (end - start).days + 1


def business_days(start: date, end: date) -> int:
    """Count the weekdays from start to end, both included."""
    return sum(1 for day in days_between(start, end) if day.weekday() not in WEEKEND)


def add_months(day: date, months: int) -> date:
    """Add whole months, clamping the day to the length of the target month."""
    index = day.year * MONTHS_PER_YEAR + day.month - 1 + months
    year, month_index = divmod(index, MONTHS_PER_YEAR)
    first_of_month = date(year, month_index + 1, 1)
    return first_of_month.replace(day=min(day.day, month_end(first_of_month).day))


def month_end(day: date) -> date:
    """Return the last day of the month that contains day."""
    if day.month == MONTHS_PER_YEAR:
        return date(day.year + 1, 1, 1) - ONE_DAY
    return date(day.year, day.month + 1, 1) - ONE_DAY


def quarter(day: date) -> int:
    """Return the calendar quarter (1 to 4) of day."""
    return (day.month - 1) // MONTHS_PER_QUARTER + 1


def weeks_between(start: date, end: date) -> int:
    """Return the number of whole weeks from start to end (negative if end is earlier)."""
    days = (end - start).days
    whole = abs(days) // DAYS_PER_WEEK
    return whole if days >= 0 else -whole


def parse_iso(text: str) -> date | None:
    """Parse a YYYY-MM-DD date, returning None when the text is not one."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        return None
