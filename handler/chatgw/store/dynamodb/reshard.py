"""Changing a key's shard count N on DynamoDB, exactly (`chatgw keys update --shards N`; docs/store.md
"Changing N"). Admin code, but for `forward_release` (a settlement's).

From layout (N, e) to (N2, e + 1), for the month of the change and the months either side of it (a
container still on the old key record admits in the next month too if the change falls within its
key cache delay of the month's end; and the clock of the machine running the change may be off by
minutes, across a month's boundary, from the gateways'):

    (a) seal    UpdateItem every old month item  SET sealed = e + 1, next_shards = N2, next_limits
                (the new counted limits), ReturnValues ALL_NEW (created if missing); from then on no
                admission succeeds on it (the admission's condition has `attribute_not_exists(sealed)`),
                and its committed totals only go down (settlements replace reservations by actual tokens).
    (b) read    the ALL_NEW answers of (a): the month's committed tokens C (sum of total_tokens) and
                the live minute window W with its requests and tokens (items whose `win` is the latest).
    (c) carry   PutItem every new month item IF attribute_not_exists(pk): C, and W's counts, spread
                over the new shares so that no new item starts above its share (dynamodb_shards.spread);
                no `requests`/`prompt_tokens`/... on it, so reports do not count the carried tokens.
    (d) save    the key record with N2 and e + 1.

New items are admitted on only after (c): a container on the new record exists only after (d), and one
that meets a sealed item re-admits on the new layout with `attribute_exists(pk)` (it waits for (c)).
Every old item is sealed before any new one exists, so the month's admissions are those on the old
items before their seal (counted in C) plus those on the new items (at most limit - C): never more than
the limit. A change run again after a failure finishes the same change (the seals and puts are
idempotent; carries only shrink between runs, so each part put later is at most the part put before).

Write cost, once per change: N (seal) + N2 (carry) per month, three months, + 1 (key record): 3N + 3N2 + 1
WRU (each item under 1 KB); then each container's first admission on a sealed item fails once (1 WRU)
before it remembers the new layout.

Requests in flight (`max_concurrent`, store/dynamodb/inflight.py) are carried like the minute's
counts; a request that was in flight at the seal settles on its old item and, since its count was
carried, releases it on the new layout too (`forward_release`, on the settlement path: 1 WRU more,
once per such request).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from chatgw.access.keys import KeyRecord, Limits
from chatgw.access.limits import month_of
from chatgw.errors import StoreUnavailable
from chatgw.store.base import UsageEvent
from chatgw.store.dynamodb import inflight
from chatgw.store.dynamodb.call import Refused
from chatgw.store.dynamodb.items import attr_n, attr_s, int_of, pk_of
from chatgw.store.dynamodb.shards import NEXT_LIMITS, NEXT_SHARDS, SEAL_HOPS, SEALED, Layout, limits_map, spread


class ReshardConflict(Exception):
    """Another change of the key's shard count is half done, to a different N."""


Call = Callable[..., Any]


