from datetime import date

import pytest
from dates import add_months, business_days, days_between, month_end, overlap, parse_iso, quarter, weeks_between


def test_days_between_includes_both_ends():
    assert days_between(date(2024, 2, 27), date(2024, 3, 1)) == [
        date(2024, 2, 27), date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1),
    ]


def test_days_between_single_day():
    assert days_between(date(2024, 1, 1), date(2024, 1, 1)) == [date(2024, 1, 1)]


def test_days_between_rejects_reversed_range():
    with pytest.raises(ValueError):
        days_between(date(2024, 1, 2), date(2024, 1, 1))


def test_overlap_counts_shared_days():
    first = (date(2024, 1, 1), date(2024, 1, 10))
    second = (date(2024, 1, 8), date(2024, 1, 20))
    assert overlap(first, second) == 3


def test_overlap_touching_and_disjoint():
    assert overlap((date(2024, 1, 1), date(2024, 1, 5)), (date(2024, 1, 5), date(2024, 1, 9))) == 1
    assert overlap((date(2024, 1, 1), date(2024, 1, 5)), (date(2024, 1, 6), date(2024, 1, 9))) == 0


def test_business_days_skips_weekend():
    assert business_days(date(2024, 3, 1), date(2024, 3, 10)) == 6


def test_business_days_weekend_only():
    assert business_days(date(2024, 3, 2), date(2024, 3, 3)) == 0


def test_month_end():
    assert month_end(date(2024, 2, 10)) == date(2024, 2, 29)
    assert month_end(date(2023, 2, 1)) == date(2023, 2, 28)
    assert month_end(date(2024, 12, 5)) == date(2024, 12, 31)


def test_add_months_clamps_day():
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2024, 3, 15), 2) == date(2024, 5, 15)


def test_add_months_across_years():
    assert add_months(date(2024, 11, 30), 3) == date(2025, 2, 28)
    assert add_months(date(2024, 1, 15), -1) == date(2023, 12, 15)


def test_quarter():
    assert [quarter(date(2024, month, 1)) for month in (1, 3, 4, 6, 7, 12)] == [1, 1, 2, 2, 3, 4]


def test_weeks_between():
    assert weeks_between(date(2024, 1, 1), date(2024, 1, 15)) == 2
    assert weeks_between(date(2024, 1, 1), date(2024, 1, 14)) == 1
    assert weeks_between(date(2024, 1, 15), date(2024, 1, 1)) == -2


def test_parse_iso():
    assert parse_iso(" 2024-02-29 ") == date(2024, 2, 29)
    assert parse_iso("2023-02-29") is None
