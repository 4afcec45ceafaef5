"""DynamoDB's refusals survived: the fault proxy in front of moto answers
TransactionConflictException, ProvisionedThroughputExceededException, ThrottlingException and
RequestLimitExceeded at a seeded rate or in bursts, on every operation of the request path. Each
request is answered 200 or 503 `store_unavailable` (never let through unchecked), and the ledger
(events in the store plus the `usage_event` lines replayed) counts every answered request exactly
once. A key refused for its rate is refused by the container without another store call until
the minute ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from chatgw.access.keys import Limits
from chatgw.access.limits import minute_window, month_of
from chatgw.settings import Settings
from chatgw.store.base import UsageQuery
from chatgw.store.codec import event_from_dict
from chatgw.store.dynamodb.call import RetryPolicy
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from tests.fakes.backends import ScriptedBackend
from tests.support.asgi import assert_envelope, captured_logs
from tests.support.dynamo import Tables
from tests.support.dynamo_gateway import DynGateway, gateway_on
from tests.support.faulty_proxy import REFUSALS, Fault, at_rate, faulty_proxy, in_bursts, operation

EVERY_LIMIT = Limits(requests_per_minute=10_000, tokens_per_minute=10**8, monthly_token_budget=10**12)
REQUESTS = 16


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def gw(dynamo_tables: Tables, settings: Settings, sleeps: list[float]) -> Iterator[DynGateway]:
    """The gateway on DynamoDB through the proxy; the store's backoff sleeps are recorded, not slept."""
    with faulty_proxy(dynamo_tables.endpoint) as proxy:
        client = make_client(
            endpoint_url=proxy.endpoint, region="us-east-1", connect_timeout=30, read_timeout=30
        )  # no timeout under load: faults are injected
        store = DynamoStore(client, dynamo_tables.keys, dynamo_tables.usage, retry=RetryPolicy(sleep=sleeps.append))
        backend = ScriptedBackend(["a", " b", " c"])
        yield DynGateway(gateway_on(store, settings, backend), store, backend, proxy)
        store.close()


def _faults(refusal: str, shape: str) -> list[Fault]:
    """The refusal on every operation of a request: the key lookup, admission, the event's put and
    the two aggregate updates of the settlement."""

    def pattern(seed: int) -> Callable[[int], bool]:
        return at_rate(0.6, seed) if shape == "rate" else in_bursts(length=4, gap=3)

    answer = REFUSALS[refusal]
    return [
        Fault(operation("GetItem", "UpdateItem"), answer=answer, pattern=pattern(1)),
        Fault(operation("PutItem"), answer=answer, pattern=pattern(2)),
    ]


@pytest.mark.parametrize("shape", ["rate", "burst"])
@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_refusals_are_survived_and_the_ledger_is_exact(
    gw: DynGateway, refusal: str, shape: str, sleeps: list[float]
) -> None:
    key = gw.key(limits=EVERY_LIMIT)
    kid = key.split("_")[1]
    faults = _faults(refusal, shape)
    with captured_logs() as logs, gw.proxy.injecting(*faults):
        replies = [gw.chat(key, stream=i % 2 == 1) for i in range(REQUESTS)]
    assert all(f.hits > 0 for f in faults)
    answered = [r for r in replies if r.status == 200]
    for reply in replies:
        assert_envelope(reply, allowed_5xx=(503,))
        assert reply.status in (200, 503), reply.body[:300]
        if reply.status == 503:
            assert reply.json()["error"]["code"] == "store_unavailable"
    assert answered, "some requests must get through the faults"
    assert gw.backend.calls == len(answered)  # a request the store could not check reached no backend
    # backoff is bounded: never more sleeps than retries, each below the policy's cap
    policy = gw.store.retry
    assert all(0 <= s <= policy.cap_s for s in sleeps) and len(sleeps) <= sum(f.hits for f in faults)
    # the ledger: what the store has, plus the logged events replayed, is each answered request once
    logged = [event_from_dict(line["usage_event"]) for line in logs.named("usage_event")]
    for event in logged:
        assert gw.store.record_usage(event) is True
        assert gw.store.record_usage(event) is False
    events = gw.store.usage_events(kid)
    assert sorted(e.request_id for e in events) == sorted(r.request_id for r in answered)
    month = month_of(events[0].at)
    (row,) = gw.store.usage(UsageQuery("month", month, key_id=kid))
    assert row.requests == len(answered)
    assert row.total_tokens == sum(e.total_tokens for e in events)


