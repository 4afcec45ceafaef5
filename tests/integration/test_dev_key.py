"""`chatgw serve` and `chatgw invoke` make a development key in their own SQLite store, but never in
DynamoDB unless asked (--dev-key), and never replace the dev-key file of another store."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatgw.cli import main as cli
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from tests.support.dynamo import Tables

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dynamo_args(dynamo_tables: Tables, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    for name in ("CHATGW_KEYS_TABLE", "CHATGW_USAGE_TABLE", "CHATGW_MODELS", "CHATGW_PEPPER_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamo_tables.endpoint)
    monkeypatch.setenv("CHATGW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CHATGW_LOG_LEVEL", "WARNING")
    return ["--keys-table", dynamo_tables.keys, "--usage-table", dynamo_tables.usage]


def keys_in(tables: Tables) -> int:
    store = DynamoStore(make_client(endpoint_url=tables.endpoint, region="us-east-1"), tables.keys, tables.usage)
    try:
        return len(store.list_keys())
    finally:
        store.close()


def test_invoke_on_dynamodb_writes_no_key_unless_asked(
    dynamo_args: list[str], dynamo_tables: Tables, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "dev-key").write_text("cgw_aaaaaaaaaaaa_sqlitestoreskeyxxxxxxxxxxxxxxxxxxxxx\n")
    event = str(ROOT / "events" / "rest-v1-chat.json")

    assert cli.main(["invoke", event, *dynamo_args]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the catalog's warning line, when logging reaches this stderr
    assert last == "chatgw: no development key for this DynamoDB store: pass --dev-key to create one"
    assert keys_in(dynamo_tables) == 0

    assert cli.main(["invoke", event, "--dev-key", *dynamo_args]) == 0
    assert '"statusCode": 200' in capsys.readouterr().out
    assert keys_in(dynamo_tables) == 1
    own = state / f"dev-key.{dynamo_tables.keys}"
    assert own.read_text().startswith("cgw_")
    assert (state / "dev-key").read_text().startswith("cgw_aaaaaaaaaaaa_")  # the SQLite store's file is untouched

    assert cli.main(["invoke", event, *dynamo_args]) == 0  # the key made before is reused, nothing new
    assert keys_in(dynamo_tables) == 1


def test_the_sqlite_store_still_makes_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    state.mkdir()  # invoke refuses a --state-dir that is no folder (a typo); serve would make it
    assert cli.main(["invoke", str(ROOT / "events" / "rest-v1-chat.json"), "--state-dir", str(state)]) == 0
    assert '"statusCode": 200' in capsys.readouterr().out
    assert (state / "dev-key").read_text().startswith("cgw_")
    assert [p.name for p in state.glob("dev-key*")] == ["dev-key"]
