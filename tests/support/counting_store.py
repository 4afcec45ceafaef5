"""A store that counts its key reads: what the key cache saves."""

from __future__ import annotations

from typing import Any


class CountingStore:
    """The real store, counting key reads (the cache's whole point is to save them)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def get_key(self, key_id: str) -> Any:
        self.reads += 1
        return self.store.get_key(key_id)
