"""The items and updates of the DynamoDB usage table (docs/store.md), as plain request parameters:
the attribute-value helpers, and what one settlement writes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from ..limits import day_of, minute_window, month_of
from .base import UsageEvent

_ser = TypeSerializer()
_de = TypeDeserializer()


def to_item(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in data.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in item.items()}


def attr_n(value: int) -> dict[str, str]:
    return {"N": str(int(value))}


def attr_s(value: str) -> dict[str, str]:
    return {"S": value}


def int_of(item: Mapping[str, Any], name: str, default: int = 0) -> int:
    value = item.get(name)
    return int(value["N"]) if value and "N" in value else default


def money(value: float) -> str:
    """A cost as a DynamoDB number: plain decimal notation, 12 places."""
    return format(Decimal(repr(value)).quantize(Decimal("1e-12")), "f")


def pk_of(key_id: str) -> dict[str, str]:
    return attr_s(f"KEY#{key_id}")


def settlement_actions(
    table: str, event: UsageEvent, ttl: timedelta, *, with_window: bool
) -> tuple[list[dict[str, Any]], int]:
    """The TransactItems of one settlement, and the index of the month item's update when it is
    conditioned on the admission's minute still being the live window (else -1)."""
    pk = pk_of(event.key_id)
    expires = int((event.at + ttl).timestamp())
    logged = event.to_log()
    logged.pop("cost")
    item = {"pk": pk, "sk": attr_s(f"EV#{event.request_id}"), **to_item(logged)}
    if event.cost is not None:
        item["cost"] = {"N": money(event.cost)}
    item["expires_at"] = attr_n(expires)
    actions: list[dict[str, Any]] = [
        {
            "Put": {
                "TableName": table,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
    ]
    month, day = month_of(event.at), day_of(event.at)
    window_index = -1
    for period, prefix in ((month, "M"), (day, "D")):
        for model in (None, event.booked_model):
            sk = f"{prefix}#{period}" + (f"#{model}" if model is not None else "")
            values: dict[str, Any] = {
                ":one": attr_n(1),
                ":p": attr_n(event.prompt_tokens),
                ":c": attr_n(event.completion_tokens),
                ":t": attr_n(event.total_tokens),
                ":ct": attr_n(event.cached_tokens),
                ":cw": attr_n(event.cache_write_tokens),
                ":rt": attr_n(event.reasoning_tokens),
                ":kid": attr_s(event.key_id),
                ":period": attr_s(period),
            }
            update = "SET key_id = :kid, period = :period"
            if model is not None:
                update += ", model = :model"
                values[":model"] = attr_s(model)
            update += (
                " ADD requests :one, prompt_tokens :p, completion_tokens :c,"
                " cached_tokens :ct, cache_write_tokens :cw, reasoning_tokens :rt"
            )
            if event.cost is not None:
                update += ", cost :cost"
                values[":cost"] = {"N": money(event.cost)}
            action: dict[str, Any] = {"TableName": table, "Key": {"pk": pk, "sk": attr_s(sk)}}
            if prefix == "M" and model is None:
                values[":t"] = attr_n(event.total_tokens - event.reserved_tokens)
                if with_window:
                    update += ", wtok :t"
                    action["ConditionExpression"] = "attribute_not_exists(win) OR win = :w"
                    values[":w"] = attr_n(minute_window(event.at))
                    window_index = len(actions)
            update += ", total_tokens :t"
            action.update(UpdateExpression=update, ExpressionAttributeValues=values)
            actions.append({"Update": action})
    return actions, window_index
