from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from chatgw.access.keys import new_key
from chatgw.catalog import Catalog, ModelEntry
from chatgw.compose import build
from chatgw.settings import Settings
from tests.fakes.backends import ScriptedBackend
from tests.support.fuzz import BODY_LIMIT, Fuzzed


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    settings = replace(
        Settings(), state_dir=tmp_path_factory.mktemp("fuzz"), log_level="CRITICAL", max_body_bytes=BODY_LIMIT
    )
    base = build(settings)
    entries = {e.name: e for e in base.catalog.entries()}
    entries["scripted"] = ModelEntry("scripted", ScriptedBackend(["a", " b"]), "scripted")
    container = build(settings, store=base.store, catalog=Catalog(entries))
    key, record = new_key("fuzz")
    container.store.create_key(record)
    narrow, narrow_record = new_key("narrow", allowed_models=("echo",), allow_streaming=False)
    container.store.create_key(narrow_record)
    yield Fuzzed(container, key, narrow)
    container.store.close()
