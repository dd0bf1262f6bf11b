import pytest
from lru import LRUCache, cached_calls


def test_get_missing_returns_default_and_counts_miss():
    cache = LRUCache(2)
    assert cache.get("a", 0) == 0
    assert cache.misses == 1


def test_put_then_get():
    cache = LRUCache(2)
    cache.put("a", 1)
    assert cache.get("a") == 1
    assert cache.hits == 1


def test_evicts_least_recently_used():
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.get("a")
    assert cache.put("c", 3) == "b"
    assert "a" in cache
    assert "b" not in cache


def test_put_existing_key_updates_without_eviction():
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.put("a", 10) is None
    assert cache.get("a") == 10
    assert len(cache) == 2


def test_capacity_one():
    cache = LRUCache(1)
    cache.put("a", 1)
    assert cache.put("b", 2) == "a"
    assert len(cache) == 1


def test_rejects_zero_capacity():
    with pytest.raises(ValueError):
        LRUCache(0)


def test_peek_does_not_change_order_or_counters():
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.peek("a") == 1
    assert cache.put("c", 3) == "a"
    assert cache.hits == 0 and cache.misses == 0


def test_hit_rate():
    cache = LRUCache(2)
    assert cache.hit_rate() == 0.0
    cache.put("a", 1)
    cache.get("a")
    cache.get("b")
    cache.get("a")
    assert cache.hit_rate() == 2 / 3


def test_resize_evicts_oldest_first():
    cache = LRUCache(3)
    for key in "abc":
        cache.put(key, key)
    assert cache.resize(1) == ["a", "b"]
    assert len(cache) == 1


def test_resize_rejects_zero():
    with pytest.raises(ValueError):
        LRUCache(2).resize(0)


def test_cached_calls_counts_misses():
    assert cached_calls({}, [1, 2, 1, 3, 1, 2], 2) == 4
    assert cached_calls({}, [1, 1, 1], 1) == 1
