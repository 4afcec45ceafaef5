from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from chatgw.access.keys import new_key
from chatgw.catalog import Catalog, ModelEntry
from chatgw.compose import Container, build
from chatgw.settings import Settings
from tests.fakes.backends import ScriptedBackend

BODY_LIMIT = 64 * 1024


@dataclass
class Fuzzed:
    """One gateway shared by the examples of a fuzz test: echo and a scripted model, a key for
    everything and a key that may only use `echo` without streaming."""

    container: Container
    key: str
    narrow_key: str

    @property
    def app(self) -> object:
        return self.container.app


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
