"""Usage rows from the DynamoDB aggregate items (docs/store.md).

- all models: the period's own item, `M#<month>` or `D#<day>` (attributes `requests`,
  `prompt_tokens`, ..., `cost`), plus its shard items `...@<s>` for a key of N shards;
- per served model: the `<model>#<field>` attributes of the day items (`D#<day>`; a month sums
  its days), plus the per-model items that releases before shards wrote (`M#<month>#<model>`,
  `D#<day>#<model>`), so that a period that straddles the upgrade adds both and nothing migrates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from chatgw.store.base import UsageQuery, UsageRow, split_ledger_model
from chatgw.store.dynamodb.items import int_of
from chatgw.store.dynamodb.settle import model_rows

FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens")


def _sums(item: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {f: int_of(item, f) for f in FIELDS}
    if "cost" in item:
        out["cost"] = float(item["cost"]["N"])
    return out


def _key_id(item: Mapping[str, Any]) -> str:
    return str(item["pk"]["S"]).removeprefix("KEY#")


def usage_rows(query: UsageQuery, items: Iterable[Mapping[str, Any]]) -> list[UsageRow]:
    base = f"{'M' if query.period == 'month' else 'D'}#{query.value}"
    unique = {(str(i["pk"]["S"]), str(i["sk"]["S"])): i for i in items}
    totals: dict[tuple[str, str | None], dict[str, Any]] = {}

    def add(key: tuple[str, str | None], sums: Mapping[str, Any]) -> None:
        row = totals.setdefault(key, {})
        for name, value in sums.items():
            row[name] = row.get(name, 0) + value

    for (_, sk), item in unique.items():
        if not query.by_model:
            if sk == base or sk.startswith(base + "@"):  # the period's item and its shards
                add((_key_id(item), None), _sums(item))
        elif sk.startswith(base + "#"):  # a per-model item of an earlier release
            add((_key_id(item), str(item["model"]["S"])), _sums(item))
        elif sk.startswith("D#" + query.value) and "#" not in sk[2:]:  # a day item of the period
            for model, sums in model_rows(item).items():
                add((_key_id(item), model), sums)
    rows = [
        UsageRow(
            key_id=key_id,
            period=query.value,
            model=split_ledger_model(model)[0] if model is not None else None,
            door=split_ledger_model(model)[1] if model is not None else None,
            cost=round(float(sums["cost"]), 12) if "cost" in sums else None,
            **{f: int(sums.get(f, 0)) for f in FIELDS},
        )
        for (key_id, model), sums in totals.items()
    ]
    return sorted(rows, key=lambda r: (r.key_id, r.model or "", r.door or ""))
