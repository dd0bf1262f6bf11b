"""Descriptive statistics for lists of numbers."""

from __future__ import annotations

import math
from collections import Counter

PERCENT = 100


def mean(values: list[float]) -> float:
    """Return the arithmetic mean of a non-empty list."""
    if not values:
        raise ValueError("mean of an empty list")
    return sum(values) / len(values)


def median(values: list[float]) -> float:
    """Return the middle value, or the mean of the two middle values for even lengths."""
    if not values:
        raise ValueError("median of an empty list")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def mode(values: list[float]) -> float:
    """Return the most common value; the smallest one wins ties."""
    if not values:
        raise ValueError("mode of an empty list")
    counts = Counter(values)
    best = max(counts.values())
    return min(value for value, count in counts.items() if count == best)


def variance(values: list[float], sample: bool = False) -> float:
    """Return the population variance, or the sample variance when sample is True."""
    needed = 2 if sample else 1
    if len(values) < needed:
        raise ValueError(f"variance needs at least {needed} values")
    center = mean(values)
    squares = sum((value - center) ** 2 for value in values)
    return squares / (len(values) - 1 if sample else len(values))


def stdev(values: list[float], sample: bool = False) -> float:
    """Return the square root of the variance."""
    return math.sqrt(variance(values, sample))


def percentile(values: list[float], pct: float) -> float:
    """Return the pct-th percentile (0 to 100) with linear interpolation between ranks."""
    if not values:
        raise ValueError("percentile of an empty list")
    if not 0 <= pct <= PERCENT:
        raise ValueError("pct must be between 0 and 100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / PERCENT
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def value_range(values: list[float]) -> float:
    """Return the largest value minus the smallest (0 for an empty list)."""
    if not values:
        return 0
    return max(values) - min(values)


def safe_mean(values: list[float], default: float = 0.0) -> float:
    """Return the mean, or default for an empty list."""
    try:
        return mean(values)
    except ValueError:
        return default
