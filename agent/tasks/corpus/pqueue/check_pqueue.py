import pytest
from pqueue import PriorityQueue, heap_sort, top_k


def test_pop_smallest_priority_first():
    queue = PriorityQueue()
    queue.push("low", 5)
    queue.push("high", 1)
    queue.push("mid", 3)
    assert [queue.pop(), queue.pop(), queue.pop()] == ["high", "mid", "low"]


def test_equal_priorities_are_fifo():
    queue = PriorityQueue()
    for name in ("a", "b", "c"):
        queue.push(name, 1)
    assert [queue.pop() for _ in range(3)] == ["a", "b", "c"]


def test_peek_does_not_remove():
    queue = PriorityQueue()
    queue.push("x", 2)
    queue.push("y", 1)
    assert queue.peek() == "y"
    assert len(queue) == 2


def test_empty_queue_errors():
    queue = PriorityQueue()
    with pytest.raises(IndexError):
        queue.pop()
    with pytest.raises(IndexError):
        queue.peek()


def test_len_tracks_pushes_and_pops():
    queue = PriorityQueue()
    queue.push("a", 1)
    queue.push("b", 2)
    queue.pop()
    assert len(queue) == 1


def test_heap_sort():
    assert heap_sort([5, 3, 9, 1, 1, 8, 2, 7]) == [1, 1, 2, 3, 5, 7, 8, 9]
    assert heap_sort([]) == []


def test_heap_sort_many_items():
    items = [(index * 37) % 101 for index in range(101)]
    assert heap_sort(items) == sorted(items)


def test_top_k():
    scores = {"ann": 3, "bob": 9, "cy": 5, "di": 9}
    assert top_k(scores, 2) == ["bob", "di"]
    assert top_k(scores, 10) == ["bob", "di", "cy", "ann"]
    assert top_k(scores, 0) == []


def test_top_k_rejects_negative():
    with pytest.raises(ValueError):
        top_k({"a": 1}, -1)
