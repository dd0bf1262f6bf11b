"""Merge, insert and measure closed integer intervals."""

from __future__ import annotations

Interval = tuple[int, int]


def normalize(interval: Interval) -> Interval:
    """Return the interval with its ends in ascending order."""
    start, end = interval
    if start > end:
        return (end, start)
    return (start, end)


def merge(intervals: list[Interval]) -> list[Interval]:
    """Merge overlapping or touching intervals into a sorted list."""
    ordered = sorted(normalize(item) for item in intervals)
    merged: list[Interval] = []
    for start, end in ordered:
        if merged and start <= merged[-1][1]:
            last_start, last_end = merged[-1]
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    return merged


def insert(intervals: list[Interval], new_interval: Interval) -> list[Interval]:
    """Insert one interval into a list and merge the result."""
    return merge([*intervals, new_interval])


def total_length(intervals: list[Interval]) -> int:
    """Return the total length covered by the intervals, counting overlaps once."""
    return sum(end - start for start, end in merge(intervals))


def gaps(intervals: list[Interval]) -> list[Interval]:
    """Return the uncovered stretches between the merged intervals."""
    merged = merge(intervals)
    found: list[Interval] = []
    for (_, previous_end), (next_start, _) in zip(merged, merged[1:]):
        found.append((previous_end, next_start))
    return found


def contains(intervals: list[Interval], point: int) -> bool:
    """Return True if any interval covers the point, ends included."""
    for start, end in merge(intervals):
        if start <= point <= end:
            return True
        if point < start:
            return False
    return False


def clip(intervals: list[Interval], low: int, high: int) -> list[Interval]:
    """Cut the intervals down to the window [low, high], dropping those outside it."""
    if low > high:
        raise ValueError(f"empty window {low}..{high}")
    clipped: list[Interval] = []
    for start, end in merge(intervals):
        if end < low or start > high:
            continue
        clipped.append((max(start, low), min(end, high)))
    return clipped
