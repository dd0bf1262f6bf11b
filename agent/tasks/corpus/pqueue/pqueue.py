"""A binary-heap priority queue; equal priorities pop in insertion order."""

from __future__ import annotations

from typing import Any


class PriorityQueue:
    """Pop the item with the smallest priority first, first-in first-out among equals."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Any]] = []
        self._counter = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, item: Any, priority: int) -> None:
        """Add an item with the given priority."""
        self._heap.append((priority, self._counter, item))
        self._counter += 1
        self._sift_up(len(self._heap) - 1)

    def peek(self) -> Any:
        """Return the next item without removing it."""
        if not self._heap:
            raise IndexError("peek from an empty queue")
        return self._heap[0][2]

    def pop(self) -> Any:
        """Remove and return the item with the smallest priority."""
        if not self._heap:
            raise IndexError("pop from an empty queue")
        last = self._heap.pop()
        if not self._heap:
            return last[2]
        top = self._heap[0]
        self._heap[0] = last
        self._sift_down(0)
        return top[2]

    def _sift_up(self, index: int) -> None:
        while index > 0:
            parent = (index - 1) // 2
            if self._heap[index] < self._heap[parent]:
                self._heap[index], self._heap[parent] = self._heap[parent], self._heap[index]
                index = parent
            else:
                break

    def _sift_down(self, index: int) -> None:
        size = len(self._heap)
        while True:
            smallest = index
            for child in (2 * index + 1, 2 * index + 2):
                if child < size and self._heap[child] < self._heap[smallest]:
                    smallest = child
            if smallest == index:
                return
            self._heap[index], self._heap[smallest] = self._heap[smallest], self._heap[index]
            index = smallest


def heap_sort(items: list[int]) -> list[int]:
    """Return the items in ascending order by passing them through a queue."""
    queue = PriorityQueue()
    for item in items:
        queue.push(item, item)
    return [queue.pop() for _ in range(len(queue))]


def top_k(scores: dict[str, int], k: int) -> list[str]:
    """Return the k names with the highest scores, ties in insertion order."""
    if k < 0:
        raise ValueError("k must not be negative")
    queue = PriorityQueue()
    for name, score in scores.items():
        queue.push(name, -score)
    return [queue.pop() for _ in range(min(k, len(queue)))]
