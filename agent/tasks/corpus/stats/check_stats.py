import pytest
from stats import mean, median, mode, percentile, safe_mean, stdev, value_range, variance


def test_mean():
    assert mean([1, 2, 3, 4]) == 2.5
    with pytest.raises(ValueError):
        mean([])


def test_median_odd_and_even():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5


def test_median_empty():
    with pytest.raises(ValueError):
        median([])


def test_mode_smallest_wins_ties():
    assert mode([1, 2, 2, 3, 3]) == 2
    assert mode([5]) == 5


def test_variance_population_and_sample():
    assert variance([2, 4, 4, 4, 5, 5, 7, 9]) == 4
    assert variance([1, 3], sample=True) == 2


def test_variance_needs_enough_values():
    with pytest.raises(ValueError):
        variance([1], sample=True)
    with pytest.raises(ValueError):
        variance([])


def test_stdev():
    assert stdev([2, 4, 4, 4, 5, 5, 7, 9]) == 2


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30], 0) == 10
    assert percentile([10, 20, 30], 100) == 30
    assert percentile([10, 20, 30], 25) == 15


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_value_range():
    assert value_range([3, 9, 1]) == 8
    assert value_range([]) == 0


def test_safe_mean():
    assert safe_mean([2, 4]) == 3
    assert safe_mean([]) == 0.0
    assert safe_mean([], default=-1) == -1