def test_a_burst_shorter_than_the_retries_is_invisible(gw: DynGateway) -> None:
    key = gw.key(limits=EVERY_LIMIT)
    burst = Fault(operation("UpdateItem"), answer=REFUSALS["throttling"], times=gw.store.retry.attempts - 1)
    with captured_logs() as logs, gw.proxy.injecting(burst):
        reply = gw.chat(key)
    assert reply.status == 200 and burst.times == 0
    # the admission's tries, then the settlement's month and day updates
    assert gw.proxy.seen.count("UpdateItem") == gw.store.retry.attempts + 2
    assert logs.named("usage_event") == []


def test_a_burst_as_long_as_the_retries_is_a_503_and_nothing_passes(gw: DynGateway) -> None:
    key = gw.key(limits=EVERY_LIMIT)
    attempts = gw.store.retry.attempts
    burst = Fault(operation("UpdateItem"), answer=REFUSALS["provisioned"], times=attempts)
    with gw.proxy.injecting(burst):
        reply = gw.chat(key)
    assert reply.status == 503 and reply.json()["error"]["code"] == "store_unavailable"
    assert gw.proxy.seen.count("UpdateItem") == attempts  # bounded: no retry loop into a throttled store
    assert gw.backend.calls == 0
    assert gw.chat(key).status == 200


def _now_window() -> int:
    return minute_window(datetime.now(UTC))


def test_a_key_refused_for_its_rate_is_refused_locally_until_the_window_ends(gw: DynGateway) -> None:
    """After the store refused a key, the container answers the same 429 itself: no UpdateItem
    (a failed conditional write is billed as a write). The minute may turn during the test: then
    the store rightly admits again, so the test runs once more in a fresh minute."""
    for _ in range(3):
        window = _now_window()
        key = gw.key(limits=Limits(requests_per_minute=2))
        gw.proxy.seen.clear()
        first = [gw.chat(key) for _ in range(3)]
        writes = gw.proxy.seen.count("UpdateItem")
        later = [gw.chat(key, stream=i % 2 == 1) for i in range(5)]
        if _now_window() == window:
            break
    else:
        pytest.fail("the minute turned during every try")
    assert [r.status for r in first] == [200, 200, 429]
    assert writes == 3 + 2 * 2  # three admissions (two admitted, one refused), two settlements of two updates
    assert gw.proxy.seen.count("UpdateItem") == writes  # the five later refusals cost the store nothing
    assert gw.backend.calls == 2
    store_refusal = first[2]
    for reply in later:
        assert reply.status == 429
        assert reply.json()["error"]["code"] == store_refusal.json()["error"]["code"] == "rate_limit_exceeded"
        assert reply.json()["error"]["message"] == store_refusal.json()["error"]["message"]
        for header in ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests"):
            assert reply.header(header) == store_refusal.header(header)
        (retry_after,) = reply.header("retry-after")
        assert 1 <= int(retry_after) <= 60


def test_another_container_still_asks_the_store(gw: DynGateway, settings: Settings) -> None:
    """The refusal cache is the container's own: a second container asks the store once, then
    remembers for itself."""
    for _ in range(3):
        window = _now_window()
        key = gw.key(limits=Limits(requests_per_minute=1))
        assert [gw.chat(key).status for _ in range(2)] == [200, 429]
        other = DynGateway(gateway_on(gw.store, settings, gw.backend), gw.store, gw.backend, gw.proxy)
        gw.proxy.seen.clear()
        statuses = [other.chat(key).status for _ in range(3)]
        if _now_window() == window:
            break
    assert statuses == [429, 429, 429]
    assert gw.proxy.seen.count("UpdateItem") == 1
