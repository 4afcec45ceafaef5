"""Settlement on DynamoDB without a transaction (docs/store.md, "Admission, precisely").

    W1  PutItem     EV#<request_id>  IF attribute_not_exists(pk)        the event: the exactly-once gate
    then, only if W1 wrote a new event, at once (two threads):
    W2  UpdateItem  M#<month>        settle the reservation (total_tokens, and wtok while the admission's
                                     minute is live) + the month totals (all models) + release the request
                                     in flight (store/dynamodb/inflight.py) if it was counted
    W3  UpdateItem  D#<day>          the day totals (all models) + per served model, as attributes
                                     `<model>#n|p|c|cr|cw|r|$` of the same item

A replayed or retried settlement finds its event in place and writes nothing more. W2 and W3 are
sent again only on answers DynamoDB guarantees were not applied (throttling, conflicts); any other
failure raises `SettlementPending` naming the parts not (or not surely) applied, and the service's
`usage_event` log line carries them (`pending`), so that `chatgw replay` applies exactly those parts,
each behind a one-time mark on the event item: never counted twice.
"""

from __future__ import annotations

import contextvars
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import Any

from chatgw.access.limits import day_of, minute_window, month_of
from chatgw.errors import StoreUnavailable
from chatgw.store.base import UsageEvent
from chatgw.store.dynamodb import inflight
from chatgw.store.dynamodb.call import Refused, Unsettled, maybe_applied
from chatgw.store.dynamodb.items import attr_n, attr_s, int_of, money, pk_of, to_item
from chatgw.store.dynamodb.reshard import forward_release
from chatgw.store.dynamodb.shards import HOME, SEALED, Placement

PARTS = ("month", "day")
REPLAY = "replay"
"""The nonce (`w`) of an event item a replay put: the gateway's own settlement applied nothing."""
MODEL_FIELDS = {
    "n": "requests",
    "p": "prompt_tokens",
    "c": "completion_tokens",
    "cr": "cached_tokens",
    "cw": "cache_write_tokens",
    "r": "reasoning_tokens",
    "$": "cost",
}
"""Per-model attributes of a day item (`<model>#<short>`) and the row field each one sums into."""


class SettlementPending(StoreUnavailable):
    """The event is stored, but some of its aggregate writes are not: `event.pending` names them."""

    def __init__(self, event: UsageEvent, pending: tuple[str, ...]) -> None:
        super().__init__(f"The usage store did not take every write of request {event.request_id}.")
        self.event = replace(event, pending=pending)


class SettlementUnsure(SettlementPending):
    """Besides `pending`, an aggregate write (`unsure`) may or may not have been applied (a timeout,
    a lost connection, a 5xx): it is left out of `pending`, so that a replay never applies it twice."""

    def __init__(self, event: UsageEvent, pending: tuple[str, ...], unsure: tuple[str, ...]) -> None:
        super().__init__(event, pending)
        self.unsure = unsure


