"""A least-recently-used cache with hit and miss counters."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

MIN_CAPACITY = 1


class LRUCache:
    """Keep at most `capacity` entries, evicting the least recently used one."""

    def __init__(self, capacity: int) -> None:
        if capacity < MIN_CAPACITY:
            raise ValueError(f"capacity must be at least {MIN_CAPACITY}")
        self.capacity = capacity
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: Hashable, default: Any = None) -> Any:
        """Return the cached value and mark it as recently used."""
        if key not in self._data:
            self.misses += 1
            return default
        self.hits += 1
        self._data.move_to_end(key)
        return self._data[key]

    def put(self, key: Hashable, value: Any) -> Hashable | None:
        """Store a value and return the evicted key, if any."""
        if key in self._data:
            self._data.move_to_end(key)
        self._data[key] = value
        if len(self._data) > self.capacity:
            evicted, _ = self._data.popitem(last=False)
            return evicted
        return None

    def peek(self, key: Hashable, default: Any = None) -> Any:
        """Return the cached value without touching its recency or the counters."""
        return self._data.get(key, default)

    def hit_rate(self) -> float:
        """Return hits divided by lookups, or 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        if lookups == 0:
            return 0.0
        return self.hits / lookups

    def resize(self, capacity: int) -> list[Hashable]:
        """Change the capacity and return the keys evicted to fit it, oldest first."""
        if capacity < MIN_CAPACITY:
            raise ValueError(f"capacity must be at least {MIN_CAPACITY}")
        self.capacity = capacity
        evicted = []
        while len(self._data) > capacity:
            key, _ = self._data.popitem(last=False)
            evicted.append(key)
        return evicted


def cached_calls(func_results: dict[int, int], calls: list[int], capacity: int) -> int:
    """Return how many of the calls miss an LRU cache of the given capacity."""
    cache = LRUCache(capacity)
    misses = 0
    for argument in calls:
        if cache.get(argument) is None:
            misses += 1
            cache.put(argument, func_results.get(argument, argument))
    return misses
