"""Faults on the DynamoDB store, through the real boto3 client: a loopback proxy in front of the
moto server throttles, answers 503, delays or drops chosen operations, and the store can be down
altogether. A request the store cannot check is refused with 503 and reaches no backend; a usage
write that fails becomes the `usage_event` log line; a write whose answer was lost is not counted
twice when botocore retries it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatgw.access.keys import Limits, new_key
from chatgw.settings import Settings
from chatgw.store.base import UsageQuery
from chatgw.store.codec import event_from_dict
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from tests.fakes.backends import ScriptedBackend
from tests.support.asgi import CHAT, assert_envelope, captured_logs, run
from tests.support.dynamo import Tables
from tests.support.dynamo_gateway import DynGateway, gateway_on
from tests.support.dynamo_gateway import steady as steady
from tests.support.faulty_proxy import THROTTLED, UNAVAILABLE, Fault, faulty_proxy, operation
from tests.support.servers import free_port

TIMEOUT_S = 0.5


def dynamo_store(endpoint: str, tables: Tables) -> DynamoStore:
    client = make_client(
        endpoint_url=endpoint,
        region="us-east-1",
        connect_timeout=TIMEOUT_S,
        read_timeout=TIMEOUT_S,
    )
    return DynamoStore(client, tables.keys, tables.usage)


@pytest.fixture
def dyn(dynamo_tables: Tables, settings: Settings) -> Iterator[DynGateway]:
    with faulty_proxy(dynamo_tables.endpoint) as proxy:
        store = dynamo_store(proxy.endpoint, dynamo_tables)
        backend = ScriptedBackend(["a", " b", " c"])
        yield DynGateway(gateway_on(store, settings, backend), store, backend, proxy)
        store.close()


FAULTS = {
    "throttled": lambda match: Fault(match, answer=THROTTLED),
    "unavailable-503": lambda match: Fault(match, answer=UNAVAILABLE),
    "connection-dropped": lambda match: Fault(match, drop=True),
    "slower-than-timeout": lambda match: Fault(match, delay_s=TIMEOUT_S * 3),
}


CASES = [(f, p, False) for f in sorted(FAULTS) for p in ("key-lookup", "admission")]
CASES += [("unavailable-503", p, True) for p in ("key-lookup", "admission")]  # streams share the path


@pytest.mark.parametrize(("fault", "phase", "stream"), CASES)
def test_store_fault_is_503_and_nothing_passes(dyn: DynGateway, fault: str, phase: str, stream: bool) -> None:
    limited = phase == "admission"
    key = dyn.key(limits=Limits(requests_per_minute=100)) if limited else dyn.key()
    op = "UpdateItem" if limited else "GetItem"
    with dyn.proxy.injecting(FAULTS[fault](operation(op))):
        reply = dyn.chat(key, stream)  # bounded by `run` (20 s); the 503 itself says it did not hang
    assert_envelope(reply, allowed_5xx=(503,))
    assert reply.status == 503 and reply.json()["error"]["code"] == "store_unavailable"
    assert dyn.backend.calls == 0
    assert dyn.chat(key, stream).status == 200  # and it recovers at once


def test_store_down_altogether(dynamo_tables: Tables, settings: Settings) -> None:
    store = dynamo_store(f"http://127.0.0.1:{free_port()}", dynamo_tables)  # nothing listens there
    backend = ScriptedBackend()
    gw = gateway_on(store, settings, backend)
    key, _ = new_key("nowhere")
    reply = run(gw.app, "POST", CHAT, [(b"x-api-key", key.encode())], b'{"model": "m", "messages": []}')
    assert_envelope(reply, allowed_5xx=(503,))
    assert reply.status == 503 and backend.calls == 0
    store.close()


def test_store_slow_but_within_the_timeout_still_answers(dyn: DynGateway) -> None:
    key = dyn.key(limits=Limits(requests_per_minute=100))
    # a tenth of the client's read timeout: a margin of 10x for moto's own time on a loaded machine
    with dyn.proxy.injecting(Fault(operation(), delay_s=TIMEOUT_S / 10)):
        assert dyn.chat(key).status == 200
        assert dyn.chat(key, stream=True).status == 200


@pytest.mark.parametrize(
    ("fault", "stream"), [("throttled", False), ("unavailable-503", True), ("connection-dropped", False)]
)
def test_failed_usage_write_is_logged_and_replays(steady: DynGateway, fault: str, stream: bool) -> None:
    # `steady`: the replay below must not meet the 0.5 s read timeout of `dyn` (a loaded CI machine's
    # moto server exceeded it once, and the replay's writes read as unsure)
    dyn = steady
    key = dyn.key()
    with captured_logs() as logs, dyn.proxy.injecting(FAULTS[fault](operation("PutItem"))):
        reply = dyn.chat(key, stream)
    assert reply.status == 200
    kid = key.split("_")[1]
    assert dyn.store.usage_events(kid) == []
    (line,) = logs.named("usage_event")
    # a 503 or a dropped connection may hide a put that landed: the line then names every part
    # pending, and replay puts the event if missing, then each part once (test_store_deadline.py)
    unsure = fault != "throttled"
    assert line["usage_event"]["request_id"] == reply.request_id
    assert line["reason"] == ("SettlementPending" if unsure else "StoreUnavailable")
    assert line["usage_event"].get("pending", []) == (["month", "day"] if unsure else [])
    event = event_from_dict(line["usage_event"])
    assert dyn.store.record_usage(event) is True
    assert dyn.store.record_usage(event) is False
    (row,) = dyn.store.usage(UsageQuery("day", event.at.strftime("%Y-%m-%d"), key_id=kid))
    assert (row.requests, row.total_tokens) == (1, event.total_tokens) and row.total_tokens > 0


def test_lost_answer_to_a_usage_write_is_not_counted_twice(dyn: DynGateway) -> None:
    """The event's put lands but its answer is lost; the store sends it again and finds the event,
    tagged with its own nonce: its own write, so the aggregates follow, once; nothing logged."""
    key = dyn.key()
    kid = key.split("_")[1]
    lost = Fault(operation("PutItem"), drop_after_forward=True, times=1)
    dyn.proxy.seen.clear()
    with captured_logs() as logs, dyn.proxy.injecting(lost):
        reply = dyn.chat(key)
    assert reply.status == 200 and lost.times == 0
    assert dyn.proxy.seen.count("PutItem") == 2  # the original and the store's retry
    assert logs.named("usage_event") == []
    (event,) = dyn.store.usage_events(kid)
    assert event.request_id == reply.request_id
    (row,) = dyn.store.usage(UsageQuery("day", event.at.strftime("%Y-%m-%d"), key_id=kid))
    assert (row.requests, row.total_tokens) == (1, event.total_tokens)


@pytest.mark.parametrize("part", ["M#", "D#"])
def test_a_settlement_write_that_fails_after_the_event_is_replayed_once(steady: DynGateway, part: str) -> None:
    """The event is stored, the month (or day) item refuses its update past the retries: the
    `usage_event` line names that part as pending; replaying it applies exactly that part, once."""
    dyn = steady
    key = dyn.key(limits=Limits(requests_per_minute=100, monthly_token_budget=10**9))
    kid = key.split("_")[1]
    sk = f'"sk": {{"S": "{part}'.encode()

    def settling(op: str, body: bytes) -> bool:  # not the admission, which updates the month item too
        return op == "UpdateItem" and sk in body and b"ADD requests" in body

    refused = Fault(settling, answer=THROTTLED)
    with captured_logs() as logs, dyn.proxy.injecting(refused):
        reply = dyn.chat(key)
    assert reply.status == 200 and refused.hits > 0
    (line,) = logs.named("usage_event")
    assert line["reason"] == "SettlementPending"
    assert line["usage_event"]["pending"] == ["month" if part == "M#" else "day"]
    event = event_from_dict(line["usage_event"])
    (stored,) = dyn.store.usage_events(kid)  # the event itself is in
    assert stored.request_id == reply.request_id and stored.pending == ()
    assert dyn.store.record_usage(event) is True
    assert dyn.store.record_usage(event) is False  # a second replay finds the mark
    period = event.at.strftime("%Y-%m")
    (month,) = dyn.store.usage(UsageQuery("month", period, key_id=kid))
    (day,) = dyn.store.usage(UsageQuery("day", event.at.strftime("%Y-%m-%d"), key_id=kid))
    (model,) = dyn.store.usage(UsageQuery("month", period, key_id=kid, by_model=True))
    for row in (month, day, model):
        assert (row.requests, row.total_tokens) == (1, event.total_tokens) and row.total_tokens > 0


def test_an_unsure_settlement_write_is_not_replayed(steady: DynGateway) -> None:
    """The day item's update reached the store but its answer was lost: it may have been applied,
    so the log line leaves it out of `pending` (reason SettlementUnsure): replay never doubles it."""
    dyn = steady
    key = dyn.key()
    kid = key.split("_")[1]
    lost = Fault(operation("UpdateItem", containing=b'"S": "D#'), drop_after_forward=True, times=1)
    with captured_logs() as logs, dyn.proxy.injecting(lost):
        reply = dyn.chat(key)
    assert reply.status == 200
    (line,) = logs.named("usage_event")
    assert line["reason"] == "SettlementUnsure" and "pending" not in line["usage_event"]
    assert dyn.store.record_usage(event_from_dict(line["usage_event"])) is False
    (day,) = dyn.store.usage(UsageQuery("day", reply_day(dyn, kid), key_id=kid))
    assert day.requests == 1  # it had been applied: counted once


def reply_day(dyn: DynGateway, kid: str) -> str:
    (event,) = dyn.store.usage_events(kid)
    return event.at.strftime("%Y-%m-%d")
