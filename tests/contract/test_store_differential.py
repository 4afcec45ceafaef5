"""Both adapters decide alike: random request sequences, in the service's order (admit, then
record the admitted request's tokens at its start time), give the same admissions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatgw.access.keys import Limits
from chatgw.store import UsageEvent
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from chatgw.store.sqlite import SqliteStore

BASE = datetime.now(UTC).replace(day=10, hour=12, minute=0, second=0, microsecond=0)

limits_st = st.builds(
    Limits,
    requests_per_minute=st.one_of(st.none(), st.integers(1, 4)),
    tokens_per_minute=st.one_of(st.none(), st.integers(1, 60)),
    monthly_token_budget=st.one_of(st.none(), st.integers(1, 200)),
    max_concurrent=st.one_of(st.none(), st.integers(1, 3)),
).filter(lambda limits: limits.needs_admission)
steps_st = st.lists(st.tuples(st.integers(0, 45), st.integers(0, 30)), min_size=1, max_size=25)


@pytest.mark.slow  # 25 random schedules on moto (10 s on a busy 2-core machine): `make test`, not `make unit`
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limits=limits_st, steps=steps_st)
def test_sqlite_and_dynamodb_admit_alike(
    limits: Limits, steps: list[tuple[int, int]], dynamo_tables: Any, tmp_path: Path
) -> None:
    key_id = uuid.uuid4().hex[:12]
    sqlite = SqliteStore(tmp_path / f"{key_id}.db")
    dynamo = DynamoStore(make_client(endpoint_url=dynamo_tables.endpoint), dynamo_tables.keys, dynamo_tables.usage)
    now = BASE
    try:
        for i, (advance_s, tokens) in enumerate(steps):
            now += timedelta(seconds=advance_s)
            decisions = [store.admit(key_id, limits, now) for store in (sqlite, dynamo)]
            assert decisions[0] == decisions[1], (i, now)
            if decisions[0].admitted:
                event = UsageEvent(key_id, f"r{i}", now, "echo", "echo", tokens, tokens // 2, "ok", False, 1)
                assert sqlite.record_usage(event) and dynamo.record_usage(event)
    finally:
        sqlite.close()
        dynamo.close()


# Separate admission and settlement, at different times, through two "containers" per store (two
# store instances on the same data), as the service does: admit (reserving a worst case) when a
# request starts, settle (its event, at its admission time) whenever it ends, possibly after other
# requests opened the next minute. Requests left open run past the in-flight lease (30 steps of up to
# 40 s: 1,200 s > L = 960 s), so both adapters must drop their counts alike.
admit_st = st.tuples(st.just("admit"), st.integers(0, 40), st.integers(0, 1), st.integers(0, 40))
settle_st = st.tuples(st.just("settle"), st.integers(0, 40), st.integers(0, 1), st.integers(0, 1000))
ops_st = st.lists(st.one_of(admit_st, settle_st), min_size=1, max_size=30)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limits=limits_st, ops=ops_st)
def test_admission_and_late_settlement_decide_alike_across_containers(
    limits: Limits, ops: list[tuple[str, int, int, int]], dynamo_tables: Any, tmp_path: Path
) -> None:
    key_id = uuid.uuid4().hex[:12]
    path = tmp_path / f"{key_id}.db"
    sqlites = [SqliteStore(path), SqliteStore(path)]
    dynamos = [
        DynamoStore(make_client(endpoint_url=dynamo_tables.endpoint), dynamo_tables.keys, dynamo_tables.usage)
        for _ in range(2)
    ]
    now = BASE
    open_requests: list[tuple[str, datetime, int, int]] = []
    try:
        for i, (op, advance_s, container, amount) in enumerate(ops):
            now += timedelta(seconds=advance_s)
            if op == "admit":
                request_id = f"r{i}"
                decisions = [
                    stores[container].admit(key_id, limits, now, request_id=request_id, reserve=amount)
                    for stores in (sqlites, dynamos)
                ]
                assert decisions[0] == decisions[1], (i, now)
                if decisions[0].admitted:
                    open_requests.append((request_id, now, amount, container))
            elif open_requests:
                request_id, admitted_at, reserved, admitted_by = open_requests.pop(amount % len(open_requests))
                if limits.max_concurrent is not None:
                    # a request is settled by the container that admitted it (a DynamoDB container
                    # remembers where it counted the request in flight; another one leaves it to the lease)
                    container = admitted_by
                actual = amount % (reserved + 6)  # may pass its reservation a little (a prompt estimate low)
                event = UsageEvent(
                    key_id, request_id, admitted_at, "echo", "echo", actual // 2, actual - actual // 2, "ok", True, 1,
                    reserved_tokens=reserved,
                )  # fmt: skip
                assert sqlites[container].record_usage(event) and dynamos[container].record_usage(event)
    finally:
        for store in (*sqlites, *dynamos):
            store.close()