def event_put(table: str, event: UsageEvent, ttl: timedelta, nonce: str) -> dict[str, Any]:
    """The event, tagged `w` with this settlement's nonce: a retry of this very put that finds the
    item tells its own (lost-answer) write from an earlier settlement of the request."""
    logged = event.to_log()
    logged.pop("cost")
    logged.pop("pending", None)
    item = {"pk": pk_of(event.key_id), "sk": attr_s(f"EV#{event.request_id}"), **to_item(logged)}
    if event.cost is not None:
        item["cost"] = {"N": money(event.cost)}
    item["expires_at"] = attr_n(int((event.at + ttl).timestamp()))
    item["w"] = attr_s(nonce)
    return {
        "TableName": table,
        "Item": item,
        "ConditionExpression": "attribute_not_exists(pk)",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def _totals(event: UsageEvent, values: dict[str, Any]) -> str:
    values.update(
        {
            ":one": attr_n(1),
            ":p": attr_n(event.prompt_tokens),
            ":c": attr_n(event.completion_tokens),
            ":ct": attr_n(event.cached_tokens),
            ":cw": attr_n(event.cache_write_tokens),
            ":rt": attr_n(event.reasoning_tokens),
        }
    )
    adds = "requests :one, prompt_tokens :p, completion_tokens :c, cached_tokens :ct, cache_write_tokens :cw"
    adds += ", reasoning_tokens :rt"
    if event.cost is not None:
        values[":cost"] = {"N": money(event.cost)}
        adds += ", cost :cost"
    return adds


def month_update(
    table: str,
    event: UsageEvent,
    *,
    with_window: bool,
    shard: str = "",
    release: inflight.Release | None = None,
    generation: int = -1,
) -> dict[str, Any]:
    month = month_of(event.at)
    update = inflight.Update(
        values={
            ":kid": attr_s(event.key_id),
            ":period": attr_s(month),
            ":t": attr_n(event.total_tokens - event.reserved_tokens),
        }
    )
    update.sets += ["key_id = :kid", "period = :period"]
    update.adds += [_totals(event, update.values), "total_tokens :t"]
    key = {"pk": pk_of(event.key_id), "sk": attr_s(f"M#{month}{shard}")}
    params: dict[str, Any] = {"TableName": table, "Key": key}
    if with_window:
        update.adds.append("wtok :t")
        update.conditions.append("(attribute_not_exists(win) OR win = :w)")
        update.values[":w"] = attr_n(minute_window(event.at))
    if release is not None:
        inflight.release(update, release, generation)
    if update.conditions:
        params["ConditionExpression"] = update.condition()
        params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return {**params, "UpdateExpression": update.expression(), "ExpressionAttributeValues": update.values}


def day_update(table: str, event: UsageEvent, shard: str = "") -> dict[str, Any]:
    day = day_of(event.at)
    values: dict[str, Any] = {":kid": attr_s(event.key_id), ":period": attr_s(day)}
    adds = _totals(event, values)
    names: dict[str, str] = {}
    model = event.ledger_model
    for i, (short, field) in enumerate(MODEL_FIELDS.items()):
        if field == "cost" and event.cost is None:
            continue
        names[f"#m{i}"] = f"{model}#{short}"
        source = {"requests": ":one", "prompt_tokens": ":p", "completion_tokens": ":c", "cached_tokens": ":ct"}
        source |= {"cache_write_tokens": ":cw", "reasoning_tokens": ":rt", "cost": ":cost"}
        adds += f", #m{i} {source[field]}"
    return {
        "TableName": table,
        "Key": {"pk": pk_of(event.key_id), "sk": attr_s(f"D#{day}{shard}")},
        "UpdateExpression": f"SET key_id = :kid, period = :period ADD {adds}",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


Call = Callable[..., Any]


class Settler:
    """Runs one settlement with the store's `call(fn, ambiguous_ok=..., **params)`."""

    def __init__(
        self, client: Any, table: str, ttl: timedelta, call: Call, shard_of: Callable[[str], Placement]
    ) -> None:
        self.client = client
        self.shard_of = shard_of
        self.table = table
        self.ttl = ttl
        self.call = call
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="chatgw-settle")

    def settle(self, event: UsageEvent) -> bool:
        if event.pending:
            return self.replay(event)
        nonce = secrets.token_hex(6)
        try:
            self.call(self.client.put_item, ambiguous_ok=True, **event_put(self.table, event, self.ttl, nonce))
        except Refused as refused:
            if refused.item.get("w") != {"S": nonce}:
                return False  # recorded before: a replay, or a second settlement of the request
            # else: our own put landed and its answer was lost; the retry found it
        except StoreUnavailable as exc:  # the last try's answer lost: replay must not take it as done
            if maybe_applied(exc):
                raise SettlementPending(event, PARTS) from exc
            raise
        self._parts(event, PARTS, self.shard_of(event.request_id))
        return True

    def _parts(self, event: UsageEvent, parts: tuple[str, ...], shard: Placement = HOME) -> None:
        """W2 and W3 at once, on the items that admitted; `SettlementPending` with those that failed."""
        futures: dict[str, Future[None]] = {}
        for part in parts[1:]:
            # in this call's context, so that tracing and metrics see the write as this request's
            futures[part] = self._pool.submit(contextvars.copy_context().run, self._part, event, part, shard)
        failed: list[str] = []
        unsure: list[str] = []
        for part in parts[:1]:
            try:
                self._part(event, part, shard)
            except StoreUnavailable as exc:
                (unsure if isinstance(exc, Unsettled) else failed).append(part)
        for part, future in futures.items():
            try:
                future.result()
            except StoreUnavailable as exc:
                (unsure if isinstance(exc, Unsettled) else failed).append(part)
        if unsure:
            raise SettlementUnsure(event, tuple(failed), tuple(unsure))
        if failed:
            raise SettlementPending(event, tuple(failed))

    def _part(self, event: UsageEvent, part: str, shard: Placement) -> None:
        tail = shard.month
        if part == "day":
            self.call(self.client.update_item, ambiguous_ok=False, **day_update(self.table, event, shard.day))
            return
        generation, with_window = shard.generation, True
        release: inflight.Release | None = "fc" if generation >= 0 else None
        for _ in range(3):
            params = month_update(
                self.table, event, with_window=with_window, shard=tail, release=release, generation=generation
            )
            if release is not None:  # to see whether a change of N sealed the item meanwhile
                params["ReturnValues"] = "ALL_NEW"
            try:
                answer = self.call(self.client.update_item, ambiguous_ok=False, **params)
            except Refused as refused:
                # The admission's minute is no longer live (settle the month alone), or the in-flight
                # generation moved on (release from `fp`, or not at all): the old item says which.
                old = refused.item
                with_window = "win" not in old or int_of(old, "win") == minute_window(event.at)
                release = inflight.release_of(old, generation) if generation >= 0 else None
                continue
            if release is not None and SEALED in answer.get("Attributes", {}):
                # counted in flight when the item was sealed: the count was carried, release it there too
                forward_release(self.call, self.client, self.table, event, answer["Attributes"], generation)
            return
        # still refused (the item changes under us): the month alone, with no condition; an
        # unreleased count is dropped by the lease
        params = month_update(self.table, event, with_window=False, shard=tail)
        self.call(self.client.update_item, ambiguous_ok=False, **params)

    def replay(self, event: UsageEvent) -> bool:
        """Apply the parts a `usage_event` line names as pending, each once: a mark on the event
        item first (a second replay finds it and skips), then the write. The event is put first if
        it is missing; a replay that put it (now or on an earlier try: its `w` says "replay") knows
        the gateway applied nothing, so every part is pending, whatever the line names.

        A part whose write is known not to have been applied loses its mark again before the
        failure propagates, so that the next replay of the same line (a retried batch) applies it;
        one that may have been applied keeps its mark: at most once, never twice."""
        try:
            self.call(self.client.put_item, ambiguous_ok=True, **event_put(self.table, event, self.ttl, REPLAY))
            put_here = True
        except Refused as refused:  # stored before: by the gateway's settlement, or by a replay
            put_here = refused.item.get("w") == {"S": REPLAY}
        done = False
        for part in PARTS if put_here else tuple(p for p in event.pending if p in PARTS):
            if not self._mark(event, part, secrets.token_hex(6)):
                continue
            try:
                self._parts(event, (part,))
            except SettlementUnsure:
                raise
            except SettlementPending:
                self._unmark(event, part)
                raise
            done = True
        return done

    def _mark(self, event: UsageEvent, part: str, nonce: str) -> bool:
        """Take the part's one-time mark; False if a replay took it before (a retry of this very
        write whose answer was lost finds its own nonce and goes on)."""
        try:
            self.call(
                self.client.update_item,
                ambiguous_ok=True,
                **self._mark_key(event, part),
                UpdateExpression="SET #mark = :nonce",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#mark)",
                ExpressionAttributeValues={":nonce": attr_s(nonce)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Refused as refused:
            return refused.item.get(f"replayed_{part}") == {"S": nonce}
        return True

    def _unmark(self, event: UsageEvent, part: str) -> None:
        self.call(
            self.client.update_item,
            ambiguous_ok=True,
            **self._mark_key(event, part),
            UpdateExpression="REMOVE #mark",
        )

    def _mark_key(self, event: UsageEvent, part: str) -> dict[str, Any]:
        return {
            "TableName": self.table,
            "Key": {"pk": pk_of(event.key_id), "sk": attr_s(f"EV#{event.request_id}")},
            "ExpressionAttributeNames": {"#mark": f"replayed_{part}"},
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def model_rows(item: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-model sums a day item carries in `<model>#<short>` attributes."""
    rows: dict[str, dict[str, Any]] = {}
    for name, value in item.items():
        model, sep, short = name.rpartition("#")
        if not sep or short not in MODEL_FIELDS or "N" not in value:
            continue
        field = MODEL_FIELDS[short]
        rows.setdefault(model, {})[field] = float(value["N"]) if field == "cost" else int(value["N"])
    return rows
