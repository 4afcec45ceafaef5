"""Requests in flight on DynamoDB (`max_concurrent`; docs/store.md "Requests in flight"): a lease of
two generations on the key's month item (or shard item), so that the count of a request whose
container died before its settlement expires by itself. Four attributes:

    fg  the generation of `fc`: floor(epoch s / L), L = limits.LEASE_SECONDS
    fc  requests admitted in generation fg and not settled
    fp  requests admitted in generation fg - 1 and not settled
    fl  fc + fp, what the condition compares (a condition cannot add two attributes)

Admission in generation g adds one of three shapes to the admission's one UpdateItem:

    same     (fg = g)       IF fg = :g AND fl < :max         ADD fl 1, fc 1
    rotate   (fg = g - 1)   IF fg = :gp AND fc < :max        SET fl = fc + 1, fp = fc, fc = 1, fg = :g
    fresh    (older, none)  IF no fg OR fg < :gp             SET fg = :g, fc = 1, fp = 0, fl = 1

A rotation drops `fp` (generation g - 2 and older: requests that cannot still be running, as L is
at least the longest a request lives). The rotation reads `fc` inside the update (DynamoDB computes
every SET from the item as it was), so it needs no value read before and no retry when another
request was settled meanwhile. Settlement releases the request in the month item's UpdateItem it
sends anyway (no extra write):

    fg = g          ADD fl -1, fc -1    IF fg = :g
    fg = g + 1      ADD fl -1, fp -1    IF fg = :g + 1
    fg >= g + 2     nothing: the rotation dropped the count already
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from chatgw.store.dynamodb.items import attr_n, int_of

Shape = Literal["same", "rotate", "fresh"]


def generation_in(item: Mapping[str, Any]) -> int | None:
    """The item's `fg`, or None if it has none."""
    return int_of(item, "fg") if "fg" in item else None


def shape_of(generation: int, live: int | None) -> Shape:
    if live == generation:
        return "same"
    if live == generation - 1:
        return "rotate"
    return "fresh"


def in_flight(item: Mapping[str, Any], generation: int) -> int:
    """What the item holds in flight for an admission in `generation`."""
    live = generation_in(item)
    if live is not None and live >= generation:
        return int_of(item, "fl")
    if live == generation - 1:
        return int_of(item, "fc")
    return 0


@dataclass
class Update:
    """An UpdateItem's parts, built up clause by clause."""

    sets: list[str] = field(default_factory=list)
    adds: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def expression(self) -> str:
        parts = []
        if self.sets:
            parts.append("SET " + ", ".join(self.sets))
        if self.adds:
            parts.append("ADD " + ", ".join(self.adds))
        return " ".join(parts)

    def condition(self) -> str:
        return " AND ".join(self.conditions)


def admit(update: Update, shape: Shape, generation: int, max_concurrent: int) -> None:
    """Count one request in flight, if fewer than `max_concurrent` are (>= 1: checked before)."""
    update.values.update({":one": attr_n(1), ":fg": attr_n(generation)})
    if shape == "same":
        update.adds += ["fl :one", "fc :one"]
        update.conditions.append("fg = :fg AND fl < :fmax")
        update.values[":fmax"] = attr_n(max_concurrent)
    elif shape == "rotate":
        # fl and fp before fc: the same result whether SET reads the old item (DynamoDB) or not
        update.sets += ["fl = fc + :one", "fp = fc", "fc = :one", "fg = :fg"]
        update.conditions.append("fg = :fgp AND fc < :fmax")
        update.values.update({":fgp": attr_n(generation - 1), ":fmax": attr_n(max_concurrent)})
    else:
        update.sets += ["fg = :fg", "fc = :one", "fp = :fzero", "fl = :one"]
        update.conditions.append("(attribute_not_exists(fg) OR fg < :fgp)")
        update.values.update({":fgp": attr_n(generation - 1), ":fzero": attr_n(0)})


Release = Literal["fc", "fp"]


def release_of(item: Mapping[str, Any], generation: int) -> Release | None:
    """Where the item still holds a request counted in `generation`; None: dropped already."""
    live = generation_in(item)
    if live == generation:
        return "fc"
    if live == generation + 1:
        return "fp"
    return None


def release(update: Update, where: Release, generation: int) -> None:
    update.adds += ["fl :fout", f"{where} :fout"]
    update.conditions.append("fg = :fgr")
    update.values.update({":fout": attr_n(-1), ":fgr": attr_n(generation if where == "fc" else generation + 1)})
