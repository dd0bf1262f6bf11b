import pytest
from intervals import clip, contains, gaps, insert, merge, normalize, total_length


def test_normalize_swaps_reversed_ends():
    assert normalize((5, 2)) == (2, 5)


def test_normalize_keeps_ordered_ends():
    assert normalize((2, 5)) == (2, 5)


def test_merge_empty_list():
    assert merge([]) == []


def test_merge_overlapping_intervals():
    assert merge([(1, 4), (2, 6), (8, 9)]) == [(1, 6), (8, 9)]


def test_merge_touching_intervals():
    assert merge([(1, 3), (3, 5)]) == [(1, 5)]


def test_merge_nested_interval():
    assert merge([(1, 10), (2, 3)]) == [(1, 10)]


def test_merge_unsorted_and_reversed_input():
    assert merge([(9, 7), (1, 2)]) == [(1, 2), (7, 9)]


def test_insert_bridges_two_intervals():
    assert insert([(1, 2), (5, 6)], (2, 5)) == [(1, 6)]


def test_total_length_counts_overlap_once():
    assert total_length([(0, 4), (2, 6)]) == 6


def test_total_length_of_disjoint_intervals():
    assert total_length([(0, 1), (5, 8)]) == 4


def test_gaps_between_intervals():
    assert gaps([(0, 1), (3, 4), (6, 8)]) == [(1, 3), (4, 6)]


def test_gaps_none_when_touching():
    assert gaps([(0, 5), (5, 9)]) == []


def test_contains_includes_both_ends():
    assert contains([(1, 3)], 1)
    assert contains([(1, 3)], 3)


def test_contains_outside_points():
    assert not contains([(1, 3)], 4)
    assert not contains([(5, 7)], 2)
    assert contains([(1, 2), (5, 7)], 6)


def test_clip_to_window():
    assert clip([(0, 4), (6, 10), (12, 14)], 2, 8) == [(2, 4), (6, 8)]


def test_clip_keeps_interval_touching_window():
    assert clip([(0, 2)], 2, 5) == [(2, 2)]


def test_clip_rejects_empty_window():
    with pytest.raises(ValueError):
        clip([(0, 1)], 3, 2)
