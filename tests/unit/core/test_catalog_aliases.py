"""Catalog aliases: more names for one entry (Claude Code asks for dated model names)."""

from __future__ import annotations

import json

import pytest

from chatgw.backends import BackendDeps, CatalogError
from chatgw.catalog import load_catalog


def test_an_alias_reaches_its_entry_and_a_missing_name_stays_missing() -> None:
    catalog = load_catalog(
        json.dumps({"echo": {"backend": "echo", "aliases": ["claude-haiku-4-5-20251001"]}}), BackendDeps()
    )
    assert catalog.get("claude-haiku-4-5-20251001").name == "echo"
    assert [e.name for e in catalog.chain("claude-haiku-4-5-20251001")] == ["echo"]
    with pytest.raises(Exception, match="`claude-haiku-4-5` does not exist"):
        catalog.get("claude-haiku-4-5")


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"a": {"backend": "echo", "aliases": "b"}}, "field 'aliases' must be a list"),
        ({"a": {"backend": "echo", "aliases": ["b"]}, "b": {"backend": "echo"}}, "alias 'b' is the name of a model"),
        (
            {"a": {"backend": "echo", "aliases": ["x"]}, "b": {"backend": "echo", "aliases": ["x"]}},
            "alias 'x' is also an alias of 'a'",
        ),
    ],
)
def test_an_alias_names_one_entry(models: dict[str, object], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        load_catalog(json.dumps(models), BackendDeps())
