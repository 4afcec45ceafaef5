"""The store's attribute-value conversion gives what boto3.dynamodb.types gives (the store
imports no boto3 at init: docs/bench.md)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb import types as boto3_types
from hypothesis import given
from hypothesis import strategies as st

from chatgw.store.dynamodb.attribute_values import TypeDeserializer, TypeSerializer

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**37), max_value=10**37),
    st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**20), max_value=10**20),
    st.text(max_size=20),
)
values = st.recursive(
    st.one_of(scalars, st.frozensets(st.text(max_size=5), min_size=1), st.frozensets(st.integers(), min_size=1)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def canonical(attribute: dict[str, Any]) -> dict[str, Any]:
    """An attribute value with its sets sorted (they come out in no particular order)."""
    ((kind, data),) = attribute.items()
    if kind in ("SS", "NS", "BS"):
        return {kind: sorted(data)}
    if kind == "L":
        return {kind: [canonical(v) for v in data]}
    if kind == "M":
        return {kind: {k: canonical(v) for k, v in data.items()}}
    return attribute


def outcome(convert: Any, value: Any) -> Any:
    """The result, or the type of what was raised (numbers beyond DynamoDB's 38 digits are refused)."""
    try:
        return canonical(convert(value))
    except Exception as exc:
        return type(exc)


@given(values)
def test_serialize_and_deserialize_as_boto3_does(value: Any) -> None:
    ours = outcome(TypeSerializer().serialize, value)
    assert ours == outcome(boto3_types.TypeSerializer().serialize, value)
    if isinstance(ours, dict):
        assert TypeDeserializer().deserialize(ours) == boto3_types.TypeDeserializer().deserialize(ours)


@pytest.mark.parametrize("bad", [1.5, Decimal("Infinity"), object()])
def test_what_boto3_refuses_is_refused(bad: Any) -> None:
    with pytest.raises(TypeError):
        boto3_types.TypeSerializer().serialize(bad)
    with pytest.raises(TypeError):
        TypeSerializer().serialize(bad)


def test_numbers_are_decimals_in_dynamodbs_context() -> None:
    assert TypeSerializer().serialize(Decimal("1.50")) == {"N": "1.50"}
    assert TypeDeserializer().deserialize({"N": "12"}) == Decimal(12)
    assert TypeDeserializer().deserialize({"NS": ["1", "2"]}) == {Decimal(1), Decimal(2)}
