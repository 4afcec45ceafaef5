"""The operator's CLI (`chatgw keys|usage|tables`) against SQLite and a loopback moto server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chatgw.access.keys import parse_key, secret_matches
from chatgw.access.limits import day_of, month_of
from chatgw.cli import main as chatgw_cli
from chatgw.settings import Settings
from chatgw.store import Store, UsageEvent
from chatgw.store.dynamodb.tables import make_client
from tests.support.cfn_template import moto_stack_outputs
from tests.support.cli import PEPPER, Cli
from tests.support.cli import cli as cli


def _hash_of(cli: Cli, key_id: str) -> str:
    store = cli.store()
    record = store.get_key(key_id)
    store.close()
    assert record is not None
    return record.secret_hash


def _pepper_of(cli: Cli, key_id: str) -> bytes:
    """The pepper the key's record names: the state folder's current one (SQLite), else the legacy one."""
    from chatgw.cli.peppers import pepper_source

    store = cli.store()
    record = store.get_key(key_id)
    store.close()
    assert record is not None
    parsed = chatgw_cli.parser().parse_args(["keys", "list", *cli.store_args])
    pepper = pepper_source(parsed, Settings.from_env(), create=False).load().get(record.pepper_version)
    assert pepper is not None
    assert (pepper == PEPPER.encode()) == (record.pepper_version is None)
    return pepper


def test_create_prints_the_key_once_and_stores_only_its_hash(cli: Cli) -> None:
    code, out, _ = cli.run("keys", "create", "--name", "app")
    assert code == 0
    (key,) = [w for w in out.split() if w.startswith("cgw_")]
    assert out.count(key) == 1
    key_id, secret = parse_key(key)
    assert secret_matches(secret, _hash_of(cli, key_id), _pepper_of(cli, key_id))


def test_create_with_every_option(cli: Cli) -> None:
    created = cli.json(
        "keys", "create", "--name", "app", "--owner", "team-a", "--models", "echo", "gpt-*",
        "--no-streaming", "--rpm", "2", "--tpm", "1000", "--monthly-tokens", "50000",
        "--max-tokens", "256", "--expires", "30d", "--tag", "env=dev", "--tag", "cc=42",
    )  # fmt: skip
    assert parse_key(created["key"])[0] == created["key_id"]
    shown = cli.json("keys", "show", created["key_id"])
    assert "key" not in shown and "secret_hash" not in shown
    assert shown["name"] == "app" and shown["owner"] == "team-a"
    assert shown["allowed_models"] == ["echo", "gpt-*"]
    assert shown["allow_streaming"] is False
    assert shown["limits"] == {
        "requests_per_minute": 2,
        "tokens_per_minute": 1000,
        "monthly_token_budget": 50000,
        "max_tokens_per_request": 256,
    }
    assert shown["tags"] == {"env": "dev", "cc": "42"}
    expires = datetime.fromisoformat(shown["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)
    listed = cli.json("keys", "list")
    assert [k["key_id"] for k in listed] == [created["key_id"]]


def test_expires_accepts_iso_dates(cli: Cli) -> None:
    created = cli.json("keys", "create", "--name", "a", "--expires", "2031-01-02")
    assert created["expires_at"] == "2031-01-02T00:00:00+00:00"


def test_update_disable_enable(cli: Cli) -> None:
    key_id = cli.json("keys", "create", "--name", "a", "--rpm", "2", "--tpm", "9", "--tag", "x=1")["key_id"]
    updated = cli.json(
        "keys", "update", key_id, "--name", "b", "--rpm", "5", "--tpm", "none", "--max-tokens", "64",
        "--tag", "y=2", "--untag", "x", "--no-streaming", "--models", "echo", "--expires", "12h",
    )  # fmt: skip
    assert updated["name"] == "b"
    assert updated["limits"] == {"requests_per_minute": 5, "max_tokens_per_request": 64}
    assert updated["tags"] == {"y": "2"}
    assert updated["allow_streaming"] is False and updated["allowed_models"] == ["echo"]
    assert cli.json("keys", "update", key_id, "--expires", "never")["expires_at"] is None
    assert cli.json("keys", "disable", key_id)["enabled"] is False
    assert cli.json("keys", "show", key_id)["enabled"] is False
    assert cli.json("keys", "enable", key_id)["enabled"] is True


def test_rotate_replaces_the_secret(cli: Cli) -> None:
    old = cli.json("keys", "create", "--name", "a")["key"]
    key_id, old_secret = parse_key(old)
    rotated = cli.json("keys", "rotate", key_id)
    new_id, new_secret = parse_key(rotated["key"])
    assert new_id == key_id and new_secret != old_secret
    stored = _hash_of(cli, key_id)
    assert secret_matches(new_secret, stored, _pepper_of(cli, key_id))
    assert not secret_matches(old_secret, stored, _pepper_of(cli, key_id))


def test_delete(cli: Cli) -> None:
    key_id = cli.json("keys", "create", "--name", "a")["key_id"]
    assert cli.json("keys", "delete", key_id) == {"key_id": key_id, "deleted": True}
    code, _, err = cli.run("keys", "delete", key_id)
    assert code == 1 and f"no such key: {key_id}" in err
    assert cli.json("keys", "list") == []


@pytest.mark.parametrize("command", ["show", "update", "disable", "enable", "rotate", "delete"])
def test_unknown_ids_are_clear_errors(cli: Cli, command: str) -> None:
    for key_id in ("abcdefgh1234", "NOT-AN-ID"):
        code, out, err = cli.run("keys", command, key_id)
        assert code == 1
        assert out == ""
        assert "no such key" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "create", "--name", "a", "--rpm", "0"],
        ["keys", "create", "--name", "a", "--tpm", "many"],
        ["keys", "create"],
        ["usage", "--month", "2026-11", "--day", "2026-11-01"],
    ],
)
def test_bad_flags_exit_2(cli: Cli, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.run(*argv)
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "create", "--name", "a", "--expires", "next tuesday"],
        ["keys", "create", "--name", "a", "--tag", "novalue"],
        ["usage", "--month", "2026-13"],
        ["usage", "--day", "yesterday"],
    ],
)
def test_bad_values_exit_2_with_a_message(cli: Cli, argv: list[str]) -> None:
    code, out, err = cli.run(*argv)
    assert code == 2 and out == "" and err.startswith("chatgw: ")


def test_conflicting_store_options_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = chatgw_cli.main(["keys", "list", "--state-dir", str(tmp_path), "--keys-table", "k", "--usage-table", "u"])
    assert code == 2
    assert chatgw_cli.main(["keys", "list", "--keys-table", "k"]) == 2
    assert "go together" in capsys.readouterr().err


def _record(
    store: Store, key_id: str, request_id: str, at: datetime, model: str, p: int, c: int, cost: float | None = None
) -> None:
    store.record_usage(UsageEvent(key_id, request_id, at, model, "echo", p, c, "ok", False, 5, cost=cost))


def test_usage_reports(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    a = cli.json("keys", "create", "--name", "a")["key_id"]
    b = cli.json("keys", "create", "--name", "b")["key_id"]
    now = datetime.now(UTC)
    earlier = now.replace(day=1, hour=0, minute=0, second=1)
    store = cli.store()
    _record(store, a, "1", now, "echo", 10, 5, cost=(10 * 1 + 5 * 2) / 1e6)
    _record(store, a, "2", now, "gpt-x", 100, 50)
    _record(store, b, "3", earlier, "echo", 1, 1, cost=3 / 1e6)
    store.close()

    details = {"cached_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0}
    rows = cli.json("usage")
    assert rows == sorted(
        [
            {"key_id": a, "period": month_of(now), "requests": 2, "prompt_tokens": 110,
             "completion_tokens": 55, "total_tokens": 165, **details, "cost": pytest.approx(20 / 1e6)},
            {"key_id": b, "period": month_of(now), "requests": 1, "prompt_tokens": 1,
             "completion_tokens": 1, "total_tokens": 2, **details, "cost": pytest.approx(3 / 1e6)},
        ],
        key=lambda r: r["key_id"],
    )  # fmt: skip
    assert cli.json("usage", "--key", a, "--month", month_of(now)) == [r for r in rows if r["key_id"] == a]
    by_model = cli.json("usage", "--key", a, "--day", day_of(now), "--by-model")
    assert [(r["model"], r["total_tokens"]) for r in by_model] == [("echo", 15), ("gpt-x", 150)]
    assert cli.json("usage", "--month", "1999-01") == []

    # Costs are the ones stored with the events: today's catalog prices change nothing.
    prices = {"echo": {"backend": "echo", "price_per_million_tokens": {"input": 100.0, "output": 200.0}}}
    monkeypatch.setenv("CHATGW_MODELS", json.dumps(prices))
    priced = {r["model"]: r.get("cost") for r in cli.json("usage", "--key", a, "--by-model")}
    assert priced == {"echo": pytest.approx((10 * 1 + 5 * 2) / 1e6), "gpt-x": None}
    totals = {r["key_id"]: r.get("cost") for r in cli.json("usage")}
    assert totals == {a: pytest.approx(20 / 1e6), b: pytest.approx(3 / 1e6)}

    code, out, _ = cli.run("usage", "--by-model")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "KEY_ID", "PERIOD", "MODEL", "DOOR", "REQUESTS", "PROMPT_TOKENS", "COMPLETION_TOKENS", "TOTAL_TOKENS", "COST",
    ]  # fmt: skip
    assert len(out.splitlines()) == 4


def test_tables_create_against_an_endpoint(
    moto_server: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_server.endpoint)
    keys, usage = f"k-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    argv = ["tables", "create", "--keys-table", keys, "--usage-table", usage, "--region", "us-east-1"]
    assert chatgw_cli.main(argv) == 0
    assert f"created  {keys}" in capsys.readouterr().out
    assert chatgw_cli.main(argv) == 0
    assert f"exists   {keys}" in capsys.readouterr().out
    client = make_client(region="us-east-1")
    for table in (keys, usage):
        described = client.describe_table(TableName=table)["Table"]
        assert {k["AttributeName"]: k["KeyType"] for k in described["KeySchema"]} == {
            "pk": "HASH",
            "sk": "RANGE",
        }
        assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        backups = client.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
        assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    ttl = client.describe_time_to_live(TableName=usage)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    # The new tables work for the CLI straight away.
    assert chatgw_cli.main(["keys", "create", "--name", "x", "--keys-table", keys, "--usage-table", usage]) == 0


def test_stack_outputs_name_the_tables(
    moto_server: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDFORMATION", moto_server.endpoint)
    suffix = uuid.uuid4().hex[:8]
    table: Callable[[str], dict[str, Any]] = lambda name: {  # noqa: E731
        "Type": "AWS::DynamoDB::Table",
        "Properties": {
            "TableName": name,
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
        },
    }
    template = {
        "Resources": {"Keys": table(f"sk-{suffix}"), "Usage": table(f"su-{suffix}")},
        # template.yaml's own outputs (KeysTableName, UsageTableName), resolved to these tables
        "Outputs": moto_stack_outputs({"KeysTable": f"sk-{suffix}", "UsageTable": f"su-{suffix}"}),
    }
    boto3.client("cloudformation", region_name="us-east-1").create_stack(
        StackName=f"chatgw-{suffix}", TemplateBody=json.dumps(template)
    )
    argv = ["keys", "create", "--name", "x", "--json", "--stack", f"chatgw-{suffix}", "--region", "us-east-1"]
    assert chatgw_cli.main(argv) == 0
    key_id = json.loads(capsys.readouterr().out)["key_id"]
    items = make_client(region="us-east-1").scan(TableName=f"sk-{suffix}")["Items"]
    assert [i["key_id"]["S"] for i in items] == [key_id]
    assert chatgw_cli.main(["keys", "list", "--stack", "no-such-stack", "--region", "us-east-1"]) == 1
    assert "no-such-stack" in capsys.readouterr().err


def test_replay_records_logged_usage_events_once(cli: Cli, tmp_path: Path) -> None:
    key_id = cli.json("keys", "create", "--name", "a")["key_id"]
    at = datetime.now(UTC)
    logged = [
        UsageEvent(key_id, f"req-{i}", at, "echo", "echo", 3, 4, "ok", True, 9, ttft_ms=2).to_log() for i in range(2)
    ]
    log = tmp_path / "lambda.log"
    lines = [json.dumps({"msg": "usage_event", "level": "ERROR", "usage_event": e}) for e in logged]
    log.write_text("START RequestId: x\n" + "\n".join(f"2026-01-01T00:00:00Z\t{line}" for line in lines) + "\n")
    assert cli.json("replay", str(log)) == {"recorded": 2, "already_recorded": 0}
    assert cli.json("replay", str(log)) == {"recorded": 0, "already_recorded": 2}
    (row,) = cli.json("usage", "--key", key_id)
    assert (row["requests"], row["total_tokens"]) == (2, 14)
    log.write_text('{"msg": "usage_event", "usage_event": {"key_id": "x"}}\n')
    code, _, err = cli.run("replay", str(log))
    assert code == 1 and "not a usage_event line" in err
