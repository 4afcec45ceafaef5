"""Write request units per chat request on DynamoDB, measured from what the adapter actually sends
(tests/support/write_units.py: item sizes per DynamoDB's rules, 1 KB rounding, transactions doubled, updates billed
on the larger of the item before and after)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatgw.access.keys import Limits, new_key
from chatgw.access.limits import LEASE_SECONDS, generation_of
from chatgw.catalog import Catalog, ModelEntry
from chatgw.compose import build
from chatgw.settings import Settings
from chatgw.store import UsageEvent
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from tests.fakes.backends import ScriptedBackend
from tests.support.asgi import CHAT, run
from tests.support.dynamo import Tables
from tests.support.write_units import WriteMeter, item_size, number_size, units

BASE = datetime.now(UTC).replace(day=10, hour=12, minute=0, second=0, microsecond=0)
EVERY_LIMIT = Limits(
    requests_per_minute=10_000,
    tokens_per_minute=1_000_000,
    monthly_token_budget=10**9,
    max_tokens_per_request=512,
    max_concurrent=100,
)
MAX_WRU = 4
"""Issue 13: at most 4 write request units per request. Before it: 11 (admission 1 + a
TransactWriteItems of 5 items under 1 KB, doubled)."""


@dataclass
class Metered:
    store: DynamoStore
    meter: WriteMeter


@pytest.fixture
def metered(dynamo_tables: Tables) -> Iterator[Metered]:
    client = make_client(endpoint_url=dynamo_tables.endpoint, region="us-east-1")
    reader = make_client(endpoint_url=dynamo_tables.endpoint, region="us-east-1")
    store = DynamoStore(client, dynamo_tables.keys, dynamo_tables.usage)
    yield Metered(store, WriteMeter(client, reader))
    store.close()
    reader.close()


def test_the_size_rules() -> None:
    assert number_size("7") == 2 and number_size("123") == 3 and number_size("1000000") == 2
    assert number_size("0") == 2 and number_size("-12.50") == 3
    item = {"pk": {"S": "KEY#ab"}, "n": {"N": "42"}, "ok": {"BOOL": True}, "m": {"M": {"a": {"S": "xy"}}}}
    assert item_size(item) == (2 + 6) + (1 + 2) + (2 + 1) + (1 + 3 + 1 + 1 + 2)
    assert item_size({"l": {"L": [{"N": "1"}, {"S": ""}]}}) == 1 + 3 + (1 + 2) + (1 + 0)
    assert [units(s) for s in (0, 1, 1024, 1025, 4096)] == [1, 1, 1, 2, 4]


def _event(key_id: str, at: datetime) -> UsageEvent:
    return UsageEvent(key_id, uuid.uuid4().hex, at, "gpt-4o-mini", "openai", 1_234, 567, "ok", True, 1_830, 412)


def test_write_units_per_request_for_a_key_with_every_limit(metered: Metered) -> None:
    _, record = new_key("wru", limits=EVERY_LIMIT)
    metered.store.create_key(record)
    metered.meter.take()
    per_request = []
    for i in range(5):  # the first request of the month and of the minute, then steady state
        at = BASE + timedelta(seconds=7 * i)
        event = _event(record.key_id, at)
        admission = metered.store.admit(record.key_id, EVERY_LIMIT, at, request_id=event.request_id)
        assert admission.admitted and admission.in_flight == 1  # counted in flight, and released below
        assert metered.store.record_usage(event)
        per_request.append(metered.meter.take())
    for billed in per_request:
        # admission; the event's put; the month and the day item (in either order: sent at once)
        assert billed[:2] == [("UpdateItem", 1), ("PutItem", 1)]
        assert sorted(billed[2:]) == [("UpdateItem", 1), ("UpdateItem", 1)]
        assert sum(u for _, u in billed) <= MAX_WRU
        assert "TransactWriteItems" not in dict(billed)
    # writes per item per request: the month item takes the admission and the settlement
    month_item = (f"KEY#{record.key_id}", f"M#{BASE:%Y-%m}")
    day_item = (f"KEY#{record.key_id}", f"D#{BASE:%Y-%m-%d}")
    assert metered.meter.per_item[month_item] == 2 * len(per_request)
    assert metered.meter.per_item[day_item] == len(per_request)
    item = metered.store.client.get_item(
        TableName=metered.store.usage_table, Key={"pk": {"S": month_item[0]}, "sk": {"S": month_item[1]}}
    )["Item"]
    assert (item["fl"], item["fc"]) == ({"N": "0"}, {"N": "0"})  # every request released at its settlement
    assert item_size(item) < 1024


def test_a_refusal_is_billed_too(metered: Metered) -> None:
    limits = Limits(requests_per_minute=1)
    assert metered.store.admit("abcdefgh0wru", limits, BASE).admitted
    metered.meter.take()
    assert not metered.store.admit("abcdefgh0wru", limits, BASE + timedelta(seconds=1)).admitted
    assert metered.meter.take() == [("UpdateItem", 1)]


def test_write_units_through_the_gateway(metered: Metered, settings: Settings) -> None:
    """The same figure for real requests through the service (key cache warm, buffered and streamed).
    The per-model attributes of the day item stay under 1 KB with a few models: see docs/store.md."""
    key, record = new_key("wru-gw", limits=EVERY_LIMIT)
    metered.store.create_key(record)
    catalog = Catalog({"m": ModelEntry("m", ScriptedBackend(["a", " b"]), "scripted")})
    container = build(replace(settings, key_cache_seconds=60), store=metered.store, catalog=catalog)
    headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
    metered.meter.take()
    for stream in (False, True, False):
        body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "stream": stream}
        assert run(container.app, "POST", CHAT, headers, json.dumps(body).encode()).status == 200
        billed = metered.meter.take()
        assert sorted(billed) == [("PutItem", 1), ("UpdateItem", 1), ("UpdateItem", 1), ("UpdateItem", 1)]
        assert sum(u for _, u in billed) <= MAX_WRU


def test_write_units_stay_at_four_across_a_generation_and_a_month(metered: Metered) -> None:
    """A warm container whose in-flight generation or month moved on guesses the right shape of
    update from what it saw (rotate, or a new month's item): still 4 WRU per request."""
    _, record = new_key("wru-lease", limits=EVERY_LIMIT)
    metered.store.create_key(record)
    start = datetime.fromtimestamp(generation_of(BASE) * LEASE_SECONDS + 30, UTC)
    next_month = (BASE.replace(day=1, hour=0) + timedelta(days=40)).replace(day=1)
    # a day is 90 generations, so a month starts with a generation: the new month's item is fresh
    month_end = [next_month - timedelta(seconds=10), next_month + timedelta(seconds=5)]
    moments = [start, start + timedelta(seconds=LEASE_SECONDS), *month_end]
    metered.meter.take()
    for at in moments:
        event = _event(record.key_id, at)
        assert metered.store.admit(record.key_id, EVERY_LIMIT, at, request_id=event.request_id).admitted
        assert metered.store.record_usage(event)
        billed = metered.meter.take()
        assert billed[0] == ("UpdateItem", 1) and sum(u for _, u in billed) == MAX_WRU, (at, billed)
