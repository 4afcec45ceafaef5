"""DynamoDB attribute values to and from Python, as `boto3.dynamodb.types` converts them (numbers are
`Decimal` in DynamoDB's number context, floats refused; binary comes back as bytes where boto3 wraps
it in its `Binary`: the store keeps no binary attributes). Here so that the store needs
botocore only: `import boto3` costs about 15 ms of CPU at init (it imports s3transfer), which every
new Lambda environment would pay for two small classes (docs/bench.md, cold start).
tests/unit/store/dynamodb/test_attribute_values.py checks the results against boto3's own."""

from __future__ import annotations

from collections.abc import Mapping, Set
from decimal import Clamped, Context, Decimal, Inexact, Overflow, Rounded, Underflow
from typing import Any

NUMBER_CONTEXT = Context(Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow])


def _number(value: Any) -> bool:
    if isinstance(value, float):
        raise TypeError("Float types are not supported. Use Decimal types instead.")
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def _n(value: Any) -> str:
    number = str(NUMBER_CONTEXT.create_decimal(value))
    if number in ("Infinity", "NaN"):
        raise TypeError("Infinity and NaN not supported")
    return number


class TypeSerializer:
    def serialize(self, value: Any) -> dict[str, Any]:
        if value is None:
            return {"NULL": True}
        if isinstance(value, bool):
            return {"BOOL": value}
        if _number(value):
            return {"N": _n(value)}
        if isinstance(value, str):
            return {"S": value}
        if isinstance(value, bytes | bytearray):
            return {"B": value}
        if isinstance(value, Set):
            if all(_number(v) for v in value):
                return {"NS": [_n(v) for v in value]}
            if all(isinstance(v, str) for v in value):
                return {"SS": list(value)}
            if all(isinstance(v, bytes | bytearray) for v in value):
                return {"BS": list(value)}
        if isinstance(value, Mapping):
            return {"M": {k: self.serialize(v) for k, v in value.items()}}
        if isinstance(value, list | tuple):
            return {"L": [self.serialize(v) for v in value]}
        raise TypeError(f"Unsupported type {type(value)!r} for value {value!r}")


class TypeDeserializer:
    def deserialize(self, value: Mapping[str, Any]) -> Any:
        if not value:
            raise TypeError("Value must be a nonempty dictionary whose key is a valid dynamodb type.")
        ((kind, data),) = value.items()
        if kind == "NULL":
            return None
        if kind == "BOOL":
            return data
        if kind == "N":
            return NUMBER_CONTEXT.create_decimal(data)
        if kind in ("S", "B"):
            return data
        if kind == "NS":
            return {NUMBER_CONTEXT.create_decimal(v) for v in data}
        if kind in ("SS", "BS"):
            return set(data)
        if kind == "L":
            return [self.deserialize(v) for v in data]
        if kind == "M":
            return {k: self.deserialize(v) for k, v in data.items()}
        raise TypeError(f"Dynamodb type {kind} is not supported")
