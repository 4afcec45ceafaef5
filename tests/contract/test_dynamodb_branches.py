"""The DynamoDB adapter's rare branches, driven through the fault proxy in front
of moto and through offset clocks: conflict retries, a window opened by a container whose clock is
ahead, an admission that does not settle, a refusal for no known limit, pagination, and limits of
zero. Each asserts what a caller sees and what reached the store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from chatgw.access.keys import Limits, new_key
from chatgw.access.limits import minute_window, month_of
from chatgw.errors import StoreUnavailable
from chatgw.store import UsageEvent, UsageQuery
from chatgw.store.dynamodb.call import RetryPolicy
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from tests.support.dynamo import Tables
from tests.support.faulty_proxy import (
    CONFLICT,
    Fault,
    FaultyProxy,
    condition_failed,
    faulty_proxy,
    operation,
    page_limit,
)

BASE = datetime.now(UTC).replace(day=10, hour=12, minute=0, second=0, microsecond=0)
WINDOW = minute_window(BASE)


@pytest.fixture
def proxy(dynamo_tables: Tables) -> Iterator[FaultyProxy]:
    with faulty_proxy(dynamo_tables.endpoint) as made:
        yield made


def _store(endpoint: str, tables: Tables) -> DynamoStore:
    client = make_client(
        endpoint_url=endpoint, region="us-east-1", connect_timeout=30, read_timeout=30
    )  # no timeout under load: faults are injected
    return DynamoStore(client, tables.keys, tables.usage, retry=RetryPolicy(sleep=lambda _s: None))


@pytest.fixture
def store(proxy: FaultyProxy, dynamo_tables: Tables) -> Iterator[DynamoStore]:
    made = _store(proxy.endpoint, dynamo_tables)
    yield made
    made.close()


def _event(key_id: str, rid: str, at: datetime = BASE, tokens: int = 5) -> UsageEvent:
    return UsageEvent(key_id, rid, at, "m", "echo", tokens, tokens, "ok", False, 3)


# conflict retries -------------------------------------------------------------------------


def test_admission_meeting_a_transaction_is_retried(store: DynamoStore, proxy: FaultyProxy) -> None:
    conflicts = Fault(operation("UpdateItem"), answer=CONFLICT, times=2)
    with proxy.injecting(conflicts):
        admission = store.admit("abcdefgh0001", Limits(requests_per_minute=5), BASE)
    assert admission.admitted and admission.requests_used == 1  # counted once, not three times
    assert proxy.seen.count("UpdateItem") == 3 and conflicts.times == 0


def test_settlement_writes_meeting_conflicts_are_retried_and_counted_once(
    store: DynamoStore, proxy: FaultyProxy
) -> None:
    conflicts = Fault(operation("UpdateItem", "PutItem"), answer=CONFLICT, times=3)
    with proxy.injecting(conflicts):
        assert store.record_usage(_event("abcdefgh0002", "r1")) is True
    assert conflicts.times == 0 and len(proxy.seen) == 3 + 3  # put, month, day + three conflicts
    for period, value in (("month", month_of(BASE)), ("day", BASE.strftime("%Y-%m-%d"))):
        (row,) = store.usage(UsageQuery(period, value, key_id="abcdefgh0002"))  # type: ignore[arg-type]
        assert (row.requests, row.total_tokens) == (1, 10)


def test_conflicts_past_the_retries_are_store_unavailable(store: DynamoStore, proxy: FaultyProxy) -> None:
    always = Fault(operation("PutItem"), answer=CONFLICT)
    with proxy.injecting(always), pytest.raises(StoreUnavailable):
        store.record_usage(_event("abcdefgh0003", "r1"))
    assert proxy.seen == ["PutItem"] * store.retry.attempts  # bounded, and no aggregate without its event
    assert store.usage_events("abcdefgh0003") == []


# windows and clocks ---------------------------------------------------------------------------


def test_joining_a_window_opened_by_a_container_whose_clock_is_ahead(proxy: FaultyProxy, dynamo_tables: Tables) -> None:
    ahead, behind = _store(proxy.endpoint, dynamo_tables), _store(proxy.endpoint, dynamo_tables)
    limits = Limits(requests_per_minute=3)
    # `ahead`'s clock is 5 s into the next minute; `behind` still in this one.
    assert ahead.admit("abcdefgh0004", limits, BASE + timedelta(seconds=65)).requests_used == 1
    proxy.seen.clear()
    joined = behind.admit("abcdefgh0004", limits, BASE + timedelta(seconds=58))
    assert (joined.refused, joined.requests_used) == (None, 2)  # counted in the newer window
    assert proxy.seen.count("UpdateItem") == 2  # tried to open its own, learnt of the newer one
    # and that window's limit holds for both clocks
    assert behind.admit("abcdefgh0004", limits, BASE + timedelta(seconds=59)).requests_used == 3
    refused = ahead.admit("abcdefgh0004", limits, BASE + timedelta(seconds=66))
    assert refused.refused == "requests"
    ahead.close()
    behind.close()


def test_an_admission_that_never_settles_is_store_unavailable(store: DynamoStore, proxy: FaultyProxy) -> None:
    """Every try learns of a still newer window (clocks racing ahead): the store gives up after a
    bounded number of round trips instead of looping."""
    newer = Fault(
        operation("UpdateItem"),
        answer=lambda n: condition_failed({"win": {"N": str(WINDOW + 60 * (n + 1))}, "wreq": {"N": "0"}}),
    )
    with proxy.injecting(newer), pytest.raises(StoreUnavailable, match="did not settle"):
        store.admit("abcdefgh0005", Limits(requests_per_minute=5), BASE)
    assert proxy.seen.count("UpdateItem") == 4


def test_a_refusal_that_names_no_limit_is_store_unavailable(store: DynamoStore, proxy: FaultyProxy) -> None:
    """The condition failed, yet the old item is under every limit (an item written by something
    else, or a corrupt one): never guess, never let through."""
    under = condition_failed({"win": {"N": str(WINDOW)}, "wreq": {"N": "1"}, "wtok": {"N": "0"}})
    limits = Limits(requests_per_minute=5, tokens_per_minute=100)
    with proxy.injecting(Fault(operation("UpdateItem"), answer=under)), pytest.raises(StoreUnavailable, match="known"):
        store.admit("abcdefgh0006", limits, BASE)


@pytest.mark.parametrize(
    ("limits", "refused"),
    [
        (Limits(requests_per_minute=0), "requests"),
        (Limits(tokens_per_minute=0), "tokens"),
        (Limits(requests_per_minute=-1, monthly_token_budget=10), "requests"),
    ],
)
def test_a_limit_of_zero_refuses_without_a_store_call(
    store: DynamoStore, proxy: FaultyProxy, limits: Limits, refused: str
) -> None:
    proxy.seen.clear()
    assert store.admit("abcdefgh0007", limits, BASE).refused == refused
    assert proxy.seen == []


# pagination ---------------------------------------------------------------------------------


def test_scans_and_queries_follow_every_page(store: DynamoStore, proxy: FaultyProxy) -> None:
    records = [new_key(f"paged-{i}")[1] for i in range(5)]
    for record in records:
        store.create_key(record)
    kid = records[0].key_id
    for i in range(4):
        store.record_usage(_event(kid, f"r{i}", BASE + timedelta(seconds=i)))
        store.record_usage(_event(records[1].key_id, f"s{i}", BASE))
    proxy.seen.clear()
    with proxy.injecting(Fault(operation("Scan", "Query"), rewrite=page_limit(1))):
        listed = store.list_keys()
        events = store.usage_events(kid)
        everyone = store.usage(UsageQuery("month", month_of(BASE)))
        by_model = store.usage(UsageQuery("day", BASE.strftime("%Y-%m-%d"), key_id=kid, by_model=True))
    assert sorted(r.key_id for r in listed) == sorted(r.key_id for r in records)
    assert [e.request_id for e in events] == ["r0", "r1", "r2", "r3"]
    assert {(r.key_id, r.requests) for r in everyone} == {(kid, 4), (records[1].key_id, 4)}
    assert [(r.model, r.requests, r.total_tokens) for r in by_model] == [("m", 4, 40)]
    # one item per page (plus the last, empty, page): every path really paginated
    assert proxy.seen.count("Scan") >= len(records) + 1 + 2
    assert proxy.seen.count("Query") >= 4 + 1 + 1
