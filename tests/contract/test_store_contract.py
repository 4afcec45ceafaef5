"""One contract for every Store adapter: SQLite on a temporary file, DynamoDB on a moto server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from chatgw.access.keys import Limits, new_key
from chatgw.access.limits import day_of, month_of
from chatgw.errors import StoreUnavailable
from chatgw.store import KeyExists, KeyNotFound, Store, UsageQuery, UsageRow
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from chatgw.store.sqlite import SqliteStore
from tests.support.store_contract import (
    BASE,
    PEPPER,
    Adapter,
    event,
    make_key,
    one_item_counters,
)
from tests.support.store_contract import adapter as adapter
from tests.support.store_contract import pytest_generate_tests as pytest_generate_tests
from tests.support.store_contract import store as store

# keys -----------------------------------------------------------------------------------


def test_key_round_trip_keeps_every_field(store: Store) -> None:
    _, record = make_key(
        store,
        owner="team-a",
        expires_at=BASE + timedelta(days=30),
        enabled=True,
        allowed_models=("gpt-*", "echo"),
        allow_streaming=False,
        limits=Limits(requests_per_minute=5, tokens_per_minute=1000, monthly_token_budget=10**6),
        tags={"env": "dev", "cost-center": "42"},
    )
    assert store.get_key(record.key_id) == record
    assert store.get_key("nosuchkey123") is None


def test_create_twice_is_key_exists(store: Store) -> None:
    _, record = make_key(store)
    with pytest.raises(KeyExists):
        store.create_key(record.with_changes(name="other"))
    assert store.get_key(record.key_id) == record


def test_list_save_delete(store: Store) -> None:
    records = sorted((make_key(store)[1] for _ in range(3)), key=lambda r: r.key_id)
    assert store.list_keys() == records
    changed = records[0].with_changes(enabled=False, name="renamed", limits=Limits(max_tokens_per_request=64))
    store.save_key(changed)
    assert store.get_key(changed.key_id) == changed
    assert store.delete_key(records[1].key_id) is True
    assert store.delete_key(records[1].key_id) is False
    assert [r.key_id for r in store.list_keys()] == [records[0].key_id, records[2].key_id]


def test_save_unknown_key_is_key_not_found(store: Store) -> None:
    _, record = new_key("ghost", pepper=PEPPER)
    with pytest.raises(KeyNotFound):
        store.save_key(record)
    assert store.get_key(record.key_id) is None


# admission ------------------------------------------------------------------------------


@one_item_counters
def test_requests_per_minute_refuses_then_rolls_over(store: Store) -> None:
    _, record = make_key(store)
    limits = Limits(requests_per_minute=2)
    first = store.admit(record.key_id, limits, BASE)
    second = store.admit(record.key_id, limits, BASE + timedelta(seconds=20))
    third = store.admit(record.key_id, limits, BASE + timedelta(seconds=59))
    assert (first.refused, first.requests_used) == (None, 1)
    assert (second.refused, second.requests_used) == (None, 2)
    assert (third.refused, third.requests_used) == ("requests", 2)
    next_minute = store.admit(record.key_id, limits, BASE + timedelta(seconds=60))
    assert (next_minute.refused, next_minute.requests_used) == (None, 1)


def test_refusal_does_not_count(store: Store) -> None:
    _, record = make_key(store)
    limits = Limits(requests_per_minute=1)
    assert store.admit(record.key_id, limits, BASE).admitted
    for _ in range(3):
        assert store.admit(record.key_id, limits, BASE).refused == "requests"
    # A looser limit for the same key (the operator raised it) sees one request counted, not four.
    assert store.admit(record.key_id, Limits(requests_per_minute=2), BASE).requests_used == 2


def test_keys_have_separate_counters(store: Store) -> None:
    _, a = make_key(store)
    _, b = make_key(store)
    limits = Limits(requests_per_minute=1)
    assert store.admit(a.key_id, limits, BASE).admitted
    assert store.admit(b.key_id, limits, BASE).admitted
    assert not store.admit(a.key_id, limits, BASE).admitted


@one_item_counters
def test_tokens_per_minute_counts_recorded_tokens(store: Store) -> None:
    _, record = make_key(store)
    limits = Limits(tokens_per_minute=100)
    assert store.admit(record.key_id, limits, BASE).admitted
    store.record_usage(event(record.key_id, "r1", at=BASE + timedelta(seconds=5), prompt=70, completion=40))
    refused = store.admit(record.key_id, limits, BASE + timedelta(seconds=30))
    assert (refused.refused, refused.tokens_used) == ("tokens", 110)
    later = store.admit(record.key_id, limits, BASE + timedelta(seconds=61))
    assert (later.refused, later.tokens_used) == (None, 0)


@one_item_counters
def test_monthly_budget_refuses_until_next_month(store: Store) -> None:
    _, record = make_key(store)
    limits = Limits(requests_per_minute=100, monthly_token_budget=150)
    assert store.admit(record.key_id, limits, BASE).admitted
    store.record_usage(event(record.key_id, "r1", prompt=100, completion=20))
    assert store.admit(record.key_id, limits, BASE + timedelta(minutes=5)).admitted
    store.record_usage(event(record.key_id, "r2", at=BASE + timedelta(minutes=5), prompt=20, completion=10))
    refused = store.admit(record.key_id, limits, BASE + timedelta(minutes=6))
    assert (refused.refused, refused.month_tokens_used) == ("budget", 150)
    next_month = (BASE.replace(day=1) + timedelta(days=32)).replace(day=2)
    admitted = store.admit(record.key_id, limits, next_month)
    assert (admitted.refused, admitted.month_tokens_used) == (None, 0)


@one_item_counters
def test_refusal_names_the_first_limit_reached(adapter: Adapter) -> None:
    """One order on every adapter (limits.decide): requests, then tokens, then budget. The
    expectations are written per adapter on purpose, so that a difference cannot hide."""
    store = adapter.store
    _, record = make_key(store)
    assert store.admit(record.key_id, Limits(requests_per_minute=5), BASE).admitted
    store.record_usage(event(record.key_id, "r1", prompt=500, completion=500))
    at = BASE + timedelta(seconds=1)
    every = Limits(requests_per_minute=1, tokens_per_minute=100, monthly_token_budget=100)
    tokens_and_budget = Limits(tokens_per_minute=100, monthly_token_budget=100)
    expected = {
        "sqlite": {"every": "requests", "tokens_and_budget": "tokens", "budget": "budget"},
        "dynamodb": {"every": "requests", "tokens_and_budget": "tokens", "budget": "budget"},
    }[adapter.kind]
    assert store.admit(record.key_id, every, at).refused == expected["every"]
    assert store.admit(record.key_id, tokens_and_budget, at).refused == expected["tokens_and_budget"]
    assert store.admit(record.key_id, Limits(monthly_token_budget=1000), at).refused == expected["budget"]
    # A reservation that can never fit is named by the same order.
    never_fits = store.admit(record.key_id, every, at, request_id="huge", reserve=10_000)
    assert never_fits.refused == expected["every"]
    never_fits = store.admit(record.key_id, tokens_and_budget, at, request_id="huge", reserve=10_000)
    assert never_fits.refused == expected["tokens_and_budget"]


def test_concurrent_admissions_admit_exactly_the_remaining(store: Store) -> None:
    _, record = make_key(store)
    limits = Limits(requests_per_minute=8)
    for _ in range(3):
        assert store.admit(record.key_id, limits, BASE).admitted
    # 5 requests left in this minute; 50 threads race for them.
    barrier = threading.Barrier(50)
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            barrier.wait()
            admitted = store.admit(record.key_id, limits, BASE + timedelta(seconds=30)).admitted
            with lock:
                results.append(admitted)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(results) == 5
    assert len(results) == 50


# usage ledger ---------------------------------------------------------------------------


def test_record_usage_is_idempotent_by_request_id(store: Store) -> None:
    _, record = make_key(store)
    ev = event(record.key_id, "req-1", prompt=7, completion=3)
    assert store.record_usage(ev) is True
    assert store.record_usage(ev) is False
    assert store.record_usage(event(record.key_id, "req-1", prompt=99, completion=99)) is False
    assert store.usage_events(record.key_id) == [ev]
    month = store.usage(UsageQuery("month", month_of(BASE), key_id=record.key_id))
    assert month == [UsageRow(record.key_id, month_of(BASE), 1, 7, 3)]


def test_usage_events_keep_every_field_in_time_order(store: Store) -> None:
    _, record = make_key(store)
    later = event(
        record.key_id,
        "b",
        at=BASE + timedelta(seconds=3),
        status="client_closed",
        streamed=True,
        ttft_ms=40,
        estimated=True,
    )
    earlier = event(record.key_id, "a", at=BASE, status="error", prompt=4, completion=0)
    store.record_usage(later)
    store.record_usage(earlier)
    assert store.usage_events(record.key_id) == [earlier, later]
    assert store.usage_events("otherkey1234") == []


def test_aggregates_per_day_month_and_model(store: Store) -> None:
    _, a = make_key(store)
    _, b = make_key(store)
    next_day = BASE + timedelta(days=1)
    store.record_usage(event(a.key_id, "1", model="echo", prompt=10, completion=1))
    store.record_usage(event(a.key_id, "2", model="gpt-x", prompt=20, completion=2))
    store.record_usage(event(a.key_id, "3", at=next_day, model="echo", prompt=30, completion=3))
    store.record_usage(event(b.key_id, "4", model="echo", prompt=40, completion=4))
    day, month = day_of(BASE), month_of(BASE)

    assert store.usage(UsageQuery("day", day, key_id=a.key_id)) == [UsageRow(a.key_id, day, 2, 30, 3)]
    assert store.usage(UsageQuery("month", month, key_id=a.key_id)) == [UsageRow(a.key_id, month, 3, 60, 6)]
    assert store.usage(UsageQuery("month", month, key_id=a.key_id, by_model=True)) == [
        UsageRow(a.key_id, month, 2, 40, 4, model="echo", door="chat"),
        UsageRow(a.key_id, month, 1, 20, 2, model="gpt-x", door="chat"),
    ]
    assert store.usage(UsageQuery("day", day_of(next_day), key_id=a.key_id, by_model=True)) == [
        UsageRow(a.key_id, day_of(next_day), 1, 30, 3, model="echo", door="chat")
    ]
    everyone = store.usage(UsageQuery("day", day))
    assert everyone == sorted(
        [UsageRow(a.key_id, day, 2, 30, 3), UsageRow(b.key_id, day, 1, 40, 4)], key=lambda r: r.key_id
    )
    assert len(store.usage(UsageQuery("month", month, by_model=True))) == 3
    assert store.usage(UsageQuery("month", "1999-01")) == []


def test_per_model_rows_are_per_door_too(store: Store) -> None:
    """Each front door's use of a model is its own row; the key's totals hold every door."""
    _, a = make_key(store)
    store.record_usage(event(a.key_id, "1", model="echo", prompt=10, completion=1))
    store.record_usage(event(a.key_id, "2", model="echo", prompt=20, completion=2, door="messages"))
    store.record_usage(event(a.key_id, "3", model="echo", prompt=30, completion=3, door="responses"))
    store.record_usage(event(a.key_id, "4", model="echo", prompt=40, completion=4, door="messages"))
    day = day_of(BASE)
    assert store.usage(UsageQuery("day", day, key_id=a.key_id)) == [UsageRow(a.key_id, day, 4, 100, 10)]
    assert store.usage(UsageQuery("day", day, key_id=a.key_id, by_model=True)) == [
        UsageRow(a.key_id, day, 1, 10, 1, model="echo", door="chat"),
        UsageRow(a.key_id, day, 2, 60, 6, model="echo", door="messages"),
        UsageRow(a.key_id, day, 1, 30, 3, model="echo", door="responses"),
    ]
    assert [e.door for e in store.usage_events(a.key_id)] == ["chat", "messages", "responses", "messages"]


def test_admission_alone_makes_no_usage_row(store: Store) -> None:
    _, record = make_key(store)
    store.admit(record.key_id, Limits(requests_per_minute=5), BASE)
    assert store.usage(UsageQuery("month", month_of(BASE), key_id=record.key_id)) == []
    assert store.usage(UsageQuery("month", month_of(BASE))) == []


def test_events_carry_their_expiry(adapter: Adapter) -> None:
    _, record = make_key(adapter.store)
    adapter.store.record_usage(event(record.key_id, "ttl-1"))
    assert adapter.expiry("ttl-1") == int((BASE + timedelta(days=30)).timestamp())


def test_no_secret_at_rest(adapter: Adapter) -> None:
    created = [make_key(adapter.store, tags={"k": "v"}) for _ in range(3)]
    for _key, record in created:
        adapter.store.admit(record.key_id, Limits(requests_per_minute=5), BASE)
        adapter.store.record_usage(event(record.key_id, f"req-{record.key_id}"))
    dump = adapter.raw_dump()
    for key, record in created:
        secret = key.rsplit("_", 1)[1]
        assert record.key_id in dump  # the dump does hold the data
        assert secret not in dump
        assert key not in dump


# an unreachable store -------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _down_dynamo(_: Path) -> Store:
    client = make_client(
        endpoint_url=f"http://127.0.0.1:{_closed_port()}",
        region="us-east-1",
        connect_timeout=0.2,
        read_timeout=0.2,
        max_attempts=1,
    )
    return DynamoStore(client, "keys", "usage")


def _closed_sqlite(tmp_path: Path) -> Store:
    store = SqliteStore(tmp_path / "chatgw.db")
    store.close()
    return store


@pytest.mark.parametrize("down", [_down_dynamo, _closed_sqlite], ids=["dynamodb", "sqlite"])
def test_unreachable_store_is_store_unavailable(down: Callable[[Path], Store], tmp_path: Path) -> None:
    store = down(tmp_path)
    _, record = new_key("x")
    calls: list[Callable[[], object]] = [
        lambda: store.get_key(record.key_id),
        lambda: store.create_key(record),
        lambda: store.list_keys(),
        lambda: store.save_key(record),
        lambda: store.delete_key(record.key_id),
        lambda: store.admit(record.key_id, Limits(requests_per_minute=1), BASE),
        lambda: store.record_usage(event(record.key_id, "r")),
        lambda: store.usage(UsageQuery("month", month_of(BASE))),
        lambda: store.usage_events(record.key_id),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable):
            call()


def test_unwritable_sqlite_path_is_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreUnavailable):
        SqliteStore(blocker / "state" / "chatgw.db")


def test_missing_dynamo_table_is_store_unavailable(moto_server: Any) -> None:
    client = make_client(endpoint_url=moto_server.endpoint, region="us-east-1")
    store = DynamoStore(client, "no-such-keys", "no-such-usage")
    with pytest.raises(StoreUnavailable):
        store.get_key("abcdefgh1234")
    store.close()
