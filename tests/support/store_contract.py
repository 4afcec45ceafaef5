"""The Store contract's harness: every adapter (SQLite on a temporary file, DynamoDB on a moto server, a
sharded DynamoDB key) behind one `store` fixture. A module that asks for `store` or `adapter` imports
those fixtures and `pytest_generate_tests` with them, which gives each test every adapter."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from chatgw.access.keys import KeyRecord, Limits, new_key
from chatgw.access.limits import Admission
from chatgw.store import Store, UsageEvent
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from chatgw.store.sqlite import SqliteStore

PEPPER = b"contract-pepper"


# Inside the current month, so that events are far from their TTL, and at a minute's start.
BASE = datetime.now(UTC).replace(day=10, hour=12, minute=0, second=0, microsecond=0)


class Adapter:
    """A store plus what the contract needs to look at its raw data."""

    def __init__(self, kind: str, store: Store, raw_dump: Callable[[], str], expiry: Callable[[str], int]):
        self.kind = kind
        self.store = store
        self.raw_dump = raw_dump
        self.expiry = expiry


def _sqlite_adapter(tmp_path: Path) -> Adapter:
    path = tmp_path / "state" / "chatgw.db"
    store = SqliteStore(path, usage_ttl_days=30)

    def raw_dump() -> str:
        return "".join(p.read_bytes().decode("latin-1") for p in path.parent.iterdir() if p.name.startswith(path.name))

    def expiry(request_id: str) -> int:
        with store._read() as db:
            row = db.execute("SELECT expires_at FROM events WHERE request_id = ?", (request_id,)).fetchone()
        return int(row[0])

    return Adapter("sqlite", store, raw_dump, expiry)


def _dynamo_adapter(tables: Any, sharded: bool = False) -> Adapter:
    client = make_client(endpoint_url=tables.endpoint, region="us-east-1")
    store = (Sharded if sharded else DynamoStore)(client, tables.keys, tables.usage, usage_ttl_days=30)

    def raw_dump() -> str:
        items = [client.scan(TableName=t)["Items"] for t in (tables.keys, tables.usage)]
        return json.dumps(items)

    def expiry(request_id: str) -> int:
        items = client.scan(TableName=tables.usage)["Items"]
        (item,) = [i for i in items if i["sk"]["S"] == f"EV#{request_id}"]
        return int(item["expires_at"]["N"])

    return Adapter("dynamodb", store, raw_dump, expiry)


class Sharded(DynamoStore):
    """Every key's counters over `SHARDS` items: the contract holds for a hot key too."""

    def admit(self, key_id: str, limits: Limits, now: datetime, **kwargs: Any) -> Admission:
        return super().admit(key_id, replace(limits, shards=SHARDS), now, **kwargs)


SHARDS = 3
ADAPTERS = ("sqlite", "dynamodb", "dynamodb-3-shards")
F = TypeVar("F", bound=Callable[..., Any])


def one_item_counters(test: F) -> F:
    """A test that reads exact per-key counters from admission answers, reserves more than a shard's
    share, or records tokens that no admission reserved: that is the one-item layout, so it is not
    generated for the sharded adapter (a sharded key's answers carry estimates, one shard's counters
    scaled). What holds for shards is pinned in tests/contract/test_dynamodb_shards.py."""
    test.one_item_counters = True  # type: ignore[attr-defined]
    return test


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every contract test runs on every adapter, but a one-item test not on the sharded one."""
    if "adapter" in metafunc.fixturenames:
        one_item = getattr(metafunc.function, "one_item_counters", False)
        kinds = [k for k in ADAPTERS if not (one_item and k == "dynamodb-3-shards")]
        metafunc.parametrize("adapter", kinds, indirect=True)


@pytest.fixture  # parametrized by pytest_generate_tests: import it with the fixture
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Adapter]:
    kind = getattr(request, "param", None)
    if kind is None:
        pytest.fail("a module using the contract's `adapter` imports `pytest_generate_tests` with it")
    if kind == "sqlite":
        made = _sqlite_adapter(tmp_path)
    else:
        made = _dynamo_adapter(request.getfixturevalue("dynamo_tables"), sharded=kind != "dynamodb")
    yield made
    made.store.close()


@pytest.fixture
def store(adapter: Adapter) -> Store:
    return adapter.store


def make_key(store: Store, **fields: Any) -> tuple[str, KeyRecord]:
    key, record = new_key("test", pepper=PEPPER, now=BASE, **fields)
    store.create_key(record)
    return key, record


def event(
    key_id: str,
    request_id: str,
    *,
    at: datetime = BASE,
    model: str = "echo",
    prompt: int = 10,
    completion: int = 5,
    **extra: Any,
) -> UsageEvent:
    fields: dict[str, Any] = {
        "backend": "echo",
        "status": "ok",
        "streamed": False,
        "latency_ms": 12,
        **extra,
    }
    return UsageEvent(
        key_id=key_id,
        request_id=request_id,
        at=at,
        model=model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        **fields,
    )
