"""`chatgw keys create|update --shards N` (docs/store.md, "Hot keys"): the shard count is part of the key's limits,
shown, changed (with a new shard epoch: the change is exact, tests/contract/test_dynamodb_reshard.py),
cleared; on SQLite, which has no shards, a one-line error that changes nothing."""

from __future__ import annotations

import pytest

from tests.support.cli import Cli, cli

__all__ = ["cli"]  # the admin CLI fixture (SQLite and DynamoDB), used here by name


@pytest.mark.parametrize("cli", ["dynamodb"], indirect=True)
def test_shards_are_created_updated_and_cleared(cli: Cli) -> None:
    created = cli.json("keys", "create", "--name", "hot", "--rpm", "6000", "--shards", "16")
    key_id = created["key_id"]
    assert created["limits"]["shards"] == 16
    code, _, err = cli.run("keys", "update", key_id, "--shards", "32")
    assert code == 0, err
    assert cli.json("keys", "show", key_id)["limits"] == {"requests_per_minute": 6000, "shards": 32, "shard_epoch": 1}
    code, _, err = cli.run("keys", "update", key_id, "--monthly-tokens", "1000000", "--shards", "4")
    assert code == 0 and "not exact" not in err
    assert cli.json("keys", "show", key_id)["limits"]["shard_epoch"] == 2
    code, _, _ = cli.run("keys", "update", key_id, "--rpm", "7000")  # the same N: the same layout
    assert code == 0 and cli.json("keys", "show", key_id)["limits"]["shard_epoch"] == 2
    cli.run("keys", "update", key_id, "--shards", "none")
    limits = cli.json("keys", "show", key_id)["limits"]
    assert "shards" not in limits and limits["shard_epoch"] == 3


@pytest.mark.parametrize("cli", ["sqlite"], indirect=True)
def test_sqlite_refuses_shards_in_one_line(cli: Cli) -> None:
    code, _, err = cli.run("keys", "create", "--name", "hot", "--rpm", "60", "--shards", "4")
    assert code == 2 and err.count("\n") == 1 and "SQLite store keeps one counter per key" in err
    assert cli.json("keys", "list") == []
    key_id = cli.json("keys", "create", "--name", "cold", "--rpm", "60")["key_id"]
    for value in ("4", "none"):
        code, _, err = cli.run("keys", "update", key_id, "--rpm", "10", "--shards", value)
        assert code == 2 and err.count("\n") == 1 and "nothing changed" in err
    assert cli.json("keys", "show", key_id)["limits"] == {"requests_per_minute": 60}


@pytest.mark.parametrize("bad", ["0", "-2", "many"])
def test_a_shard_count_below_one_is_refused(cli: Cli, bad: str) -> None:
    with pytest.raises(SystemExit):
        cli.run("keys", "create", "--name", "hot", "--shards", bad)
