"""The bounded LRU every in-memory cache of a container is made of: it never holds more than its
size, and what was used last stays longest."""

from __future__ import annotations

import pytest

from chatgw.lru import LRU


def test_a_full_cache_drops_the_entry_used_longest_ago() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent: "b" goes first
    cache.put("c", 3)
    assert len(cache) == 2 and "b" not in cache
    assert cache.get("a") == 1 and cache.get("c") == 3 and cache.get("b") is None


def test_put_again_refreshes_and_pop_removes() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)
    cache.put("c", 3)
    assert cache.get("a") == 10 and "b" not in cache
    assert cache.pop("a") == 10 and cache.pop("a") is None and len(cache) == 1
    cache.clear()
    assert len(cache) == 0


def test_a_flood_of_new_keys_keeps_the_size() -> None:
    cache: LRU[int, int] = LRU(100)
    for i in range(10_000):
        cache.put(i, i)
    assert len(cache) == 100 and cache.get(9_999) == 9_999 and cache.get(0) is None


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        LRU(0)
