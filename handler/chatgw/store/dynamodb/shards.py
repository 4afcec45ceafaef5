"""Hot keys on DynamoDB: a key's counters spread over N shard items (`chatgw keys create/update
--shards N`; docs/store.md "Hot keys" and "Changing N").

A key's **layout** is its shard count N and its shard epoch e (`Limits.shards`,
`Limits.shard_epoch`; e is bumped by every change of N: store/dynamodb/reshard.py). Month items:
epoch 0 keeps the names of before, shard 0 `M#<month>` and shard s >= 1 `M#<month>@<s>` (so a key of
one shard is exactly the layout of before); an epoch e > 0 names every shard `M#<month>@<s>~<e>`, so
that a new layout never shares an item with an older one. Day items carry no limit state: shard s
writes `D#<day>` (s = 0) or `D#<day>@<s>`, whatever the epoch.

Each shard holds its share of every limit: limit // N, plus one for the first limit % N shards, so
the shares add up to the limit exactly and no shard can admit past it: never over-admission.
Admission starts at a random shard and, when that one refuses, tries the others (in random order)
before answering 429, so a request is refused only when no shard has room for it (the bound:
docs/store.md). The settlement goes to the item that admitted (remembered in this container with
its epoch; a replay from another process settles on `M#<month>`, which keeps the sums exact).

A change of N seals the old layout's items (`sealed` = the new epoch, `next_shards` = the new N): an
admission that meets a sealed item re-admits on the layout it names, at once (no wait for the key
cache), and only on items that exist, i.e. that the change prepared with their carried totals.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from chatgw.access.keys import Limits
from chatgw.access.limits import Admission, month_of
from chatgw.errors import StoreUnavailable
from chatgw.lru import LRU
from chatgw.store import deadline
from chatgw.store.dynamodb.items import int_of

ORDER = ("concurrent", "requests", "tokens", "budget")
"""A refusal's names, first the ones a client can retry soonest."""
REMEMBERED = 100_000
SEALED, NEXT_SHARDS, NEXT_LIMITS = "sealed", "next_shards", "next_limits"
"""Attributes of a sealed month item: the epoch, the shard count and the limits of the layout that
replaced it."""
COUNTED = ("requests_per_minute", "tokens_per_minute", "monthly_token_budget", "max_concurrent")
"""The limits a month item counts against (a sealed item names the new ones: `NEXT_LIMITS`)."""
SEAL_HOPS = 4
"""Seals followed in one admission (each change of N within the key cache delay is one hop)."""
READY_WAITS = (0.02, 0.04, 0.08, 0.16, 0.32, 0.32, 0.32, 0.32)
"""Pauses (s) while a change of N prepares the new items (between its seals and its puts: a few
round trips); after the last one, or when the next would pass the request's deadline
(store/deadline.py), the request is a 503 `store_unavailable`."""
CHANGING = "The key store is unavailable (the key's shard layout is changing)."


def suffix(shard: int) -> str:
    """The day item's suffix of a shard (any epoch); the month item's of epoch 0."""
    return f"@{shard}" if shard else ""


def month_suffix(shard: int, epoch: int) -> str:
    return suffix(shard) if epoch == 0 else f"@{shard}~{epoch}"


@dataclass(frozen=True, slots=True)
class Layout:
    shards: int = 1
    epoch: int = 0
    limits: Mapping[str, int | None] | None = field(default=None, compare=False, hash=False)
    """The counted limits (`COUNTED`) the change of N set, from a sealed item; None: the record's."""

    @staticmethod
    def of(limits: Limits) -> Layout:
        return Layout(max(1, limits.shards or 1), limits.shard_epoch or 0)

    def month(self, shard: int) -> str:
        return month_suffix(shard, self.epoch)

    def applied(self, limits: Limits) -> Limits:
        """`limits` (the container's record) with the layout's counted limits, if it names them."""
        if self.limits is None:
            return limits
        return replace(limits, shards=self.shards, shard_epoch=self.epoch, **{k: self.limits.get(k) for k in COUNTED})


def limits_map(limits: Limits) -> dict[str, Any]:
    """The counted limits as a DynamoDB map (absent: no limit), for a sealed item's `NEXT_LIMITS`."""
    return {"M": {k: {"N": str(v)} for k in COUNTED if (v := getattr(limits, k)) is not None}}


def _limits_of(item: Mapping[str, Any]) -> dict[str, int | None] | None:
    value = item.get(NEXT_LIMITS)
    if not value or "M" not in value:
        return None
    return {k: int_of(value["M"], k) if k in value["M"] else None for k in COUNTED}


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a request was admitted: the suffixes of its month item and of its day item, and the
    in-flight generation it was counted in there (-1: not counted; store/dynamodb/inflight.py). A
    settlement in another process (`chatgw replay`) finds HOME: it settles on `M#<month>` and
    releases nothing (the lease drops that count: docs/store.md, "Requests in flight")."""

    month: str = ""
    day: str = ""
    generation: int = -1


HOME = Placement()


def share(limit: int | None, shards: int, shard: int) -> int | None:
    if limit is None:
        return None
    return limit // shards + (1 if shard < limit % shards else 0)


def spread(total: int, limit: int | None, shards: int) -> list[int]:
    """`total` (a carried count) over `shards` items whose limit shares are share(limit, ...): the
    parts add up to `total`, and each is at most its share when total <= limit (the room left,
    limit - total, is itself shared as the limit is). Past the limit every share is full and the
    excess sits on shard 0."""
    if limit is None:
        return [share(total, shards, s) or 0 for s in range(shards)]
    room = max(0, limit - total)
    parts = [(share(limit, shards, s) or 0) - (share(room, shards, s) or 0) for s in range(shards)]
    parts[0] += max(0, total - limit)
    return parts


def shard_limits(limits: Limits, shards: int, shard: int) -> Limits:
    return replace(
        limits,
        requests_per_minute=share(limits.requests_per_minute, shards, shard),
        tokens_per_minute=share(limits.tokens_per_minute, shards, shard),
        monthly_token_budget=share(limits.monthly_token_budget, shards, shard),
        max_concurrent=share(limits.max_concurrent, shards, shard),
        shards=None,
        shard_epoch=None,
    )


class ShardSealed(Exception):
    """The month item is sealed: a change of N replaced its layout by `layout`."""

    def __init__(self, layout: Layout) -> None:
        super().__init__(f"sealed for epoch {layout.epoch}")
        self.layout = layout


class ShardNotReady(Exception):
    """A sealed layout's new item does not exist yet: the change of N is preparing it."""


