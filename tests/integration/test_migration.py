"""State written by the release before reservations keeps working, with no migration step: a SQLite
state file and DynamoDB items written by that release's own code (tests/fixtures/release_1, made
by running commit 27b284b's stores: a key with every limit, one admission, two usage events) are
opened by today's gateway, which authenticates the old key, holds the old month's tokens against the
budget, serves, and reports old and new usage together."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatgw.cli.usage import usage_report
from chatgw.compose import Container, build
from chatgw.settings import Settings
from chatgw.store import UsageQuery
from tests.support.polling import eventually
from tests.support.servers import ThreadServer

RELEASE_1 = Path(__file__).resolve().parent.parent / "fixtures" / "release_1"
KEY = (RELEASE_1 / "key.txt").read_text().strip()
KEY_ID = KEY.split("_")[1]
LATER_THAT_MONTH = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
OLD_TOKENS = 130 + 70  # the two events of the fixture
BUDGET = 500


@pytest.fixture(params=["sqlite", "dynamodb"])
def upgraded(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Container]:
    settings = replace(settings, key_pepper="migration-pepper", key_cache_seconds=0)
    if request.param == "sqlite":
        settings.state_dir.mkdir(parents=True)
        db = sqlite3.connect(settings.state_dir / "chatgw.db")
        db.executescript((RELEASE_1 / "sqlite.sql").read_text())
        db.close()
        container = build(settings)
    else:
        from chatgw.store.dynamodb.store import DynamoStore
        from chatgw.store.dynamodb.tables import make_client

        tables = request.getfixturevalue("dynamo_tables")
        client = make_client(endpoint_url=tables.endpoint, region="us-east-1")
        items: dict[str, list[dict[str, Any]]] = json.loads((RELEASE_1 / "dynamodb.json").read_text())
        for table, rows in ((tables.keys, items["keys"]), (tables.usage, items["usage"])):
            for item in rows:
                client.put_item(TableName=table, Item=item)
        container = build(settings, store=DynamoStore(client, tables.keys, tables.usage))
    container.service.wall_clock = lambda: LATER_THAT_MONTH
    yield container
    container.store.close()


def chat(container: Container, max_tokens: int) -> Callable[[], httpx.Response]:
    body = {"model": "echo", "messages": [{"role": "user", "content": "still here"}], "max_tokens": max_tokens}

    def send() -> httpx.Response:
        with ThreadServer(container.app) as server:
            return httpx.post(
                server.base_url + "/v1/chat/completions", json=body, headers={"x-api-key": KEY}, timeout=10
            )

    return send


def test_state_of_the_previous_release_serves_and_reports(upgraded: Container) -> None:
    old = upgraded.store.usage_events(KEY_ID)
    assert [(e.request_id, e.served_model, e.booked_model, e.cost) for e in old] == [
        ("old-1", "", "gpt-x", None),
        ("old-2", "", "echo", None),
    ]
    # The old month's 200 tokens count against the budget of 500: a reservation of ~300 no longer fits.
    refused = chat(upgraded, 297)()
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
    served = chat(upgraded, 5)()
    assert served.status_code == 200, served.text
    new_tokens = served.json()["usage"]["total_tokens"]
    query = UsageQuery("month", "2026-11", key_id=KEY_ID)
    (row,) = eventually(
        lambda: [r for r in usage_report(upgraded.store, query, upgraded.settings) if r["requests"] == 3]
    )
    assert row["total_tokens"] == OLD_TOKENS + new_tokens and row["cached_tokens"] == 0
    by_model = usage_report(
        upgraded.store, UsageQuery("month", "2026-11", key_id=KEY_ID, by_model=True), upgraded.settings
    )
    assert {r["model"]: r["requests"] for r in by_model} == {"echo": 2, "gpt-x": 1}
