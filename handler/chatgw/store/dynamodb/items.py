"""Attribute values of the DynamoDB tables (docs/store.md): plain request parameters."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from chatgw.store.dynamodb.attribute_values import TypeDeserializer, TypeSerializer

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
