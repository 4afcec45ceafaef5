"""The deployed store: two DynamoDB tables through an injected boto3 client.

Both tables have a string partition key `pk` and a string sort key `sk` (docs/store.md):

    keys table    pk=KEY#<key_id>  sk=KEY                     the key record (hash of the secret only)
    usage table   pk=KEY#<key_id>  sk=EV#<request_id>         one usage event, `expires_at` TTL
                  pk=KEY#<key_id>  sk=M#<YYYY-MM>             month totals + the live minute window
                                                              (win, wreq, wtok): admission's one item
                  pk=KEY#<key_id>  sk=M#<YYYY-MM>#<model>     month totals of one model
                  pk=KEY#<key_id>  sk=D#<YYYY-MM-DD>[#<model>] day totals (and per model)

Admission is one conditional UpdateItem on the month item; recording usage is one
TransactWriteItems (event Put with attribute_not_exists + four aggregate Updates).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from ..errors import StoreUnavailable
from ..keys import KeyRecord, Limits
from ..limits import Admission, day_of, minute_window, month_of
from .base import KeyExists, KeyNotFound, UsageEvent, UsageQuery, UsageRow
from .codec import event_from_dict, key_from_dict, key_to_dict
from .dynamodb_call import Refused as _Refused
from .dynamodb_call import RetryPolicy, call
from .dynamodb_call import unavailable as _unavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

T = TypeVar("T")
_ser = TypeSerializer()
_de = TypeDeserializer()
CONFLICT_RETRIES = 6
KEY_SK = "KEY"


def _to_item(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in data.items() if v is not None}


def _from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in item.items()}


def _n(value: int) -> dict[str, str]:
    return {"N": str(int(value))}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _int(item: Mapping[str, Any], name: str, default: int = 0) -> int:
    value = item.get(name)
    return int(value["N"]) if value and "N" in value else default


def _pk(key_id: str) -> dict[str, str]:
    return _s(f"KEY#{key_id}")


class DynamoStore:
    def __init__(
        self,
        client: DynamoDBClient,
        keys_table: str,
        usage_table: str,
        *,
        usage_ttl_days: int = 90,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.client = client
        self.retry = retry or RetryPolicy()
        self.keys_table = keys_table
        self.usage_table = usage_table
        self.usage_ttl = timedelta(days=usage_ttl_days)
        # The minute window this process last saw live per key: picks the right update first.
        self._live_window: dict[str, int] = {}
        self._hint_lock = threading.Lock()

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
        return {"pk": _pk(record.key_id), "sk": _s(KEY_SK), **_to_item(key_to_dict(record))}

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
            Key={"pk": _pk(key_id), "sk": _s(KEY_SK)},
            ConsistentRead=True,
        )
        item = resp.get("Item")
        return key_from_dict(_from_item(item)) if item else None

    def list_keys(self) -> list[KeyRecord]:
        items = self._scan(self.keys_table, ConsistentRead=True)
        records = [key_from_dict(_from_item(item)) for item in items]
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

    def delete_key(self, key_id: str) -> bool:
        resp = self._call(
            self.client.delete_item,
            TableName=self.keys_table,
            Key={"pk": _pk(key_id), "sk": _s(KEY_SK)},
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

    def admit(self, key_id: str, limits: Limits, now: datetime) -> Admission:
        """One conditional UpdateItem on the month item, which carries the live minute window.

        Two shapes of update: `ADD wreq 1` within the live window, or `SET win, wreq=1, wtok=0`
        to open a new one. This process remembers the live window per key, so the first try is
        almost always the right one; a wrong guess costs one more round trip (at most once a
        minute). The condition failure returns the old item, so a refusal needs no extra read."""
        rpm, tpm, budget = limits.requests_per_minute, limits.tokens_per_minute, limits.monthly_token_budget
        if rpm is not None and rpm <= 0:
            return Admission("requests")
        if tpm is not None and tpm <= 0:
            return Admission("tokens")
        window = minute_window(now)
        month = month_of(now)
        with self._hint_lock:
            same_window = self._live_window.get(key_id) == window
        for _ in range(4):
            try:
                new = self._admit_once(key_id, month, window, same_window, rpm, tpm, budget)
            except _Refused as refused:
                old = refused.item
                live = _int(old, "win", -1)
                if live > window:  # another container's clock is ahead: join its window
                    window, same_window = live, True
                    continue
                if same_window != (live == window):  # guessed the wrong shape of update
                    same_window = live == window
                    continue
                self._remember(key_id, live)
                return self._refusal(old, window, rpm, tpm, budget)
            self._remember(key_id, window)
            return Admission(
                None,
                requests_used=_int(new, "wreq"),
                tokens_used=_int(new, "wtok"),
                month_tokens_used=_int(new, "total_tokens"),
            )
        raise StoreUnavailable("The key store is unavailable (admission did not settle).")

    def _remember(self, key_id: str, window: int) -> None:
        with self._hint_lock:
            if window >= 0:
                self._live_window[key_id] = window

    def _admit_once(
        self,
        key_id: str,
        month: str,
        window: int,
        same_window: bool,
        rpm: int | None,
        tpm: int | None,
        budget: int | None,
    ) -> dict[str, Any]:
        values: dict[str, Any] = {":w": _n(window), ":one": _n(1)}
        if same_window:
            update = "ADD wreq :one"
            conditions = ["win = :w"]
            if rpm is not None:
                conditions.append("wreq < :rpm")
                values[":rpm"] = _n(rpm)
            if tpm is not None:
                conditions.append("wtok < :tpm")
                values[":tpm"] = _n(tpm)
        else:
            update = "SET win = :w, wreq = :one, wtok = :zero, key_id = :kid, period = :month"
            conditions = ["(attribute_not_exists(win) OR win < :w)"]
            values.update({":zero": _n(0), ":kid": _s(key_id), ":month": _s(month)})
        if budget is not None:
            conditions.append("(attribute_not_exists(total_tokens) OR total_tokens < :budget)")
            values[":budget"] = _n(budget)
        resp = self._call(
            self.client.update_item,
            TableName=self.usage_table,
            Key={"pk": _pk(key_id), "sk": _s(f"M#{month}")},
            UpdateExpression=update,
            ConditionExpression=" AND ".join(conditions),
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return dict(resp.get("Attributes", {}))

    @staticmethod
    def _refusal(
        old: Mapping[str, Any], window: int, rpm: int | None, tpm: int | None, budget: int | None
    ) -> Admission:
        live = _int(old, "win", -1) == window
        requests = _int(old, "wreq") if live else 0
        tokens = _int(old, "wtok") if live else 0
        month_tokens = _int(old, "total_tokens")
        if rpm is not None and requests >= rpm:
            refused = "requests"
        elif tpm is not None and tokens >= tpm:
            refused = "tokens"
        elif budget is not None and month_tokens >= budget:
            refused = "budget"
        else:
            raise StoreUnavailable("The key store is unavailable (admission refused for no known limit).")
        return Admission(refused, requests_used=requests, tokens_used=tokens, month_tokens_used=month_tokens)

    # usage ledger -------------------------------------------------------------------

    def record_usage(self, event: UsageEvent) -> bool:
        """One transaction: the event (only if its request_id is new) and the four aggregates.
        The month item's `wtok` gets the tokens too: the live minute's token counter."""
        pk = _pk(event.key_id)
        expires = int((event.at + self.usage_ttl).timestamp())
        item = {"pk": pk, "sk": _s(f"EV#{event.request_id}"), **_to_item(event.to_log())}
        item["expires_at"] = _n(expires)
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.usage_table,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        ]
        month, day = month_of(event.at), day_of(event.at)
        for period, prefix in ((month, "M"), (day, "D")):
            for model in (None, event.model):
                sk = f"{prefix}#{period}" + (f"#{model}" if model is not None else "")
                values: dict[str, Any] = {
                    ":one": _n(1),
                    ":p": _n(event.prompt_tokens),
                    ":c": _n(event.completion_tokens),
                    ":t": _n(event.total_tokens),
                    ":kid": _s(event.key_id),
                    ":period": _s(period),
                }
                update = "SET key_id = :kid, period = :period"
                if model is not None:
                    update += ", model = :model"
                    values[":model"] = _s(model)
                update += " ADD requests :one, prompt_tokens :p, completion_tokens :c, total_tokens :t"
                if prefix == "M" and model is None:
                    update += ", wtok :t"
                actions.append(
                    {
                        "Update": {
                            "TableName": self.usage_table,
                            "Key": {"pk": pk, "sk": _s(sk)},
                            "UpdateExpression": update,
                            "ExpressionAttributeValues": values,
                        }
                    }
                )
        for attempt in range(CONFLICT_RETRIES):
            try:
                self._call(self.client.transact_write_items, TransactItems=actions)
                return True
            except ClientError as exc:
                reasons = [str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False
                if "TransactionConflict" in reasons and attempt + 1 < CONFLICT_RETRIES:
                    self.retry.backoff(attempt)
                    continue
                raise _unavailable(exc) from exc
        raise AssertionError("unreachable")

    def usage(self, query: UsageQuery) -> list[UsageRow]:
        prefix = f"{'M' if query.period == 'month' else 'D'}#{query.value}"
        if query.key_id is not None:
            values = {":pk": _pk(query.key_id)}
            if query.by_model:
                key_cond = "pk = :pk AND begins_with(sk, :sk)"
                values[":sk"] = _s(prefix + "#")
            else:
                key_cond = "pk = :pk AND sk = :sk"
                values[":sk"] = _s(prefix)
            items = self._query(
                KeyConditionExpression=key_cond,
                FilterExpression="attribute_exists(requests)",
                ExpressionAttributeValues=values,
            )
        else:
            # Every key's aggregates of one period: an operator's report, so a filtered Scan
            # (docs/store.md: a GSI on period would replace it at scale).
            op = "begins_with(sk, :sk)" if query.by_model else "sk = :sk"
            items = self._scan(
                self.usage_table,
                FilterExpression=f"{op} AND attribute_exists(requests)",
                ExpressionAttributeValues={":sk": _s(prefix + "#" if query.by_model else prefix)},
            )
        rows = [
            UsageRow(
                key_id=str(item["key_id"]["S"]),
                period=str(item["period"]["S"]),
                requests=_int(item, "requests"),
                prompt_tokens=_int(item, "prompt_tokens"),
                completion_tokens=_int(item, "completion_tokens"),
                model=str(item["model"]["S"]) if query.by_model else None,
            )
            for item in items
        ]
        return sorted(rows, key=lambda r: (r.key_id, r.model or ""))

    def usage_events(self, key_id: str) -> list[UsageEvent]:
        items = self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :ev)",
            ExpressionAttributeValues={":pk": _pk(key_id), ":ev": _s("EV#")},
        )
        events = [event_from_dict(_from_item(item)) for item in items]
        return sorted(events, key=lambda e: e.at)

    def close(self) -> None:
        self.client.close()
