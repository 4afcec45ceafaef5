"""Hot keys on DynamoDB (docs/store.md, "Hot keys"): a key's counters over N shard items, each with its share
of the limits. Never over-admission; a refusal only when no shard has room; the settlement goes to
the shard that admitted; reports sum the shards; the write count per item per request."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from chatgw.access.keys import Limits, new_key
from chatgw.access.limits import month_of
from chatgw.store import UsageEvent, UsageQuery
from chatgw.store.dynamodb.shards import share
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from tests.support.dynamo import Tables
from tests.support.write_units import WriteMeter

BASE = datetime.now(UTC).replace(day=10, hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def store(dynamo_tables: Tables) -> Iterator[DynamoStore]:
    made = DynamoStore(
        make_client(endpoint_url=dynamo_tables.endpoint, region="us-east-1"), dynamo_tables.keys, dynamo_tables.usage
    )
    yield made
    made.close()


def _event(key_id: str, rid: str, tokens: int, reserved: int = 0, model: str = "m") -> UsageEvent:
    return UsageEvent(
        key_id, rid, BASE + timedelta(seconds=1), model, "echo", tokens, 0, "ok", False, 3, reserved_tokens=reserved
    )


def test_shares_add_up_to_the_limit() -> None:
    for limit in (1, 2, 7, 100, 1001):
        for shards in (1, 2, 3, 8):
            assert sum(share(limit, shards, s) or 0 for s in range(shards)) == limit


def test_requests_per_minute_is_exact_over_the_shards(store: DynamoStore) -> None:
    """Refused only when every request slot of the minute is used, whichever shards they are on."""
    limits = Limits(requests_per_minute=7, shards=3)
    answers = [store.admit("hotkey000001", limits, BASE + timedelta(seconds=i), request_id=f"r{i}") for i in range(10)]
    assert [a.admitted for a in answers] == [True] * 7 + [False] * 3
    assert {a.refused for a in answers[7:]} == {"requests"}
    assert answers[-1].requests_used == 7  # a refusal read every shard: the whole key's count
    assert {a.shard for a in answers[:7]} == {0, 1, 2}


def test_concurrent_admissions_never_pass_the_limit(store: DynamoStore) -> None:
    limits = Limits(requests_per_minute=5, shards=4)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: store.admit("hotkey000002", limits, BASE, request_id=f"c{i}"), range(24)))
    assert sum(a.admitted for a in answers) == 5


def test_reservations_never_pass_the_limit_and_the_wrong_refusal_bound(store: DynamoStore) -> None:
    """tpm 100 over 3 shards (34, 33, 33), each request reserving 20: one fits per shard. The 4th is
    refused with 40 tokens left in all: the bound is N x need (3 x 20 = 60) left, spread too thin."""
    limits = Limits(tokens_per_minute=100, shards=3)
    answers = [store.admit("hotkey000003", limits, BASE, request_id=f"t{i}", reserve=20) for i in range(5)]
    admitted = sum(a.admitted for a in answers)
    assert admitted == 3 and 20 * admitted <= 100
    assert answers[3].refused == "tokens" and 100 - answers[3].tokens_used < 3 * 20


def test_settlement_goes_to_the_admitting_shard_and_reports_sum_the_shards(
    store: DynamoStore, dynamo_tables: Tables
) -> None:
    reader = make_client(endpoint_url=dynamo_tables.endpoint, region="us-east-1")
    meter = WriteMeter(store.client, reader)
    limits = Limits(requests_per_minute=1000, tokens_per_minute=10**6, monthly_token_budget=10**9, shards=4)
    key_id = "hotkey000004"
    requests = 24
    per_request: list[Counter[str]] = []
    for i in range(requests):
        rid = uuid.uuid4().hex
        admission = store.admit(key_id, limits, BASE, request_id=rid, reserve=50)
        assert admission.admitted
        assert store.record_usage(_event(key_id, rid, 10 + i, reserved=50, model=f"m{i % 2}"))
        writes = meter.per_item.copy()
        meter.per_item.clear()
        per_request.append(Counter({sk: n for (_, sk), n in writes.items()}))
        # every write of the request went to its shard: 2 on its month item, 1 on its day item, 1 event
        tail = f"@{admission.shard}" if admission.shard else ""
        month_item, day_item = f"M#{BASE:%Y-%m}{tail}", f"D#{BASE + timedelta(seconds=1):%Y-%m-%d}{tail}"
        assert writes[(f"KEY#{key_id}", month_item)] == 2
        assert writes[(f"KEY#{key_id}", day_item)] == 1
        assert sum(writes.values()) == 4
    # the reservations were all replaced by the actual tokens: the shards' committed sum is exact
    (month,) = store.usage(UsageQuery("month", month_of(BASE), key_id=key_id))
    expected = sum(10 + i for i in range(requests))
    assert (month.requests, month.total_tokens) == (requests, expected)
    (day,) = store.usage(UsageQuery("day", f"{BASE:%Y-%m-%d}", key_id=key_id))
    assert (day.requests, day.total_tokens) == (requests, expected)
    by_model = store.usage(UsageQuery("month", month_of(BASE), key_id=key_id, by_model=True))
    assert [(r.model, r.requests) for r in by_model] == [("m0", requests // 2), ("m1", requests // 2)]
    everyone = store.usage(UsageQuery("month", month_of(BASE)))
    assert [(r.key_id, r.requests) for r in everyone] == [(key_id, requests)]
    committed = 0
    for s in range(4):
        item = reader.get_item(
            TableName=dynamo_tables.usage,
            Key={"pk": {"S": f"KEY#{key_id}"}, "sk": {"S": f"M#{BASE:%Y-%m}" + (f"@{s}" if s else "")}},
        ).get("Item")
        committed += int(item["total_tokens"]["N"]) if item else 0
    assert committed == expected
    reader.close()


def test_the_shard_count_is_part_of_the_key_record(store: DynamoStore) -> None:
    _, record = new_key("hot", limits=Limits(requests_per_minute=10, shards=8))
    store.create_key(record)
    fetched = store.get_key(record.key_id)
    assert fetched is not None and fetched.limits.shards == 8


def test_a_replayed_settlement_on_a_sharded_key_counts_once(store: DynamoStore) -> None:
    limits = Limits(monthly_token_budget=3000, shards=3)
    assert store.admit("hotkey000005", limits, BASE, request_id="once", reserve=900).admitted
    event = _event("hotkey000005", "once", 40, reserved=900)
    assert store.record_usage(event) is True
    assert store.record_usage(event) is False  # a replay, in this or another container
    (month,) = store.usage(UsageQuery("month", month_of(BASE), key_id="hotkey000005"))
    assert (month.requests, month.total_tokens) == (1, 40)
    # the 900 reserved are released: three more reservations of 900 fit again, one per shard
    assert all(
        store.admit("hotkey000005", limits, BASE, request_id=f"again{i}", reserve=900).admitted for i in range(3)
    )
