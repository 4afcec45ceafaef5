"""The container's memory of key records, so that most requests cost no store read.

A record is kept `CHATGW_KEY_CACHE_SECONDS` (a changed or disabled key takes effect within that
time; docs/hardening.md), at most `KEY_CACHE_SIZE` of them. Key ids the store did not know are
remembered too, briefly: a flood of random well-formed keys costs one store read per id and
`UNKNOWN_KEY_SECONDS`, not one per request. Ids are random, so nobody presents a real one before
it exists: nothing valid is refused."""

from __future__ import annotations

from collections.abc import Callable

from chatgw.access.keys import KeyRecord
from chatgw.lru import LRU

KEY_CACHE_SIZE = 10_000
UNKNOWN_KEY_SECONDS = 5.0
UNKNOWN_KEY_CACHE_SIZE = 4_096


class UnknownKeys:
    """Key ids the store did not know, each for `UNKNOWN_KEY_SECONDS`."""

    def __init__(self, clock: Callable[[], float], size: int = UNKNOWN_KEY_CACHE_SIZE) -> None:
        self._clock = clock
        self._seen: LRU[str, float] = LRU(size)

    def seen(self, key_id: str) -> bool:
        at = self._seen.get(key_id)
        if at is None:
            return False
        if self._clock() - at < UNKNOWN_KEY_SECONDS:
            return True
        self._seen.pop(key_id)
        return False

    def add(self, key_id: str) -> None:
        self._seen.put(key_id, self._clock())

    def __len__(self) -> int:
        return len(self._seen)


class KeyCache:
    """Key records as the store last gave them, each for `seconds` (0: none is kept), and the
    unknown ids."""

    def __init__(self, clock: Callable[[], float], seconds: float, size: int = KEY_CACHE_SIZE) -> None:
        self._clock = clock
        self.seconds = seconds
        self._records: LRU[str, tuple[float, KeyRecord]] = LRU(size)
        self.unknown = UnknownKeys(clock)

    def get(self, key_id: str) -> KeyRecord | None:
        """The cached record, while it is younger than `seconds`."""
        hit = self._records.get(key_id)
        return hit[1] if hit is not None and self._clock() - hit[0] < self.seconds else None

    def age(self, key_id: str) -> float:
        """How long ago the record was read from the store (0 when none is cached)."""
        hit = self._records.get(key_id)
        return self._clock() - hit[0] if hit is not None else 0.0

    def put(self, key_id: str, record: KeyRecord | None) -> None:
        """What the store just answered for the id: a record (kept when the cache time allows), or
        None (an unknown id)."""
        if record is None:
            self.unknown.add(key_id)
        if record is not None and self.seconds > 0:
            self._records.put(key_id, (self._clock(), record))
        else:
            self._records.pop(key_id)

    def clear(self) -> None:
        """Forget everything, the unknown ids too."""
        self._records.clear()
        self.unknown = UnknownKeys(self._clock)
