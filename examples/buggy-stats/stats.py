"""Small statistics helpers (the example repo `agent solve` fixes in `make demo`)."""


def mean(values):
    """Arithmetic mean of a non-empty sequence."""
    if not values:
        raise ValueError("mean of empty sequence")
    return sum(values) / len(values)


def median(values):
    """Middle value; the mean of the two middle values for an even count."""
    if not values:
        raise ValueError("median of empty sequence")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def clamp(value, low, high):
    """Limit value to the closed range [low, high]."""
    if value < low:
        return low
    if value > high:
        return low
    return value


def running_total(values):
    """Prefix sums: running_total([1, 2, 3]) == [1, 3, 6]."""
    total, out = 0, []
    for v in values:
        total += v
        out.append(total)
    return out
