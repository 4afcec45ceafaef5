"""A bounded least-recently-used map: the one shape of every in-memory cache of a container, so
that none of them grows with what clients send (random key ids, request ids, refused keys)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most `max_size` entries; a new one pushes out the one used longest ago. None is no value
    (`get` and `pop` answer it for a missing entry). Not locked: an owner shared by threads locks it."""

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"an LRU holds at least one entry, not {max_size}")
        self.max_size = max_size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The entry (now the most recently used), or None."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> V | None:
        """The entry, removed; None when there was none."""
        return self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries
