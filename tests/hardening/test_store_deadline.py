"""Store calls live within the request's deadline, or a 503 (docs/store.md, "Deadlines"): the DynamoDB
store's retries start no attempt and take no backoff sleep past the deadline
the service sets (store/deadline.py), a whole admission gives up with a 503 `store_unavailable`,
each call's read timeout is cut to what is left, and a settlement is bounded by its own budget,
after which the `usage_event` line is the record and the ledger stays exact.

No assertion on wall time: the retry policy's clock is injected (virtual seconds, advanced by the
backoff sleeps it records instead of sleeping); the tests count attempts and check when they started."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from chatgw.access.keys import Limits, new_key
from chatgw.access.limits import minute_window, month_of
from chatgw.errors import StoreUnavailable
from chatgw.settings import Settings
from chatgw.store import deadline
from chatgw.store.base import UsageQuery
from chatgw.store.codec import event_from_dict
from chatgw.store.dynamodb.call import RetryPolicy, call
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from tests.fakes.backends import ScriptedBackend
from tests.support.asgi import assert_envelope, captured_logs
from tests.support.dynamo import Tables
from tests.support.dynamo_gateway import DynGateway, gateway_on
from tests.support.faulty_proxy import REFUSALS, THROTTLED, Fault, condition_failed, faulty_proxy, in_bursts, operation

LIMITED = Limits(requests_per_minute=10_000, tokens_per_minute=10**8, monthly_token_budget=10**12)


@dataclass
class Clock:
    """Virtual seconds: `now` moves only when the policy sleeps (each sleep recorded)."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)
    attempts: list[float] = field(default_factory=list)
    """When each attempt started, on this clock."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def __call__(self) -> float:
        return self.now

    def throttled(self, _hit: int) -> tuple[int, dict[str, Any]]:
        """The fault proxy's answer, noting when the attempt it answers started."""
        self.attempts.append(self.now)
        return THROTTLED


def full_backoff(top: float) -> float:
    return top  # no jitter: the sleeps are known


def policy(clock: Clock, **overrides: Any) -> RetryPolicy:
    return RetryPolicy(sleep=clock.sleep, clock=clock, jitter=full_backoff, **overrides)


# the retry loop ------------------------------------------------------------------------


def throttling(clock: Clock) -> Any:
    def fn() -> None:
        clock.attempts.append(clock.now)
        raise ClientError({"Error": {"Code": "ThrottlingException"}}, "UpdateItem")

    return fn


def test_without_a_deadline_the_policy_alone_bounds_the_tries() -> None:
    clock = Clock()
    retry = policy(clock)
    with pytest.raises(StoreUnavailable):
        call(retry, throttling(clock))
    assert len(clock.attempts) == retry.attempts
    assert clock.sleeps == [0.025, 0.05, 0.1]


def test_a_throttling_burst_longer_than_the_deadline_stops_before_the_last_attempt() -> None:
    clock = Clock()
    retry = policy(clock)
    at = 0.2  # room for the first two sleeps (0.025, 0.05) and an attempt after each, not for the third (0.1)
    with deadline.until(at), pytest.raises(StoreUnavailable, match="deadline") as raised:
        call(retry, throttling(clock))
    assert len(clock.attempts) == 3 < retry.attempts
    assert all(started + retry.min_attempt_s <= at for started in clock.attempts)  # none started too late
    assert clock.now <= at  # no sleep past it
    assert isinstance(raised.value.__cause__, ClientError)  # the 503 says what the store answered


def test_a_near_deadline_takes_no_backoff_sleep_past_it() -> None:
    clock = Clock()
    retry = policy(clock)
    with deadline.until(0.06), pytest.raises(StoreUnavailable, match="deadline"):
        call(retry, throttling(clock))  # the first sleep (0.025) leaves 0.035 < min_attempt_s
    assert clock.attempts == [0.0] and clock.sleeps == []


def test_a_passed_deadline_starts_no_attempt() -> None:
    clock = Clock(now=5.0)
    with deadline.until(5.0 + RetryPolicy.min_attempt_s / 2), pytest.raises(StoreUnavailable, match="deadline"):
        call(policy(clock), throttling(clock))
    assert clock.attempts == []


def test_the_deadline_is_the_innermost_one_and_ends_with_its_block() -> None:
    assert deadline.current() is None
    with deadline.until(10.0):
        with deadline.until(None):  # no deadline given: the outer one holds
            assert deadline.current() == 10.0
        with deadline.until(3.0):
            assert deadline.current() == 3.0
        assert deadline.current() == 10.0
    assert deadline.current() is None


def test_a_settlement_has_its_own_budget_but_never_passes_the_grace_after_the_request() -> None:
    now = lambda: 100.0  # noqa: E731
    assert deadline.settlement_deadline(None, now) == 100.0 + deadline.SETTLE_SECONDS
    assert deadline.settlement_deadline(1_000.0, now) == 100.0 + deadline.SETTLE_SECONDS
    assert deadline.settlement_deadline(100.5, now) == 100.5 + deadline.SETTLE_GRACE_S


# the DynamoDB store through the fault proxy ----------------------------------------------


@pytest.fixture
def proxied(dynamo_tables: Tables) -> Iterator[tuple[Any, Tables, Any]]:
    with faulty_proxy(dynamo_tables.endpoint) as proxy:
        client = make_client(endpoint_url=proxy.endpoint, region="us-east-1", connect_timeout=30, read_timeout=30)
        yield proxy, dynamo_tables, client
        client.close()


@pytest.mark.parametrize("shards", [1, 3])
def test_a_whole_admission_gives_up_at_the_deadline(proxied: tuple[Any, Tables, Any], shards: int) -> None:
    """Throttled on every write: the shard tries and the retries of each all stop at the deadline."""
    proxy, tables, client = proxied
    clock = Clock()
    store = DynamoStore(client, tables.keys, tables.usage, retry=policy(clock))
    limits = replace(LIMITED, shards=shards)
    at = 0.1
    throttled = Fault(operation("UpdateItem"), answer=clock.throttled)
    with proxy.injecting(throttled), deadline.until(at), pytest.raises(StoreUnavailable, match="deadline"):
        store.admit("k1", limits, datetime.now(UTC), request_id="r1", reserve=10)
    assert 1 <= len(clock.attempts) < store.retry.attempts
    assert proxy.seen.count("UpdateItem") == len(clock.attempts)
    assert all(started + store.retry.min_attempt_s <= at for started in clock.attempts)
    store.close()


def test_window_guess_retries_stop_at_the_deadline(proxied: tuple[Any, Tables, Any]) -> None:
    """Another container's minute always ahead (a failed condition returning a later window each
    time): admission joins it and tries again, at most 4 times; with 40 ms per try and a deadline
    of 100 ms, the third try finds no time left and the admission ends with the deadline's 503."""
    proxy, tables, client = proxied
    clock = Clock()
    store = DynamoStore(client, tables.keys, tables.usage, retry=policy(clock))
    now = datetime.now(UTC)

    def ahead(hit: int) -> tuple[int, dict[str, Any]]:
        clock.attempts.append(clock.now)
        clock.now += 0.04
        return condition_failed({"win": {"N": str(minute_window(now) + 1 + hit)}})

    ahead_fault = Fault(operation("UpdateItem"), answer=ahead)
    with proxy.injecting(ahead_fault), deadline.until(0.1), pytest.raises(StoreUnavailable, match="deadline"):
        store.admit("k1", LIMITED, now, request_id="r1", reserve=10)
    assert clock.attempts == [0.0, 0.04]  # the policy alone would have made 4 (then "did not settle")
    store.close()


def test_a_call_slower_than_the_time_left_times_out_at_the_deadline(proxied: tuple[Any, Tables, Any]) -> None:
    """The client's read timeout is 30 s and the store answers after 3 s: only the per-call
    read timeout cut to the time left (1 s) can make this a read timeout (so no wall time asserted)."""
    proxy, tables, client = proxied
    store = DynamoStore(client, tables.keys, tables.usage)
    slow = Fault(operation("GetItem"), delay_s=3.0)
    with proxy.injecting(slow), deadline.until(time.monotonic() + 1.0), pytest.raises(StoreUnavailable) as raised:
        store.get_key("k1")
    assert isinstance(raised.value.__cause__, ReadTimeoutError)
    assert proxy.seen.count("GetItem") == 1  # and no second attempt: no time was left for one
    assert store.get_key("k1") is None  # no deadline now: the client's own timeouts


# through the gateway --------------------------------------------------------------------


@dataclass
class VirtualTime:
    """Real monotonic time plus the virtual seconds the store's policy 'slept' during the current
    request (reset between requests): deadlines set from `time.monotonic()` by the gateway are
    reached by virtual sleeps, deterministically, without waiting."""

    offset: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.offset += seconds

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def gateway(tables: Tables, proxy: Any, settings: Settings, retry: RetryPolicy) -> DynGateway:
    client = make_client(endpoint_url=proxy.endpoint, region="us-east-1", connect_timeout=30, read_timeout=30)
    store = DynamoStore(client, tables.keys, tables.usage, retry=retry)
    backend = ScriptedBackend(["a", " b", " c"])
    return DynGateway(gateway_on(store, settings, backend), store, backend, proxy)


def test_a_throttling_burst_longer_than_the_request_deadline_is_a_503(
    dynamo_tables: Tables, settings: Settings
) -> None:
    """Backoffs of 10 virtual seconds against a 15 s deadline: the admission gives up after two
    tries of four, with the spec's 503 envelope; the backend is never called."""
    virtual = VirtualTime()
    retry = RetryPolicy(sleep=virtual.sleep, clock=virtual, jitter=full_backoff, base_s=10.0, cap_s=10.0)
    with faulty_proxy(dynamo_tables.endpoint) as proxy:
        gw = gateway(dynamo_tables, proxy, replace(settings, request_timeout_s=15.0), retry)
        key = gw.key(limits=LIMITED)
        burst = Fault(operation("UpdateItem"), answer=REFUSALS["throttling"], times=retry.attempts)
        with proxy.injecting(burst):
            reply = gw.chat(key)
        assert_envelope(reply, allowed_5xx=(503,))
        assert reply.status == 503 and reply.json()["error"]["code"] == "store_unavailable"
        assert 1 <= proxy.seen.count("UpdateItem") < retry.attempts  # the policy would have tried 4 times
        assert gw.backend.calls == 0
        gw.store.close()


@pytest.mark.parametrize("stream", [False, True])
def test_settlement_under_a_burst_is_bounded_and_the_ledger_exact(
    dynamo_tables: Tables, settings: Settings, stream: bool
) -> None:
    """Each settlement write throttled in bursts of three (the policy alone would retry through
    them: 4 tries); with backoffs of one virtual second, the settlement's budget of 3 s allows three
    tries, so some settlements give up and their `usage_event` lines (whole, or `pending` parts)
    are the record. Replayed, the ledger counts every answered request exactly once."""
    virtual = VirtualTime()
    retry = RetryPolicy(sleep=virtual.sleep, clock=virtual, jitter=full_backoff, base_s=1.0, cap_s=1.0)
    assert retry.attempts * retry.base_s > deadline.SETTLE_SECONDS  # the budget, not the policy, bounds it
    with faulty_proxy(dynamo_tables.endpoint) as proxy:
        gw = gateway(dynamo_tables, proxy, settings, retry)
        key = gw.key(limits=LIMITED)
        kid = key.split("_")[1]
        faults = [  # the settlement's writes only: the event's put and the two aggregate updates
            Fault(operation("PutItem"), answer=REFUSALS["throttling"], pattern=in_bursts(length=3, gap=2)),
            Fault(
                operation("UpdateItem", containing=b"prompt_tokens"),
                answer=REFUSALS["conflict"],
                pattern=in_bursts(length=3, gap=4),
            ),
        ]
        replies = []
        with captured_logs() as logs, proxy.injecting(*faults):
            for _ in range(10):
                virtual.offset = 0.0
                replies.append(gw.chat(key, stream=stream))
        assert [r.status for r in replies] == [200] * len(replies)  # the answers were out
        lines = [event_from_dict(line["usage_event"]) for line in logs.named("usage_event")]
        assert lines, "the budget must have cut some settlements"
        for event in lines:
            assert gw.store.record_usage(event) is True
            assert gw.store.record_usage(event) is False
        events = gw.store.usage_events(kid)
        assert sorted(e.request_id for e in events) == sorted(r.request_id for r in replies)
        (row,) = gw.store.usage(UsageQuery("month", month_of(events[0].at), key_id=kid))
        assert row.requests == len(replies)
        assert row.total_tokens == sum(e.total_tokens for e in events)
        gw.store.close()


def test_the_key_lookup_is_bounded_by_the_request_deadline(dynamo_tables: Tables, settings: Settings) -> None:
    virtual = VirtualTime()
    retry = RetryPolicy(sleep=virtual.sleep, clock=virtual, jitter=full_backoff, base_s=10.0, cap_s=10.0)
    with faulty_proxy(dynamo_tables.endpoint) as proxy:
        gw = gateway(dynamo_tables, proxy, replace(settings, request_timeout_s=15.0), retry)
        key, record = new_key("dl")
        gw.store.create_key(record)
        with proxy.injecting(Fault(operation("GetItem"), answer=REFUSALS["provisioned"])):
            reply = gw.chat(key)
        assert reply.status == 503 and reply.json()["error"]["code"] == "store_unavailable"
        assert 1 <= proxy.seen.count("GetItem") < retry.attempts
        gw.store.close()


@pytest.mark.parametrize("landed", [True, False], ids=["put-landed", "put-lost"])
def test_an_event_put_whose_last_answer_is_lost_is_replayed_exactly_once(
    dynamo_tables: Tables, settings: Settings, landed: bool
) -> None:
    """The event's put throttled on every try but the last, whose answer is lost (the connection
    drops after the put reached the store, or before): nobody knows whether the event is stored.
    The line names every part pending; replay puts the event if it is missing, then applies each
    part behind its one-time mark: the request is counted once either way, and a second replay
    counts nothing. (A cut read timeout near the deadline is one way to lose that last answer.)"""
    clock = Clock()
    retry = policy(clock)
    with faulty_proxy(dynamo_tables.endpoint) as proxy:
        gw = gateway(dynamo_tables, proxy, settings, retry)
        key = gw.key(limits=LIMITED)
        kid = key.split("_")[1]
        throttled = Fault(operation("PutItem"), answer=REFUSALS["throttling"], times=retry.attempts - 1)
        lost = Fault(operation("PutItem"), drop_after_forward=landed, drop=not landed, times=1)
        with captured_logs() as logs, proxy.injecting(throttled, lost):
            reply = gw.chat(key)
        assert reply.status == 200 and lost.times == 0
        (line,) = logs.named("usage_event")
        event = event_from_dict(line["usage_event"])
        assert event.pending == ("month", "day")
        assert [e.request_id for e in gw.store.usage_events(kid)] == ([reply.request_id] if landed else [])
        assert gw.store.record_usage(event) is True
        assert gw.store.record_usage(event) is False
        (stored,) = gw.store.usage_events(kid)
        (row,) = gw.store.usage(UsageQuery("month", month_of(stored.at), key_id=kid))
        assert row.requests == 1 and row.total_tokens == stored.total_tokens
        gw.store.close()
