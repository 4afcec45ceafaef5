"""The deployed store: two DynamoDB tables through an injected boto3 client.

Both tables have a string partition key `pk` and a string sort key `sk` (docs/store.md):

    keys table    pk=KEY#<key_id>  sk=KEY                     the key record (hash of the secret only)
    usage table   pk=KEY#<key_id>  sk=EV#<request_id>         one usage event, `expires_at` TTL
                  pk=KEY#<key_id>  sk=M#<YYYY-MM>             month totals + the live minute window
                                                              (win, wreq, wtok) and the requests in
                                                              flight (fg, fc, fp, fl): admission's one item
                  pk=KEY#<key_id>  sk=M#<YYYY-MM>#<model>     month totals of one model
                  pk=KEY#<key_id>  sk=D#<YYYY-MM-DD>[#<model>] day totals (and per model)

Admission is one conditional UpdateItem on the month item, which reserves the request's worst
case in `wtok` (the live minute's committed tokens) and `total_tokens` (the month's committed
tokens: settled + reserved, on the all-models month item only). Settlement takes no transaction
(store/dynamodb/settle.py): the event's conditional put, then the month and the day item at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from chatgw.access.keys import KeyRecord, Limits
from chatgw.access.limits import Admission, decide, generation_of, minute_window, month_of, need_of
from chatgw.errors import StoreUnavailable
from chatgw.store.base import KeyExists, KeyNotFound, UsageEvent, UsageQuery, UsageRow
from chatgw.store.codec import event_from_dict, key_from_dict, key_to_dict
from chatgw.store.dynamodb import inflight
from chatgw.store.dynamodb.call import Refused as _Refused
from chatgw.store.dynamodb.call import RetryPolicy, bound_read_timeouts, call
from chatgw.store.dynamodb.items import attr_n, attr_s, from_item, int_of, pk_of, to_item
from chatgw.store.dynamodb.settle import Settler
from chatgw.store.dynamodb.shards import SEALED, Layouts, check_layout
from chatgw.store.dynamodb.usage import usage_rows

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

T = TypeVar("T")
CONFLICT_RETRIES = 6
KEY_SK = "KEY"


class DynamoStore:
    def __init__(
        self,
        client: DynamoDBClient,
        keys_table: str,
        usage_table: str,
        *,
        usage_ttl_days: int = 90,
        retry: RetryPolicy | None = None,
        layouts: Layouts | None = None,
    ) -> None:
        self.client = client
        self.retry = retry or RetryPolicy()
        bound_read_timeouts(client, self.retry)  # each call's read timeout within its deadline
        self.keys_table = keys_table
        self.usage_table = usage_table
        self.usage_ttl = timedelta(days=usage_ttl_days)
        # The minute window this process last saw live per key: picks the right update first.
        self._live_window: dict[str, int] = {}
        # Likewise the in-flight generation (`fg`) it last saw per key, with its month (a new month's
        # item starts afresh): store/dynamodb/inflight.py.
        self._live_generation: dict[str, tuple[str, int]] = {}
        self._hint_lock = threading.Lock()
        self._layouts = layouts or Layouts()
        self._settler = Settler(client, usage_table, self.usage_ttl, self._call, self._layouts.take)

    def drop_connections(self) -> None:
        """For a SnapStart snapshot and restore: clear botocore's connection pool (new ones on use)."""
        self.client.close()

    # plumbing -----------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], **kwargs: Any) -> T:
        """One request with the store's retries (dynamodb_call): a failed condition is `_Refused`,
        what cannot be done `StoreUnavailable`."""
        return call(self.retry, fn, **kwargs)

    # keys ---------------------------------------------------------------------------

    def _key_item(self, record: KeyRecord) -> dict[str, Any]:
        return {"pk": pk_of(record.key_id), "sk": attr_s(KEY_SK), **to_item(key_to_dict(record))}

    def create_key(self, record: KeyRecord) -> None:
        try:
            self._call(
                self.client.put_item,
                TableName=self.keys_table,
                Item=self._key_item(record),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except _Refused:
            raise KeyExists(record.key_id) from None

    def get_key(self, key_id: str) -> KeyRecord | None:
        resp = self._call(
            self.client.get_item,
            TableName=self.keys_table,
            Key={"pk": pk_of(key_id), "sk": attr_s(KEY_SK)},
            ConsistentRead=True,
        )
        item = resp.get("Item")
        return key_from_dict(from_item(item)) if item else None

    def list_keys(self) -> list[KeyRecord]:
        items = self._scan(self.keys_table, ConsistentRead=True)
        records = [key_from_dict(from_item(item)) for item in items]
        return sorted(records, key=lambda r: r.key_id)

    def save_key(self, record: KeyRecord) -> None:
        try:
            self._call(
                self.client.put_item,
                TableName=self.keys_table,
                Item=self._key_item(record),
                ConditionExpression="attribute_exists(pk)",
            )
        except _Refused:
            raise KeyNotFound(record.key_id) from None

    def reshard(self, record: KeyRecord, updated: KeyRecord, now: datetime) -> KeyRecord:
        """Save `updated`; a change of its shard count seals the old layout's items and carries
        their totals to the new one first (store/dynamodb/reshard.py): the limits stay exact."""
        from chatgw.store.dynamodb.reshard import reshard

        return reshard(self._call, self.client, self.usage_table, self.save_key, record, updated, now)

    def delete_key(self, key_id: str) -> bool:
        resp = self._call(
            self.client.delete_item,
            TableName=self.keys_table,
            Key={"pk": pk_of(key_id), "sk": attr_s(KEY_SK)},
            ReturnValues="ALL_OLD",
        )
        return bool(resp.get("Attributes"))

    def _scan(self, table: str, **kwargs: Any) -> list[dict[str, Any]]:
        return self._pages(self.client.scan, TableName=table, **kwargs)

    def _query(self, **kwargs: Any) -> list[dict[str, Any]]:
        return self._pages(self.client.query, TableName=self.usage_table, **kwargs)

    def _pages(self, fn: Callable[..., Any], **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            page = self._call(fn, **kwargs, **({"ExclusiveStartKey": start} if start else {}))
            items.extend(page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    # limits -------------------------------------------------------------------------

    def admit(
        self, key_id: str, limits: Limits, now: datetime, *, request_id: str | None = None, reserve: int = 0
    ) -> Admission:
        """One conditional UpdateItem on the month item (or on one of the key's shard items, of its
        current layout: store/dynamodb/shards.py), which carries the live minute window."""
        return self._layouts.admit(self._admit_item, key_id, limits, now, reserve, request_id)

    def _admit_item(
        self, key_id: str, shard: str, limits: Limits, now: datetime, reserve: int, must_exist: bool = False
    ) -> Admission:
        """One conditional UpdateItem on `M#<month><shard>`, which carries the live minute window.

        Two shapes of update: `ADD wreq 1, wtok R` within the live window, or `SET win, wreq=1,
        wtok=R` to open a new one (both `ADD total_tokens R`: the month's committed tokens); for a
        key with `max_concurrent`, one of three in-flight shapes too (store/dynamodb/inflight.py).
        This process remembers the live window and generation per key, so the first try is almost
        always the right one; a wrong guess costs one more round trip (at most once a minute). The
        condition failure returns the old item, so a refusal needs no extra read; `limits.decide`
        names the limit from it, as SQLite does. A reservation that can never fit is decided on one
        read. A sealed item (a change of N) admits nothing: `ShardSealed` names the layout to admit
        on instead; `must_exist` (on such a layout) admits only on an item the change has prepared."""
        rpm, tpm, budget = limits.requests_per_minute, limits.tokens_per_minute, limits.monthly_token_budget
        need = need_of(reserve)
        window = minute_window(now)
        month = month_of(now)
        counted = limits.max_concurrent is not None
        generation = generation_of(now) if counted else -1
        if rpm is not None and rpm <= 0:  # first in the order: refused whatever the store holds
            return Admission("requests", reserve=reserve, window=window)
        if rpm is None and tpm is not None and tpm <= 0:  # likewise, with no request limit before it
            return Admission("tokens", reserve=reserve, window=window)
        if limits.max_concurrent is not None and limits.max_concurrent <= 0:  # a shard whose share is 0
            return Admission("concurrent", reserve=reserve, window=window)
        if (tpm is not None and need > tpm) or (budget is not None and need > budget):
            return self._never_fits(key_id, month + shard, window, limits, reserve, generation)
        hint = key_id + shard
        with self._hint_lock:
            same_window = self._live_window.get(hint) == window
            seen = self._live_generation.get(hint)
            shape = inflight.shape_of(generation, seen[1] if seen and seen[0] == month else None)
        for _ in range(4):
            try:
                new = self._admit_once(
                    key_id, month, shard, window, same_window, limits, reserve, (generation, shape), must_exist
                )
            except _Refused as refused:
                old = refused.item
                check_layout(old, must_exist)
                live = int_of(old, "win", -1)
                if live > window:  # another container's clock is ahead: join its window
                    window, same_window = live, True
                    continue
                wrong = same_window != (live == window)  # guessed the wrong shape of update
                same_window = live == window
                live_generation = inflight.generation_in(old)
                if counted:
                    if live_generation is not None and live_generation > generation:  # likewise: join
                        generation = live_generation
                    wrong = wrong or shape != inflight.shape_of(generation, live_generation)
                    shape = inflight.shape_of(generation, live_generation)
                if wrong:
                    continue
                self._remember(hint, live, month, live_generation)
                return self._refusal(old, window, limits, reserve, generation)
            self._remember(hint, window, month, generation if counted else None)
            return Admission(
                None,
                requests_used=int_of(new, "wreq"),
                tokens_used=int_of(new, "wtok"),
                month_tokens_used=int_of(new, "total_tokens"),
                reserve=reserve,
                window=window,
                in_flight=int_of(new, "fl") if counted else 0,
                generation=generation,
            )
        raise StoreUnavailable("The key store is unavailable (admission did not settle).")

    def _never_fits(
        self, key_id: str, month: str, window: int, limits: Limits, reserve: int, generation: int
    ) -> Admission:
        resp = self._call(
            self.client.get_item,
            TableName=self.usage_table,
            Key={"pk": pk_of(key_id), "sk": attr_s(f"M#{month}")},
            ConsistentRead=True,
        )
        return self._refusal(resp.get("Item") or {}, window, limits, reserve, generation)

    def _remember(self, key_id: str, window: int, month: str, generation: int | None) -> None:
        with self._hint_lock:
            if window >= 0:
                self._live_window[key_id] = window
            if generation is not None:
                self._live_generation[key_id] = (month, generation)

    def _admit_once(
        self,
        key_id: str,
        month: str,
        shard: str,
        window: int,
        same_window: bool,
        limits: Limits,
        reserve: int,
        in_flight: tuple[int, inflight.Shape],
        must_exist: bool = False,
    ) -> dict[str, Any]:
        rpm, tpm, budget = limits.requests_per_minute, limits.tokens_per_minute, limits.monthly_token_budget
        need = need_of(reserve)
        update = inflight.Update(values={":w": attr_n(window), ":one": attr_n(1), ":r": attr_n(reserve)})
        if same_window:
            update.adds += ["wreq :one", "wtok :r", "total_tokens :r"]
            update.conditions.append("win = :w")
            if rpm is not None:
                update.conditions.append("wreq < :rpm")
                update.values[":rpm"] = attr_n(rpm)
            if tpm is not None:
                update.conditions.append("wtok <= :tpm")
                update.values[":tpm"] = attr_n(tpm - need)
        else:
            update.sets += ["win = :w", "wreq = :one", "wtok = :r", "key_id = :kid", "period = :month"]
            update.adds.append("total_tokens :r")
            update.conditions.append("(attribute_not_exists(win) OR win < :w)")
            update.values.update({":kid": attr_s(key_id), ":month": attr_s(month)})
        update.conditions.append(f"attribute_not_exists({SEALED})")
        if must_exist:
            update.conditions.append("attribute_exists(pk)")
        if budget is not None:
            update.conditions.append("(attribute_not_exists(total_tokens) OR total_tokens <= :budget)")
            update.values[":budget"] = attr_n(budget - need)
        if limits.max_concurrent is not None:
            generation, shape = in_flight
            inflight.admit(update, shape, generation, limits.max_concurrent)
        resp = self._call(
            self.client.update_item,
            TableName=self.usage_table,
            Key={"pk": pk_of(key_id), "sk": attr_s(f"M#{month}{shard}")},
            UpdateExpression=update.expression(),
            ConditionExpression=update.condition(),
            ExpressionAttributeValues=update.values,
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return dict(resp.get("Attributes", {}))

    @staticmethod
    def _refusal(old: Mapping[str, Any], window: int, limits: Limits, reserve: int, generation: int) -> Admission:
        live = int_of(old, "win", -1) == window
        requests = int_of(old, "wreq") if live else 0
        tokens = int_of(old, "wtok") if live else 0
        month_tokens = int_of(old, "total_tokens")
        flying = inflight.in_flight(old, generation) if limits.max_concurrent is not None else 0
        refused = decide(
            limits,
            requests=requests,
            window_tokens=tokens,
            month_tokens=month_tokens,
            reserve=reserve,
            in_flight=flying,
        )
        if refused is None:
            raise StoreUnavailable("The key store is unavailable (admission refused for no known limit).")
        return Admission(
            refused,
            requests_used=requests,
            tokens_used=tokens,
            month_tokens_used=month_tokens,
            reserve=reserve,
            window=window,
            in_flight=flying,
        )

    # usage ledger -------------------------------------------------------------------

    def record_usage(self, event: UsageEvent) -> bool:
        """Settle without a transaction: the event's conditional put (the exactly-once gate), then
        the month item (the reservation replaced by the actual tokens, month totals) and the day
        item (day totals, per served model) at once. docs/store.md, store/dynamodb/settle.py."""
        return self._settler.settle(event)

    def replay_usage(self, event: UsageEvent) -> bool:
        """Record a `usage_event` log line's event (store/replay.py): the event put if missing, then
        each part the line leaves pending (every part, if this replay put the event), once."""
        return self._settler.replay(event)

    def usage(self, query: UsageQuery) -> list[UsageRow]:
        prefix = f"{'M' if query.period == 'month' else 'D'}#{query.value}"
        if query.key_id is None:
            # Every key's aggregates of one period: an operator's report, so a filtered Scan
            # (docs/store.md: a GSI on period would replace it at scale).
            items = self._scan(
                self.usage_table,
                FilterExpression="begins_with(sk, :sk) AND attribute_exists(requests)",
                ExpressionAttributeValues={":sk": attr_s(f"D#{query.value}" if query.by_model else prefix)},
            )
            if query.by_model:
                items += self._scan(
                    self.usage_table,
                    FilterExpression="begins_with(sk, :sk) AND attribute_exists(requests)",
                    ExpressionAttributeValues={":sk": attr_s(prefix + "#")},
                )
        else:
            items = self._query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :sk)",
                FilterExpression="attribute_exists(requests)",
                ExpressionAttributeValues={":pk": pk_of(query.key_id), ":sk": attr_s(prefix)},
            )
            if query.by_model and query.period == "month":
                items += self._query(
                    KeyConditionExpression="pk = :pk AND begins_with(sk, :sk)",
                    FilterExpression="attribute_exists(requests)",
                    ExpressionAttributeValues={":pk": pk_of(query.key_id), ":sk": attr_s(f"D#{query.value}-")},
                )
        return usage_rows(query, items)

    def usage_events(self, key_id: str) -> list[UsageEvent]:
        items = self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :ev)",
            ExpressionAttributeValues={":pk": pk_of(key_id), ":ev": attr_s("EV#")},
        )
        events = [event_from_dict(from_item(item)) for item in items]
        return sorted(events, key=lambda e: e.at)

    def close(self) -> None:
        self._settler.close()
        self.client.close()
