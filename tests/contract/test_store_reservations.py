"""Reservations on every Store adapter: admission reserves a request's worst case in the same atomic
step as its count, settlement replaces the reservation by the actual tokens exactly once, and a
request is refused only when used + reserved + its own reservation would pass the limit."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from chatgw.access.keys import Limits
from chatgw.store import Store, UsageQuery
from tests.support.store_contract import (
    BASE,
    Adapter,
    adapter,
    event,
    make_key,
    one_item_counters,
    pytest_generate_tests,
    store,
)

__all__ = ["adapter", "pytest_generate_tests", "store"]  # the contract's fixtures and parametrization, by name


@one_item_counters  # reservations above a shard's share: see test_dynamodb_shards.py
def test_a_request_is_refused_only_when_its_reservation_would_pass_the_limit(store: Store) -> None:
    _, record = make_key(store)
    limits = Limits(monthly_token_budget=100)
    first = store.admit(record.key_id, limits, BASE, request_id="a", reserve=60)
    assert (first.refused, first.month_tokens_used) == (None, 60)
    assert store.admit(record.key_id, limits, BASE, request_id="b", reserve=41).refused == "budget"
    second = store.admit(record.key_id, limits, BASE, request_id="c", reserve=40)  # 60 + 40 = 100: fits
    assert (second.refused, second.month_tokens_used) == (None, 100)
    assert store.admit(record.key_id, limits, BASE, request_id="d", reserve=1).refused == "budget"


@one_item_counters  # reservations above a shard's share: see test_dynamodb_shards.py
def test_settlement_replaces_the_reservation_by_the_actual_tokens(store: Store) -> None:
    _, record = make_key(store)
    limits = Limits(tokens_per_minute=100, monthly_token_budget=1000)
    assert store.admit(record.key_id, limits, BASE, request_id="a", reserve=80).admitted
    assert store.admit(record.key_id, limits, BASE, request_id="b", reserve=30).refused == "tokens"
    assert store.record_usage(event(record.key_id, "a", prompt=10, completion=5, reserved_tokens=80))
    after = store.admit(record.key_id, limits, BASE + timedelta(seconds=1), request_id="b", reserve=30)
    assert (after.refused, after.tokens_used, after.month_tokens_used) == (None, 45, 45)


@one_item_counters  # reservations above a shard's share: see test_dynamodb_shards.py
def test_a_replayed_settlement_counts_once(store: Store) -> None:
    _, record = make_key(store)
    limits = Limits(monthly_token_budget=100)
    assert store.admit(record.key_id, limits, BASE, request_id="a", reserve=90).admitted
    settled = event(record.key_id, "a", prompt=10, completion=10, reserved_tokens=90)
    assert store.record_usage(settled) is True
    assert store.record_usage(settled) is False  # `chatgw replay` of the same usage_event line
    now = store.admit(record.key_id, limits, BASE, request_id="b", reserve=80)
    assert (now.refused, now.month_tokens_used) == (None, 100)


@one_item_counters  # reservations above a shard's share: see test_dynamodb_shards.py
def test_failed_and_abandoned_requests_settle_too(store: Store) -> None:
    _, record = make_key(store)
    limits = Limits(monthly_token_budget=100)
    assert store.admit(record.key_id, limits, BASE, request_id="err", reserve=100).admitted
    store.record_usage(event(record.key_id, "err", prompt=0, completion=0, status="error", reserved_tokens=100))
    assert store.admit(record.key_id, limits, BASE, request_id="gone", reserve=100).admitted
    store.record_usage(
        event(record.key_id, "gone", prompt=7, completion=3, status="client_closed", reserved_tokens=100)
    )
    assert store.admit(record.key_id, limits, BASE, request_id="next", reserve=90).month_tokens_used == 100


@one_item_counters  # reservations above a shard's share: see test_dynamodb_shards.py
def test_a_settlement_after_the_next_minute_opened_leaves_that_minute_alone(adapter: Adapter) -> None:
    """A long stream admitted in minute 0 settles after a request opened minute 1: minute 1 holds
    only its own reservation, on both adapters, and the month gets the actual tokens."""
    store = adapter.store
    _, record = make_key(store)
    limits = Limits(tokens_per_minute=100, monthly_token_budget=10_000)
    assert store.admit(record.key_id, limits, BASE + timedelta(seconds=50), request_id="long", reserve=90).admitted
    minute_1 = BASE + timedelta(seconds=65)
    assert store.admit(record.key_id, limits, minute_1, request_id="short", reserve=50).admitted
    late = event(record.key_id, "long", at=BASE + timedelta(seconds=50), prompt=40, completion=40, reserved_tokens=90)
    assert store.record_usage(late)
    fits = store.admit(record.key_id, limits, minute_1 + timedelta(seconds=1), request_id="third", reserve=50)
    assert (fits.refused, fits.tokens_used, fits.month_tokens_used) == (None, 100, 80 + 50 + 50)
    assert store.admit(record.key_id, limits, minute_1 + timedelta(seconds=2), request_id="x", reserve=1).refused == (
        "tokens"
    )


def test_fifty_concurrent_reservations_never_pass_the_budget(store: Store) -> None:
    _, record = make_key(store)
    limits = Limits(monthly_token_budget=100)
    results: list[bool] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        admitted = store.admit(record.key_id, limits, BASE, request_id=f"r{i}", reserve=30).admitted
        with lock:
            results.append(admitted)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 3  # 3 x 30 <= 100 < 4 x 30


def test_events_and_aggregates_keep_served_model_details_and_cost(store: Store) -> None:
    _, record = make_key(store)
    fallback = event(
        record.key_id, "f1", model="primary", prompt=100, completion=40, served_model="backup",
        cached_tokens=60, cache_write_tokens=10, reasoning_tokens=25, cost=0.000123456789,
    )  # fmt: skip
    unpriced = event(record.key_id, "f2", model="backup", prompt=1, completion=1)
    assert store.record_usage(fallback) and store.record_usage(unpriced)
    assert store.usage_events(record.key_id)[0] == fallback
    month = BASE.strftime("%Y-%m")
    (total,) = store.usage(UsageQuery("month", month, key_id=record.key_id))
    assert (total.requests, total.cached_tokens, total.cache_write_tokens, total.reasoning_tokens) == (2, 60, 10, 25)
    assert total.cost == pytest.approx(0.000123456789)
    (per_model,) = store.usage(UsageQuery("month", month, key_id=record.key_id, by_model=True))
    assert (per_model.model, per_model.requests, per_model.prompt_tokens) == ("backup", 2, 101)
    assert store.usage(UsageQuery("day", "2000-01-01", key_id=record.key_id)) == []


@one_item_counters  # reservations above a shard's share: see test_dynamodb_shards.py
def test_a_reservation_never_settled_is_held_until_its_month_ends(store: Store) -> None:
    """A container that dies between admission and settlement: the error stays on the refusing side,
    for the month only."""
    _, record = make_key(store)
    limits = Limits(monthly_token_budget=100)
    assert store.admit(record.key_id, limits, BASE, request_id="lost", reserve=100).admitted
    assert store.admit(record.key_id, limits, BASE + timedelta(days=1), request_id="x", reserve=1).refused == "budget"
    next_month = (BASE.replace(day=1) + timedelta(days=40)).replace(day=2)
    fresh = store.admit(record.key_id, limits, next_month, request_id="y", reserve=100)
    assert (fresh.refused, fresh.month_tokens_used) == (None, 100)
