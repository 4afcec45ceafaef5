"""The store the settings name; the SQLite path never imports boto3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chatgw.errors import StoreUnavailable
from chatgw.settings import Settings
from chatgw.store import open_from_settings
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.sqlite import SqliteStore


def test_tables_select_dynamodb() -> None:
    store = open_from_settings(Settings(keys_table="k", usage_table="u", usage_ttl_days=7), region="eu-west-1")
    assert isinstance(store, DynamoStore)
    assert (store.keys_table, store.usage_table) == ("k", "u")
    assert store.usage_ttl.days == 7
    store.close()


def test_otherwise_sqlite_in_the_state_dir(tmp_path: Path) -> None:
    store = open_from_settings(Settings(state_dir=tmp_path / "state"))
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "state" / "chatgw.db"
    store.close()


def test_sqlite_path_does_not_import_boto3(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from chatgw.settings import Settings; "
        "from chatgw.store import open_from_settings; "
        f"open_from_settings(Settings(state_dir=Path({str(tmp_path)!r}))).close(); "
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_no_region_is_a_clear_store_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(StoreUnavailable, match="region"):
        open_from_settings(Settings(keys_table="k", usage_table="u"))