def check_layout(old: Mapping[str, Any], must_exist: bool) -> None:
    """After a refused admission: `ShardSealed` if the item (ALL_OLD) is sealed, `ShardNotReady` if
    it had to exist and does not."""
    if SEALED in old:
        raise ShardSealed(Layout(max(1, int_of(old, NEXT_SHARDS, 1)), int_of(old, SEALED), _limits_of(old)))
    if must_exist and not old:
        raise ShardNotReady


AdmitItem = Callable[[str, str, Limits, datetime, int, bool], Admission]
"""(key_id, month suffix, the item's limits, now, reserve, must_exist) -> Admission"""


class Layouts:
    """One container's view of its keys' layouts: the newer layout a seal pointed to (until the key
    record catches up, in the same month), and where each running request was admitted."""

    def __init__(
        self,
        size: int = REMEMBERED,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sleep = sleep
        self._clock = clock
        self._placements: LRU[str, Placement] = LRU(size)
        self._newer: LRU[str, tuple[str, Layout]] = LRU(size)
        self._lock = threading.Lock()

    def admit(
        self, admit_item: AdmitItem, key_id: str, limits: Limits, now: datetime, reserve: int, request_id: str | None
    ) -> Admission:
        layout, redirected = self._layout(key_id, limits, now)
        hops, waits = 0, iter(READY_WAITS)
        while True:
            try:
                counted = layout.applied(limits) if redirected else limits
                admission, placement = _admit_over(admit_item, key_id, counted, layout, now, reserve, redirected)
            except ShardSealed as sealed:
                hops += 1
                if hops > SEAL_HOPS or sealed.layout.epoch <= layout.epoch:
                    raise StoreUnavailable(CHANGING) from None
                layout, redirected = sealed.layout, True
                self._point(key_id, month_of(now), layout)
                continue
            except ShardNotReady:
                pause = next(waits, None)
                at = deadline.current()
                if pause is None or (at is not None and self._clock() + pause >= at):
                    raise StoreUnavailable(CHANGING) from None
                self._sleep(pause)
                continue
            if admission.admitted and request_id is not None and placement != HOME:
                self._remember(request_id, placement)
            return admission

    def _layout(self, key_id: str, limits: Limits, now: datetime) -> tuple[Layout, bool]:
        own = Layout.of(limits)
        with self._lock:
            newer = self._newer.get(key_id)
            if newer is None:
                return own, False
            month, layout = newer
            if layout.epoch > own.epoch and month == month_of(now):
                return layout, True
            self._newer.pop(key_id)  # the key record caught up (or a new month: its record rules)
        return own, False

    def _point(self, key_id: str, month: str, layout: Layout) -> None:
        with self._lock:
            self._newer.put(key_id, (month, layout))

    def _remember(self, request_id: str, placement: Placement) -> None:
        with self._lock:
            self._placements.put(request_id, placement)

    def take(self, request_id: str) -> Placement:
        """The items a request's settlement goes to (HOME when this container did not admit it)."""
        with self._lock:
            placement = self._placements.pop(request_id)
        return HOME if placement is None else placement


def _admit_over(
    admit_item: AdmitItem,
    key_id: str,
    limits: Limits,
    layout: Layout,
    now: datetime,
    reserve: int,
    must_exist: bool,
) -> tuple[Admission, Placement]:
    shards = layout.shards
    if shards == 1:
        admission = admit_item(key_id, layout.month(0), limits, now, reserve, must_exist)
        return admission, Placement(layout.month(0), "", admission.generation)
    order = list(range(shards))
    random.shuffle(order)
    refusals: list[Admission] = []
    for shard in order:
        part = shard_limits(limits, shards, shard)
        admission = admit_item(key_id, layout.month(shard), part, now, reserve, must_exist)
        if admission.admitted:
            scaled = replace(_scaled(admission, limits, part, shards), shard=shard)
            return scaled, Placement(layout.month(shard), suffix(shard), admission.generation)
        refusals.append(admission)
    refused = min((a.refused or "budget" for a in refusals), key=ORDER.index)
    answer = Admission(
        refused,
        requests_used=sum(a.requests_used for a in refusals),
        tokens_used=sum(a.tokens_used for a in refusals),
        month_tokens_used=sum(a.month_tokens_used for a in refusals),
        reserve=reserve,
        in_flight=sum(a.in_flight for a in refusals),
    )
    return answer, HOME


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
