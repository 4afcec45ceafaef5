"""Changing a key's shard count while a gateway serves it (docs/store.md, "Changing N"), end to end: `chatgw serve`
on DynamoDB (moto on loopback) keeps the old key record in its key cache, `chatgw keys update
--shards` runs meanwhile; in the minute of the change the gateway admits exactly what the rpm left
(it re-admits on the new layout when it meets a sealed item), and the usage report sums every request once."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chatgw.store.dynamodb.tables import make_client
from tests.support.dynamo import Tables
from tests.support.served import PEPPER, Served, ask, away_from_a_minute_boundary, burst, serve


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    env = {**os.environ, "CHATGW_KEY_PEPPER": PEPPER, "CHATGW_LOG_LEVEL": "DEBUG", "CHATGW_KEY_CACHE_SECONDS": "300"}
    for name in ("CHATGW_KEYS_TABLE", "CHATGW_USAGE_TABLE", "CHATGW_MODELS"):
        env.pop(name, None)
    tables = request.getfixturevalue("dynamo_tables")
    env["AWS_ENDPOINT_URL_DYNAMODB"] = tables.endpoint
    with serve(["--keys-table", tables.keys, "--usage-table", tables.usage], env, tmp_path) as served_:
        yield served_


def test_a_change_of_n_under_traffic_keeps_the_minute_exact_and_the_report_whole(
    served: Served, dynamo_tables: Tables
) -> None:
    created = served.cli("keys", "create", "--name", "hot", "--models", "echo", "--rpm", "8")
    key, key_id = created["key"], created["key_id"]
    client = served.client(key)
    away_from_a_minute_boundary(25)
    for i in range(3):  # the gateway caches the record (N=1) now, for longer than this test
        ask(client, f"before {i}")
    changed = served.cli("keys", "update", key_id, "--shards", "3")
    assert changed["limits"] == {"requests_per_minute": 8, "shards": 3, "shard_epoch": 1}

    outcomes = burst(client, "after", 12)
    assert outcomes.count("200") == 5  # 8 - 3: exact in the minute of the change
    deadline = time.monotonic() + 30  # settlements are written just after the answers (30 s bounds a bug)
    while True:
        rows = served.cli("usage", "--key", key_id)
        if (rows and rows[0]["requests"] == 8) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [r["requests"] for r in rows] == [8]
    # the gateway still held N=1: it met the sealed month item and admitted on the new layout's items
    reader = make_client(endpoint_url=dynamo_tables.endpoint, region="us-east-1")
    items = reader.query(
        TableName=dynamo_tables.usage,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :m)",
        ExpressionAttributeValues={":pk": {"S": f"KEY#{key_id}"}, ":m": {"S": f"M#{datetime.now(UTC):%Y-%m}"}},
        ConsistentRead=True,
    )["Items"]
    reader.close()
    requests = {i["sk"]["S"]: int(i.get("requests", {"N": "0"})["N"]) for i in items}
    assert sum(n for sk, n in requests.items() if "~1" in sk) == 5
    assert sum(n for sk, n in requests.items() if "~" not in sk) == 3
