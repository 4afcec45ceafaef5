"""Building the container: a start that fails leaves nothing open behind it."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatgw import compose
from chatgw.catalog import CatalogError
from chatgw.settings import Settings
from chatgw.store.base import Store


def test_a_catalog_that_stops_the_start_closes_the_store_build_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Store] = []
    closed: list[Store] = []
    real_open = compose.open_store

    def open_and_watch(settings: Settings) -> Store:
        store = real_open(settings)
        real_close = store.close

        def close() -> None:
            closed.append(store)
            real_close()

        monkeypatch.setattr(store, "close", close)
        opened.append(store)
        return store

    monkeypatch.setattr(compose, "open_store", open_and_watch)
    settings = Settings.from_env({"CHATGW_STATE_DIR": str(tmp_path), "CHATGW_MODELS": '{"m": "not an object"}'})
    with pytest.raises(CatalogError, match="must be an object"):
        compose.build(settings)
    assert len(opened) == 1 and closed == opened
