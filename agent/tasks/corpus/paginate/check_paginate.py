import pytest
from paginate import has_next, page_count, page_items, page_label, page_of_item, page_window, parse_page


def test_page_count_rounds_up():
    assert page_count(21, 10) == 3
    assert page_count(20, 10) == 2


def test_page_count_empty_has_one_page():
    assert page_count(0) == 1


def test_page_count_rejects_bad_sizes():
    with pytest.raises(ValueError):
        page_count(5, 0)
    with pytest.raises(ValueError):
        page_count(-1)


def test_page_items():
    items = list(range(25))
    assert page_items(items, 1) == list(range(10))
    assert page_items(items, 3) == [20, 21, 22, 23, 24]
    assert page_items(items, 4) == []


def test_page_items_rejects_page_zero():
    with pytest.raises(ValueError):
        page_items([1], 0)


def test_page_window_clips_at_edges():
    assert page_window(1, 10) == [1, 2, 3]
    assert page_window(5, 10) == [3, 4, 5, 6, 7]
    assert page_window(10, 10) == [8, 9, 10]


def test_page_window_rejects_outside_page():
    with pytest.raises(ValueError):
        page_window(11, 10)


def test_page_label():
    assert page_label(2, 7) == "Page 2 of 7"


def test_page_of_item():
    assert page_of_item(0) == 1
    assert page_of_item(9) == 1
    assert page_of_item(10) == 2
    with pytest.raises(ValueError):
        page_of_item(-1)


def test_has_next():
    assert has_next(1, 2)
    assert not has_next(2, 2)


def test_parse_page():
    assert parse_page("3", 5) == 3
    assert parse_page("x", 5) == 1
    assert parse_page("99", 5) == 5
    assert parse_page("-2", 5) == 1
