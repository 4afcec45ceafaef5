"""Requests in flight (`max_concurrent`) on every Store adapter: counted in the
admission's atomic step, released at settlement exactly once, and a count never released (a
container killed mid-request) dropped by the two-generation lease (docs/store.md, "Requests in
flight"). Time is the `now` each call is given: no test waits on the clock."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest

from chatgw.access.keys import Limits
from chatgw.access.limits import LEASE_SECONDS, generation_of
from chatgw.store import Store
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from tests.support.dynamo import Tables
from tests.support.store_contract import BASE, Adapter, adapter, event, make_key, pytest_generate_tests, store

__all__ = ["adapter", "pytest_generate_tests", "store"]  # the contract's fixtures and parametrization, by name

L = timedelta(seconds=LEASE_SECONDS)
# 100 s into a generation (and BASE's month: the lease tests stay inside it)
START = datetime.fromtimestamp(generation_of(BASE) * LEASE_SECONDS + 100, BASE.tzinfo)


def test_concurrent_admissions_never_exceed_max_concurrent(store: Store) -> None:
    """30 threads at once against max_concurrent=4: exactly 4 in flight (3 shards: shares 2+1+1)."""
    _, record = make_key(store)
    limits = Limits(max_concurrent=4)
    answers: dict[str, str | None] = {}
    lock = threading.Lock()

    def one(i: int) -> None:
        admission = store.admit(record.key_id, limits, START, request_id=f"c{i}")
        with lock:
            answers[f"c{i}"] = admission.refused

    threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    admitted = [rid for rid, refused in answers.items() if refused is None]
    assert len(admitted) == 4
    assert {refused for refused in answers.values() if refused is not None} == {"concurrent"}
    # settling two of them makes room for exactly two more
    for rid in admitted[:2]:
        assert store.record_usage(event(record.key_id, rid, at=START))
    later = [store.admit(record.key_id, limits, START + timedelta(seconds=5), request_id=f"n{i}") for i in range(4)]
    assert [a.refused for a in later] == [None, None, "concurrent", "concurrent"]


def test_settlement_releases_the_slot_whatever_the_outcome(store: Store) -> None:
    _, record = make_key(store)
    limits = Limits(max_concurrent=2)
    at = START
    for rid in ("a", "b"):
        assert store.admit(record.key_id, limits, at, request_id=rid).admitted
    refused = store.admit(record.key_id, limits, at, request_id="c")
    assert (refused.refused, refused.in_flight) == ("concurrent", 2)
    # answered, failed, client left: each settlement frees its slot
    for rid, status in (("a", "ok"), ("b", "error")):
        assert store.record_usage(event(record.key_id, rid, at=at, status=status))
        assert store.admit(record.key_id, limits, at + timedelta(seconds=1), request_id=f"after-{rid}").admitted
    assert store.record_usage(event(record.key_id, "after-a", at=at + timedelta(seconds=1), status="client_closed"))
    assert store.admit(record.key_id, limits, at + timedelta(seconds=2), request_id="d").admitted
    assert store.admit(record.key_id, limits, at + timedelta(seconds=2), request_id="e").refused == "concurrent"


def test_a_replayed_settlement_releases_once(store: Store) -> None:
    _, record = make_key(store)
    limits = Limits(max_concurrent=2)
    for rid in ("a", "b"):
        assert store.admit(record.key_id, limits, START, request_id=rid).admitted
    settled = event(record.key_id, "a", at=START)
    assert store.record_usage(settled) is True
    assert store.record_usage(settled) is False  # `chatgw replay` of the same line, or a retry
    assert store.admit(record.key_id, limits, START, request_id="c").admitted
    # a second release would have made room for this one
    assert store.admit(record.key_id, limits, START, request_id="d").refused == "concurrent"


def test_a_leaked_slot_expires_by_generation(store: Store) -> None:
    """A request whose container died never settles: its slot is held for at least L and at most 2 L
    after its admission; a settlement arriving after that releases nothing of the newer requests."""
    _, record = make_key(store)
    limits = Limits(max_concurrent=1)
    assert store.admit(record.key_id, limits, START, request_id="lost").generation == generation_of(START)
    for held in (timedelta(seconds=1), L - timedelta(seconds=1)):
        assert store.admit(record.key_id, limits, START + held, request_id="x").refused == "concurrent"
    later = START + 2 * L
    fresh = store.admit(record.key_id, limits, later, request_id="new")
    assert (fresh.refused, fresh.in_flight) == (None, 1)
    assert store.record_usage(event(record.key_id, "lost", at=START))  # the lost request, settled late
    assert store.admit(record.key_id, limits, later + timedelta(seconds=1), request_id="y").refused == "concurrent"


def test_a_request_admitted_in_the_previous_generation_is_released_there(store: Store) -> None:
    """Admitted at the end of one generation, settled after the next one began (and was opened by
    another admission): it is released from the previous generation's count."""
    _, record = make_key(store)
    limits = Limits(max_concurrent=2)
    end_of_generation = START + L - timedelta(seconds=110)  # 10 s before the next generation
    assert store.admit(record.key_id, limits, end_of_generation, request_id="old").admitted
    next_generation = end_of_generation + timedelta(seconds=20)
    assert generation_of(next_generation) == generation_of(end_of_generation) + 1
    assert store.admit(record.key_id, limits, next_generation, request_id="new").admitted
    assert store.admit(record.key_id, limits, next_generation, request_id="x").refused == "concurrent"
    assert store.record_usage(event(record.key_id, "old", at=end_of_generation))
    assert store.admit(record.key_id, limits, next_generation, request_id="y").admitted
    assert store.admit(record.key_id, limits, next_generation, request_id="z").refused == "concurrent"


