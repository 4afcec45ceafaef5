"""`chatgw keys create|update --shards N` (issue 13): the shard count is part of the key's limits,
shown, changed, cleared; a change on a key with a monthly budget says what it does to the budget."""

from __future__ import annotations

import pytest

from tests.unit.test_admin_cli import Cli, cli

__all__ = ["cli"]  # the admin CLI fixture (SQLite and DynamoDB), used here by name


def test_shards_are_created_updated_and_cleared(cli: Cli) -> None:
    created = cli.json("keys", "create", "--name", "hot", "--rpm", "6000", "--shards", "16")
    key_id = created["key_id"]
    assert created["limits"]["shards"] == 16
    code, _, err = cli.run("keys", "update", key_id, "--shards", "32")
    assert code == 0 and "not exact" not in err  # no budget: nothing to warn about
    assert cli.json("keys", "show", key_id)["limits"] == {"requests_per_minute": 6000, "shards": 32}
    code, _, err = cli.run("keys", "update", key_id, "--monthly-tokens", "1000000", "--shards", "4")
    assert code == 0 and "not exact for the monthly budget" in err
    cli.run("keys", "update", key_id, "--shards", "none")
    assert "shards" not in cli.json("keys", "show", key_id)["limits"]


@pytest.mark.parametrize("bad", ["0", "-2", "many"])
def test_a_shard_count_below_one_is_refused(cli: Cli, bad: str) -> None:
    with pytest.raises(SystemExit):
        cli.run("keys", "create", "--name", "hot", "--shards", bad)
