"""Hot keys on DynamoDB: a key's counters spread over N shard items (`chatgw keys create/update
--shards N`; docs/store.md "Hot keys").

Shard 0 is the month item `M#<month>` itself (so a key of one shard is exactly the layout of
before); shard s >= 1 is `M#<month>@<s>`, with its day item `D#<day>@<s>`. Each shard holds its
share of every limit: limit // N, plus one for the first limit % N shards, so the shares add up to
the limit exactly and no shard can admit past it: never over-admission. Admission starts at a
random shard and, when that one refuses, tries the others (in random order) before answering
429, so a request is refused only when no shard has room for it (the bound: docs/store.md). The
settlement goes to the shard that admitted (remembered in this container; a replay from another
process settles on shard 0, which keeps the sum over the shards exact).
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from ..keys import Limits
from ..limits import Admission

ORDER = ("concurrent", "requests", "tokens", "budget")
"""A refusal's names, first the ones a client can retry soonest."""
REMEMBERED = 100_000


def suffix(shard: int) -> str:
    return f"@{shard}" if shard else ""


def share(limit: int | None, shards: int, shard: int) -> int | None:
    if limit is None:
        return None
    return limit // shards + (1 if shard < limit % shards else 0)


def shard_limits(limits: Limits, shards: int, shard: int) -> Limits:
    return replace(
        limits,
        requests_per_minute=share(limits.requests_per_minute, shards, shard),
        tokens_per_minute=share(limits.tokens_per_minute, shards, shard),
        monthly_token_budget=share(limits.monthly_token_budget, shards, shard),
        max_concurrent=share(limits.max_concurrent, shards, shard),
        shards=None,
    )


AdmitItem = Callable[[str, str, Limits, datetime, int], Admission]


def admit_sharded(admit_item: AdmitItem, key_id: str, limits: Limits, now: datetime, reserve: int) -> Admission:
    shards = limits.shards or 1
    order = list(range(shards))
    random.shuffle(order)
    refusals: list[Admission] = []
    for shard in order:
        part = shard_limits(limits, shards, shard)
        admission = admit_item(key_id, suffix(shard), part, now, reserve)
        if admission.admitted:
            return replace(_scaled(admission, limits, part, shards), shard=shard)
        refusals.append(admission)
    refused = min((a.refused or "budget" for a in refusals), key=ORDER.index)
    return Admission(
        refused,
        requests_used=sum(a.requests_used for a in refusals),
        tokens_used=sum(a.tokens_used for a in refusals),
        month_tokens_used=sum(a.month_tokens_used for a in refusals),
        reserve=reserve,
        in_flight=sum(a.in_flight for a in refusals),
    )


def _scaled(admission: Admission, limits: Limits, part: Limits, shards: int) -> Admission:
    """What the key has used, estimated from one shard (what is left on it, times N): for the
    x-ratelimit-remaining-* headers, which a client reads as a hint."""

    def used(limit: int | None, share_: int | None, used_here: int) -> int:
        if limit is None or share_ is None:
            return used_here * shards
        return max(0, limit - max(0, share_ - used_here) * shards)

    return replace(
        admission,
        requests_used=used(limits.requests_per_minute, part.requests_per_minute, admission.requests_used),
        tokens_used=used(limits.tokens_per_minute, part.tokens_per_minute, admission.tokens_used),
        month_tokens_used=used(limits.monthly_token_budget, part.monthly_token_budget, admission.month_tokens_used),
        in_flight=used(limits.max_concurrent, part.max_concurrent, admission.in_flight),
    )


Slot = tuple[int, int]
"""Where a request was admitted: (shard, in-flight generation); generation -1: not counted in flight."""
NO_SLOT: Slot = (0, -1)


class ShardMemory:
    """The shard that admitted each request still running in this container, and the generation it
    was counted in flight in, for its settlement (which releases it there). A settlement in another
    process (`chatgw replay`) finds nothing: it settles on shard 0 and releases nothing (the lease
    drops that count: docs/store.md, "Requests in flight")."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self._size = size
        self._shards: OrderedDict[str, Slot] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, request_id: str, shard: int, generation: int = -1) -> None:
        if (shard, generation) == NO_SLOT:
            return
        with self._lock:
            self._shards[request_id] = (shard, generation)
            while len(self._shards) > self._size:
                self._shards.popitem(last=False)

    def take(self, request_id: str) -> Slot:
        with self._lock:
            return self._shards.pop(request_id, NO_SLOT)