def test_the_month_boundary(adapter: Adapter) -> None:
    """SQLite counts a key's requests in flight whatever their month; DynamoDB keeps them on the
    month item, so for one request lifetime after 00:00 UTC on the 1st a key may have up to 2 x
    max_concurrent in flight (the documented bound), and the old month's are released there."""
    store = adapter.store
    _, record = make_key(store)
    limits = Limits(max_concurrent=1)
    next_month = (BASE.replace(day=1, hour=0) + timedelta(days=40)).replace(day=1)
    last_minute = next_month - timedelta(seconds=30)
    assert store.admit(record.key_id, limits, last_minute, request_id="old").admitted
    first_minute = last_minute + timedelta(seconds=60)
    expected = {"sqlite": "concurrent", "dynamodb": None}[adapter.kind]
    assert store.admit(record.key_id, limits, first_minute, request_id="new").refused == expected
    assert store.record_usage(event(record.key_id, "old", at=last_minute))
    if expected is None:
        assert store.record_usage(event(record.key_id, "new", at=first_minute))
    assert store.admit(record.key_id, limits, first_minute, request_id="next").admitted


def test_a_key_without_the_limit_counts_nothing(store: Store) -> None:
    _, record = make_key(store)
    answers = [store.admit(record.key_id, Limits(requests_per_minute=100), START, request_id=f"r{i}") for i in range(5)]
    assert [(a.admitted, a.in_flight, a.generation) for a in answers] == [(True, 0, -1)] * 5


# DynamoDB only ---------------------------------------------------------------------------------


@pytest.fixture
def dynamo(dynamo_tables: Tables) -> DynamoStore:
    return DynamoStore(
        make_client(endpoint_url=dynamo_tables.endpoint, region="us-east-1"), dynamo_tables.keys, dynamo_tables.usage
    )


def _in_flight_per_shard(store: DynamoStore, key_id: str, shards: int) -> list[int]:
    counts = []
    for s in range(shards):
        item = store.client.get_item(
            TableName=store.usage_table,
            Key={"pk": {"S": f"KEY#{key_id}"}, "sk": {"S": f"M#{START:%Y-%m}" + (f"@{s}" if s else "")}},
            ConsistentRead=True,
        ).get("Item", {})
        counts.append(int(item["fl"]["N"]) if "fl" in item else 0)
    return counts


def test_a_sharded_key_holds_its_max_in_shares_that_sum_to_it(dynamo: DynamoStore) -> None:
    limits = Limits(max_concurrent=5, shards=3)
    answers = [dynamo.admit("hotkey0inflt", limits, START, request_id=f"s{i}") for i in range(8)]
    assert [a.admitted for a in answers] == [True] * 5 + [False] * 3
    assert {a.refused for a in answers[5:]} == {"concurrent"} and answers[-1].in_flight == 5
    assert sorted(_in_flight_per_shard(dynamo, "hotkey0inflt", 3)) == [1, 2, 2]  # shares 2, 2, 1
    for i in range(5):  # each settlement releases on the shard that admitted it
        assert dynamo.record_usage(event("hotkey0inflt", f"s{i}", at=START))
    assert _in_flight_per_shard(dynamo, "hotkey0inflt", 3) == [0, 0, 0]
    dynamo.close()


def test_a_settlement_in_another_process_releases_nothing_and_the_lease_frees_it(
    dynamo: DynamoStore, dynamo_tables: Tables
) -> None:
    """`chatgw replay` runs in another process, which does not know the request's generation: it
    settles the tokens and leaves the count to the lease (never a release twice, nor on the wrong
    shard)."""
    other = DynamoStore(
        make_client(endpoint_url=dynamo_tables.endpoint, region="us-east-1"), dynamo_tables.keys, dynamo_tables.usage
    )
    limits = Limits(max_concurrent=1)
    assert dynamo.admit("replaykey001", limits, START, request_id="a").admitted
    assert other.record_usage(event("replaykey001", "a", at=START))
    assert dynamo.record_usage(event("replaykey001", "a", at=START)) is False  # the gate: no release
    assert dynamo.admit("replaykey001", limits, START, request_id="b").refused == "concurrent"
    assert dynamo.admit("replaykey001", limits, START + 2 * L, request_id="c").admitted
    other.close()
    dynamo.close()


def test_no_request_may_outlive_the_in_flight_lease() -> None:
    """A request's count is dropped two generations after its admission; so no request may live longer
    than Lambda's 900 s, inside Lambda or out (CHATGW_REQUEST_TIMEOUT_S is refused above it)."""
    from chatgw.access.limits import LEASE_SECONDS
    from chatgw.settings import MAX_REQUEST_TIMEOUT_S, Settings, SettingsError

    assert MAX_REQUEST_TIMEOUT_S < LEASE_SECONDS
    assert Settings.from_env({"CHATGW_REQUEST_TIMEOUT_S": "900"}).request_timeout_s == 900
    with pytest.raises(SettingsError, match="CHATGW_REQUEST_TIMEOUT_S must be <= 900"):
        Settings.from_env({"CHATGW_REQUEST_TIMEOUT_S": "901"})
