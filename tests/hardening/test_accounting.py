"""Accounting that adds up, over random fault schedules: requests buffered or streamed, backends
failing before or after the first byte or sending no usage, clients leaving, usage writes failing,
all at once, on both store adapters. Every request that reached a backend is counted exactly
once: in the ledger, or in a `usage_event` log line that replays into it; and the day/month
aggregates equal the events."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatgw.access.keys import new_key
from chatgw.access.limits import day_of, month_of
from chatgw.catalog import Catalog, ModelEntry
from chatgw.compose import Container, build
from chatgw.errors import UpstreamError
from chatgw.metering.estimate import count_tokens
from chatgw.settings import Settings
from chatgw.store.base import Store, UsageEvent, UsageQuery
from chatgw.store.codec import event_from_dict
from chatgw.store.sqlite import SqliteStore
from tests.fakes.backends import ScriptedBackend
from tests.support.asgi import CHAT, call, captured_logs
from tests.support.faulty_proxy import THROTTLED, Fault, faulty_proxy, operation

WORDS = ["alpha", " beta", " gamma", " delta", " epsilon", " zeta"]
MODELS = {
    "ok": lambda: ScriptedBackend(WORDS),
    "no-usage": lambda: ScriptedBackend(WORDS, usage=False),
    "fails-before": lambda: ScriptedBackend(WORDS, fail=UpstreamError("down")),
    "fails-after": lambda: ScriptedBackend(WORDS, fail=UpstreamError("broke"), fail_after=2),
    "slow": lambda: ScriptedBackend(WORDS * 5, delay_s=0.01),
}


@dataclass(frozen=True)
class Op:
    model: str
    stream: bool
    leave_after: int | None  # the client leaves after this many chunks (streams only)
    write_fails: bool  # this request's usage write fails (it runs under the key whose writes fail)
    invalid: bool  # refused before any backend: no usage event at all


ops = st.builds(
    Op,
    model=st.sampled_from(sorted(MODELS)),
    stream=st.booleans(),
    leave_after=st.none() | st.integers(0, 4),
    write_fails=st.booleans(),
    invalid=st.sampled_from([False, False, False, True]),
)


@dataclass
class Ledger:
    container: Container
    fail_writes_for: Callable[[str], AbstractContextManager[object]]
    """A context in which every usage write of that key_id fails inside the store."""


def catalog_of_models() -> Catalog:
    return Catalog({name: ModelEntry(name, make(), name) for name, make in MODELS.items()})


@contextmanager
def sqlite_trigger(store: SqliteStore, key_id: str) -> Iterator[None]:
    outside = sqlite3.connect(str(store.path), isolation_level=None)
    outside.execute(
        f"CREATE TRIGGER fail_{key_id} BEFORE INSERT ON events WHEN NEW.key_id = '{key_id}' "
        "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )
    try:
        yield
    finally:
        outside.execute(f"DROP TRIGGER fail_{key_id}")
        outside.close()


def ledger_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return replace(Settings(), state_dir=tmp_path_factory.mktemp("ledger"), log_level="CRITICAL")


@pytest.fixture(scope="module")
def sqlite_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    settings = ledger_settings(tmp_path_factory)
    sqlite = SqliteStore(settings.state_dir / "chatgw.db")
    container = build(settings, store=sqlite, catalog=catalog_of_models())
    yield Ledger(container, lambda key_id: sqlite_trigger(sqlite, key_id))
    sqlite.close()


@pytest.fixture(scope="module")
def dynamo_ledger(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    settings = ledger_settings(tmp_path_factory)
    from chatgw.store.dynamodb.store import DynamoStore
    from chatgw.store.dynamodb.tables import create_tables, make_client

    moto = request.getfixturevalue("moto_server")
    suffix = uuid.uuid4().hex[:10]
    keys_table, usage_table = f"ledger-keys-{suffix}", f"ledger-usage-{suffix}"
    admin = make_client(endpoint_url=moto.endpoint, region="us-east-1")
    create_tables(admin, keys_table, usage_table)
    admin.close()
    with faulty_proxy(moto.endpoint) as proxy:
        client = make_client(endpoint_url=proxy.endpoint, region="us-east-1", max_attempts=1)
        dynamo = DynamoStore(client, keys_table, usage_table)
        container = build(settings, store=dynamo, catalog=catalog_of_models())

        def throttle_writes(key_id: str) -> AbstractContextManager[object]:
            match = operation("PutItem", containing=f"KEY#{key_id}".encode())
            return proxy.injecting(Fault(match, answer=THROTTLED))

        yield Ledger(container, throttle_writes)
        dynamo.close()


def request_body(op: Op) -> bytes:
    body: dict[str, Any] = {"model": op.model, "messages": [{"role": "user", "content": "count me once"}]}
    if op.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if op.invalid:
        body["temperature"] = 7
    return json.dumps(body).encode()


def assert_aggregates_match(store: Store, key_id: str, events: list[UsageEvent]) -> None:
    for period, fmt in (("day", "%Y-%m-%d"), ("month", "%Y-%m")):
        for value in {e.at.strftime(fmt) for e in events}:
            mine = [e for e in events if e.at.strftime(fmt) == value]
            rows = store.usage(UsageQuery(period, value, key_id=key_id))  # type: ignore[arg-type]
            assert [(r.requests, r.prompt_tokens, r.completion_tokens) for r in rows] == [
                (len(mine), sum(e.prompt_tokens for e in mine), sum(e.completion_tokens for e in mine))
            ]
            by_model = store.usage(UsageQuery(period, value, key_id=key_id, by_model=True))  # type: ignore[arg-type]
            expected = Counter()  # type: ignore[var-annotated]
            for e in mine:
                expected[e.model] += e.total_tokens
            assert {r.model: r.total_tokens for r in by_model} == dict(expected)
            assert sum(r.requests for r in by_model) == len(mine)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=st.lists(ops, min_size=1, max_size=12))
def test_every_request_is_counted_once_on_sqlite(sqlite_ledger: Ledger, schedule: list[Op]) -> None:
    check_schedule(sqlite_ledger, schedule)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=st.lists(ops, min_size=1, max_size=8))
def test_every_request_is_counted_once_on_dynamodb(dynamo_ledger: Ledger, schedule: list[Op]) -> None:
    check_schedule(dynamo_ledger, schedule)


def check_schedule(ledger: Ledger, schedule: list[Op]) -> None:
    app, store = ledger.container.app, ledger.container.store
    good_key, good = new_key("ledger")
    bad_key, bad = new_key("ledger-write-fails")
    store.create_key(good)
    store.create_key(bad)

    async def one(op: Op) -> tuple[Op, Any]:
        key = bad_key if op.write_fails else good_key
        headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
        leave = op.leave_after if op.stream else None
        return op, await call(app, "POST", CHAT, headers, request_body(op), leave_after_chunks=leave)

    async def everything() -> list[tuple[Op, Any]]:
        return await asyncio.gather(*(one(op) for op in schedule))

    with captured_logs() as logs, ledger.fail_writes_for(bad.key_id):
        results = asyncio.run(everything())

    reached = {reply.request_id: op for op, reply in results if not op.invalid}
    # the client left before the end: it did not get [DONE] (the last write carries it with the last pieces)
    left_early = {reply.request_id for op, reply in results if b"data: [DONE]" not in reply.body}
    for op, reply in results:
        if op.invalid:
            assert reply.status == 400
        elif op.model == "fails-before" or (op.model == "fails-after" and not op.stream):
            assert reply.status == 502
        else:
            assert reply.status == 200
    stored = store.usage_events(good.key_id) + store.usage_events(bad.key_id)
    assert store.usage_events(bad.key_id) == []
    logged = [event_from_dict(line["usage_event"]) for line in logs.named("usage_event")]
    stored_ids = [e.request_id for e in stored]
    logged_ids = [e.request_id for e in logged]
    assert len(set(stored_ids)) == len(stored_ids) and len(set(logged_ids)) == len(logged_ids)
    assert not set(stored_ids) & set(logged_ids)
    assert set(stored_ids) | set(logged_ids) == set(reached)
    assert {e.request_id for e in logged} == {rid for rid, op in reached.items() if op.write_fails}

    for event in stored + logged:
        op = reached[event.request_id]
        assert event.streamed == op.stream
        assert event.key_id == (bad.key_id if op.write_fails else good.key_id)
        left = op.stream and op.leave_after is not None and event.request_id in left_early
        if op.model == "fails-before" or (op.model == "fails-after" and not left):
            assert event.status == "error"
        elif left:
            assert event.status in (("client_closed", "error") if op.model == "fails-after" else ("client_closed",))
        else:
            assert event.status == "ok"
        if event.status == "ok":
            assert event.estimated == (op.model == "no-usage")
            words = count_tokens("".join(WORDS)) if event.estimated else len(WORDS)
            assert event.completion_tokens == words * (5 if op.model == "slow" else 1)

    assert_aggregates_match(store, good.key_id, [e for e in stored if e.key_id == good.key_id])
    for period, value in (("day", day_of(datetime.now(UTC))), ("month", month_of(datetime.now(UTC)))):
        assert store.usage(UsageQuery(period, value, key_id=bad.key_id)) == []  # type: ignore[arg-type]
    # the log lines replay into the ledger, once, and then everything adds up for both keys
    for event in logged:
        assert store.record_usage(event) is True
    for event in stored + logged:
        assert store.record_usage(event) is False
    assert_aggregates_match(store, bad.key_id, logged)
    assert_aggregates_match(store, good.key_id, [e for e in stored if e.key_id == good.key_id])
