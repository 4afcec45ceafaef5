"""What one request costs the DynamoDB store, counted on the wire (botocore's before-send hook)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from chatgw.access.keys import Limits, new_key
from chatgw.store import UsageEvent
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client

BASE = datetime.now(UTC).replace(day=10, hour=12, minute=0, second=0, microsecond=0)


class Wire:
    def __init__(self, client: Any) -> None:
        self.sent: Counter[str] = Counter()
        client.meta.events.register("before-send.dynamodb", self._count)

    def _count(self, request: Any, **_: Any) -> None:
        self.sent[request.headers["X-Amz-Target"].decode().split(".")[-1]] += 1

    def take(self) -> Counter[str]:
        sent, self.sent = self.sent, Counter()
        return sent


def _store(tables: Any) -> tuple[DynamoStore, Wire]:
    client = make_client(endpoint_url=tables.endpoint, region="us-east-1")
    return DynamoStore(client, tables.keys, tables.usage), Wire(client)


def test_round_trips_per_request(dynamo_tables: Any) -> None:
    store, wire = _store(dynamo_tables)
    _, record = new_key("cost")
    store.create_key(record)
    wire.take()
    limits = Limits(requests_per_minute=3, tokens_per_minute=10_000, monthly_token_budget=10**6)

    # A key lookup on a cold cache: one consistent GetItem.
    store.get_key(record.key_id)
    assert wire.take() == Counter(GetItem=1)
    # Admission: one UpdateItem, for the first request of a minute and the ones after it.
    for second in (0, 10):
        assert store.admit(record.key_id, limits, BASE + timedelta(seconds=second)).admitted
        assert wire.take() == Counter(UpdateItem=1)
    # Settlement, no transaction: the event's conditional put, then the month and the day item.
    ev = UsageEvent(record.key_id, "r1", BASE, "echo", "echo", 5, 5, "ok", False, 3)
    assert store.record_usage(ev)
    assert wire.take() == Counter(PutItem=1, UpdateItem=2)
    # Settled again (a retry, a replay): the put finds the event, nothing else is sent.
    assert not store.record_usage(ev)
    assert wire.take() == Counter(PutItem=1)
    # A refusal reads nothing more: the failed condition returns the old item.
    store.admit(record.key_id, limits, BASE + timedelta(seconds=20))
    assert not store.admit(record.key_id, limits, BASE + timedelta(seconds=30)).admitted
    assert wire.take() == Counter(UpdateItem=2)
    store.close()


def test_a_window_opened_by_another_container_costs_one_more_round_trip(dynamo_tables: Any) -> None:
    first, _ = _store(dynamo_tables)
    second, wire = _store(dynamo_tables)
    limits = Limits(requests_per_minute=10)
    assert second.admit("abcdefgh1234", limits, BASE).admitted
    assert first.admit("abcdefgh1234", limits, BASE + timedelta(seconds=60)).admitted
    wire.take()
    # `second` last saw the previous minute, guesses "open a new window", learns otherwise.
    admission = second.admit("abcdefgh1234", limits, BASE + timedelta(seconds=61))
    assert (admission.refused, admission.requests_used) == (None, 2)
    assert wire.take() == Counter(UpdateItem=2)
    assert second.admit("abcdefgh1234", limits, BASE + timedelta(seconds=62)).admitted
    assert wire.take() == Counter(UpdateItem=1)
    first.close()
    second.close()
