"""The container's memory of refusals: a key the store refused in the current minute window is
refused again here, without a store call, until that window ends. On DynamoDB a failed
conditional write is billed like a successful one, so a client hammering a refused key would
otherwise cost one write unit per attempt.

What is remembered is the store's own answer (the counters it returned), so the local 429 has the
same message, Retry-After and x-ratelimit-* headers as the first one. An entry is used only for
the same limits (an updated key record starts afresh) and, for a token or budget refusal, only for
a request that needs at least as many tokens as the refused one: a smaller request may still fit.
A refusal for too many requests in flight is repeated for one second only (its Retry-After): a slot
frees as soon as one of the key's requests ends, in any container.
"""

from __future__ import annotations

from datetime import datetime

from chatgw.access.keys import Limits
from chatgw.access.limits import RETRY_CONCURRENT_S, Admission, minute_window
from chatgw.lru import LRU

MAX_KEYS = 10_000


class RefusalCache:
    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._seen: LRU[str, tuple[int, int, Limits, int, Admission]] = LRU(max_keys)
        """key id -> (from, until: epoch s; the limits; the refused need; the store's answer)"""

    def get(self, key_id: str, limits: Limits, now: datetime, need: int = 0) -> Admission | None:
        """The refusal to repeat for this request, or None to ask the store."""
        entry = self._seen.get(key_id)
        if entry is None:
            return None
        start, until, seen_limits, seen_need, admission = entry
        if not start <= now.timestamp() < until or seen_limits != limits:
            self._seen.pop(key_id)
            return None
        if admission.refused in ("tokens", "budget") and need < seen_need:
            return None
        return admission

    def remember(self, key_id: str, limits: Limits, admission: Admission, now: datetime, need: int = 0) -> None:
        if admission.admitted:
            return
        if admission.refused == "concurrent":
            start = int(now.timestamp())
            until = start + RETRY_CONCURRENT_S
        else:
            start = minute_window(now)
            until = start + 60
        self._seen.put(key_id, (start, until, limits, need, admission))

    def __len__(self) -> int:
        return len(self._seen)
