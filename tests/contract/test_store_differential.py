"""Both adapters decide alike: random request sequences, in the service's order (admit, then
record the admitted request's tokens at its start time), give the same admissions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatgw.keys import Limits
from chatgw.store import UsageEvent
from chatgw.store.dynamodb import DynamoStore
from chatgw.store.dynamodb_tables import make_client
from chatgw.store.sqlite import SqliteStore

BASE = datetime.now(UTC).replace(day=10, hour=12, minute=0, second=0, microsecond=0)

limits_st = st.builds(
    Limits,
    requests_per_minute=st.one_of(st.none(), st.integers(1, 4)),
    tokens_per_minute=st.one_of(st.none(), st.integers(1, 60)),
    monthly_token_budget=st.one_of(st.none(), st.integers(1, 200)),
).filter(lambda limits: limits.needs_admission)
steps_st = st.lists(st.tuples(st.integers(0, 45), st.integers(0, 30)), min_size=1, max_size=25)


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
