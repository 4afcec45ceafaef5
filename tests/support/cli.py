"""The operator's CLI in process, on SQLite or on a loopback moto server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chatgw.cli import main as chatgw_cli
from chatgw.cli.stores import open_store
from chatgw.settings import Settings
from chatgw.store import Store

PEPPER = "cli-pepper"


class Cli:
    def __init__(self, store_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        self.store_args = store_args
        self.capsys = capsys

    def run(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = chatgw_cli.main([*argv, *self.store_args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self.run(*argv, "--json")
        assert code == 0, err
        return json.loads(out)

    def store(self) -> Store:
        parsed = chatgw_cli.parser().parse_args(["keys", "list", *self.store_args])
        return open_store(parsed, Settings.from_env())


@pytest.fixture(params=["sqlite", "dynamodb"])
def cli(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    for name in ("CHATGW_KEYS_TABLE", "CHATGW_USAGE_TABLE", "CHATGW_MODELS", "CHATGW_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHATGW_KEY_PEPPER", PEPPER)
    if request.param == "sqlite":
        (tmp_path / "state").mkdir()  # a reader refuses a --state-dir that is no folder (a typo)
        return Cli(["--state-dir", str(tmp_path / "state")], capsys)
    tables = request.getfixturevalue("dynamo_tables")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", tables.endpoint)
    return Cli(["--keys-table", tables.keys, "--usage-table", tables.usage], capsys)