def months_of_change(now: datetime) -> tuple[str, str, str]:
    """The month before the change's, the change's, and the next one."""
    now = now.astimezone(UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    first_of_next = (first + timedelta(days=32)).replace(day=1)
    return month_of(first - timedelta(days=1)), month_of(now), month_of(first_of_next)


def reshard(
    call: Call,
    client: Any,
    table: str,
    save_key: Callable[[KeyRecord], None],
    record: KeyRecord,
    updated: KeyRecord,
    now: datetime,
) -> KeyRecord:
    """Save `updated` (whose `limits.shards` may differ from `record`'s) with the layout change done
    as (a)-(d) above; returns the record saved (with its `shard_epoch`)."""
    old = Layout.of(record.limits)
    new = Layout(max(1, updated.limits.shards or 1), old.epoch + 1)
    if new.shards == old.shards:
        saved = replace(updated, limits=replace(updated.limits, shard_epoch=record.limits.shard_epoch))
        save_key(saved)
        return saved
    for month in months_of_change(now):
        sealed = [
            _seal(call, client, table, record.key_id, month, old.month(s), new, updated.limits)
            for s in range(old.shards)
        ]
        _carry(call, client, table, record.key_id, month, new, updated.limits, sealed)
    saved = replace(updated, limits=replace(updated.limits, shard_epoch=new.epoch))
    save_key(saved)
    return saved


def _seal(
    call: Call, client: Any, table: str, key_id: str, month: str, tail: str, new: Layout, limits: Limits | None = None
) -> dict[str, Any]:
    """Seal one old month item for the layout `new` (and its counted `limits`, which a container still
    on the old record admits with on the new layout)."""
    values: dict[str, Any] = {":e": attr_n(new.epoch), ":n": attr_n(new.shards)}
    update = f"SET {SEALED} = :e, {NEXT_SHARDS} = :n"
    if limits is not None:
        values[":l"] = limits_map(limits)
        update += f", {NEXT_LIMITS} = :l"
    try:
        resp = call(
            client.update_item,
            ambiguous_ok=True,
            TableName=table,
            Key={"pk": pk_of(key_id), "sk": attr_s(f"M#{month}{tail}")},
            UpdateExpression=update,
            ConditionExpression=f"attribute_not_exists({SEALED}) OR ({SEALED} = :e AND {NEXT_SHARDS} = :n)",
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except Refused as refused:
        pending = int_of(refused.item, NEXT_SHARDS)
        raise ReshardConflict(
            f"a change of this key to {pending} shards is half done: run `keys update --shards {pending}` to finish it"
        ) from None
    return dict(resp.get("Attributes", {}))


def carried(sealed: Sequence[Mapping[str, Any]]) -> tuple[int, int | None, int, int]:
    """The sealed items' committed tokens, and their live window with its requests and tokens."""
    committed = sum(int_of(item, "total_tokens") for item in sealed)
    windows = [int_of(item, "win", -1) for item in sealed]
    live = max(windows, default=-1)
    if live < 0:
        return committed, None, 0, 0
    requests = sum(int_of(i, "wreq") for i, w in zip(sealed, windows, strict=True) if w == live)
    tokens = sum(int_of(i, "wtok") for i, w in zip(sealed, windows, strict=True) if w == live)
    return committed, live, requests, tokens


def in_flight_carried(sealed: Sequence[Mapping[str, Any]]) -> tuple[int | None, int, int]:
    """The sealed items' requests in flight (store/dynamodb/inflight.py): the latest generation G
    among them, the requests counted in G and those counted in G - 1 (an item one generation behind
    holds G - 1's in its `fc`; what is older the lease has dropped)."""
    generations = [int_of(item, "fg", -1) if "fg" in item else -1 for item in sealed]
    live = max(generations, default=-1)
    if live < 0:
        return None, 0, 0
    current = sum(int_of(i, "fc") for i, g in zip(sealed, generations, strict=True) if g == live)
    previous = sum(int_of(i, "fp") for i, g in zip(sealed, generations, strict=True) if g == live)
    previous += sum(int_of(i, "fc") for i, g in zip(sealed, generations, strict=True) if g == live - 1)
    return live, current, previous


def _in_flight_items(sealed: Sequence[Mapping[str, Any]], limit: int | None, shards: int) -> list[dict[str, Any]]:
    """Per new item: `fg`, `fc`, `fp`, `fl` carrying the sealed items' requests in flight, `fl`
    within the item's share of max_concurrent, generation G's count kept in `fc` (so that the
    next rotation does not drop a request that may still run), G - 1's in `fp`."""
    generation, current, previous = in_flight_carried(sealed)
    if generation is None:
        return [{} for _ in range(shards)]
    parts = spread(current + previous, limit, shards)
    items: list[dict[str, Any]] = []
    left = current
    for flying in parts:
        fc = min(flying, left)
        left -= fc
        items.append({"fg": attr_n(generation), "fc": attr_n(fc), "fp": attr_n(flying - fc), "fl": attr_n(flying)})
    return items


def _carry(
    call: Call,
    client: Any,
    table: str,
    key_id: str,
    month: str,
    new: Layout,
    limits: Limits,
    sealed: Sequence[Mapping[str, Any]],
) -> None:
    committed, window, requests, tokens = carried(sealed)
    months = spread(committed, limits.monthly_token_budget, new.shards)
    wreqs = spread(requests, limits.requests_per_minute, new.shards)
    wtoks = spread(tokens, limits.tokens_per_minute, new.shards)
    flights = _in_flight_items(sealed, limits.max_concurrent, new.shards)
    for shard in range(new.shards):
        item: dict[str, Any] = {
            "pk": pk_of(key_id),
            "sk": attr_s(f"M#{month}{new.month(shard)}"),
            "key_id": attr_s(key_id),
            "period": attr_s(month),
            "total_tokens": attr_n(months[shard]),
            "carried_epoch": attr_n(new.epoch - 1),
        }
        if window is not None:
            item.update({"win": attr_n(window), "wreq": attr_n(wreqs[shard]), "wtok": attr_n(wtoks[shard])})
        item.update(flights[shard])
        try:
            call(
                client.put_item,
                ambiguous_ok=True,
                TableName=table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )
        except Refused:
            continue  # put by an earlier run of this change: its carry is at least this one's


# the settlement of a request in flight across a change -------------------------------------------


def forward_release(
    call: Call, client: Any, table: str, event: UsageEvent, sealed: Mapping[str, Any], generation: int, hops: int = 0
) -> None:
    """`event`'s request was released (in flight, `generation`) on an item that a change of N sealed
    (`sealed`, the item after that release): the change carried its count to the new layout, so release
    one count of that generation there too, on the first new item that holds one (from a start set by
    the request id: the sum over the items stays exact, whichever holds it). None holds one (the lease
    dropped it, or the change has not put its items yet) or the store fails: nothing more, the lease
    drops the carried count (a wrong refusal at worst, never an over-admission)."""
    layout = Layout(max(1, int_of(sealed, NEXT_SHARDS, 1)), int_of(sealed, SEALED))
    month = month_of(event.at)
    start = zlib.crc32(event.request_id.encode()) % layout.shards
    try:
        for i in range(layout.shards):
            key = {"pk": pk_of(event.key_id), "sk": attr_s(f"M#{month}{layout.month((start + i) % layout.shards)}")}
            after = _release_on(call, client, table, key, generation)
            if after is None:
                continue
            if SEALED in after and hops < SEAL_HOPS:  # sealed again since: carried again
                forward_release(call, client, table, event, after, generation, hops + 1)
            return
    except StoreUnavailable:
        return


def _release_on(call: Call, client: Any, table: str, key: Mapping[str, Any], generation: int) -> dict[str, Any] | None:
    where: inflight.Release | None = "fc"
    for _ in range(2):
        if where is None:
            return None
        update = inflight.Update()
        inflight.release(update, where, generation)
        update.conditions.append(f"{where} > :fz")
        update.values[":fz"] = attr_n(0)
        try:
            resp = call(
                client.update_item,
                ambiguous_ok=False,
                TableName=table,
                Key=key,
                UpdateExpression=update.expression(),
                ConditionExpression=update.condition(),
                ExpressionAttributeValues=update.values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Refused as refused:
            where = inflight.release_of(refused.item, generation)
            if where is not None and int_of(refused.item, where) <= 0:
                return None
            continue
        return dict(resp.get("Attributes", {}))
    return None
