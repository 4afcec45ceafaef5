"""Limits under concurrency, on both store adapters: many requests at once, through two gateway
containers sharing one store (as two Lambda containers share DynamoDB), never get more than a
limit allows."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatgw.access.keys import Limits, new_key
from chatgw.compose import Container, build
from chatgw.metering.estimate import estimate_prompt_tokens
from tests.fakes.backends import ScriptedBackend
from tests.support.asgi import CHAT, Reply, call
from tests.support.conversations import conversation_of

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


def one_instant(*containers: Container) -> None:
    """Rate windows are calendar minutes: every request of the test is stamped with the same instant
    (the services' injected wall clock), so no burst straddles two minutes however long it takes."""
    now = datetime.now(UTC)
    for container in containers:
        container.service.wall_clock = lambda: now


@pytest.fixture(params=["sqlite", "dynamodb"])
def twin(
    request: pytest.FixtureRequest, make_container: Callable[..., Container]
) -> Iterator[tuple[Container, Container]]:
    """Two containers (own Service, own key cache, own store client) on one store."""
    first = make_container({"m": ScriptedBackend(["a", " b", " c"]), "capped": ScriptedBackend([" w"] * WORDS)})
    if request.param == "sqlite":
        second = build(first.settings, catalog=first.catalog)
        yield first, second
        second.store.close()
        return
    from chatgw.store.dynamodb.store import DynamoStore
    from chatgw.store.dynamodb.tables import make_client

    tables = request.getfixturevalue("dynamo_tables")
    stores = [
        DynamoStore(make_client(endpoint_url=tables.endpoint, region="us-east-1"), tables.keys, tables.usage)
        for _ in range(2)
    ]
    yield (
        build(first.settings, store=stores[0], catalog=first.catalog),
        build(first.settings, store=stores[1], catalog=first.catalog),
    )
    for store in stores:
        store.close()


async def burst(apps: list[Container], key: str, count: int) -> list[Reply]:
    headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
    return list(
        await asyncio.gather(*(call(apps[i % len(apps)].app, "POST", CHAT, headers, BODY) for i in range(count)))
    )


def statuses(replies: list[Reply]) -> Counter[int]:
    return Counter(r.status for r in replies)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(1, 6), concurrent=st.integers(1, 40))
def test_requests_per_minute_admits_exactly_the_limit(
    twin: tuple[Container, Container], limit: int, concurrent: int
) -> None:
    first, second = twin
    key, record = new_key("rpm", limits=Limits(requests_per_minute=limit))
    first.store.create_key(record)
    one_instant(first, second)
    replies = asyncio.run(burst([first, second], key, concurrent))
    assert statuses(replies) == Counter({200: min(limit, concurrent), 429: max(0, concurrent - limit)})
    for r in replies:
        assert r.header("x-ratelimit-limit-requests") == [str(limit)]
        if r.status == 429:
            assert r.json()["error"]["code"] == "rate_limit_exceeded" and int(r.header("retry-after")[0]) >= 1
    remaining = sorted(int(r.header("x-ratelimit-remaining-requests")[0]) for r in replies if r.status == 200)
    assert remaining == list(range(max(0, limit - concurrent), limit))  # each slot handed out once


HI = {"model": "capped", "messages": [{"role": "user", "content": "hi"}]}
ESTIMATE = estimate_prompt_tokens(conversation_of(HI))
# ScriptedBackend reports 5 prompt tokens and one token per word. With WORDS > 3 x ESTIMATE - 4 x 5,
# four settled requests plus one more reservation pass 4 reservations: the count is exact whatever
# order the requests settle in (4 x (5 + W) + (E + W) > 4 x (E + W)).
WORDS = max(1, 3 * ESTIMATE - 20 + 1)
CAPPED = json.dumps({**HI, "max_tokens": WORDS}).encode()
RESERVE = ESTIMATE + WORDS  # the prompt estimate plus max_tokens
ACTUAL = 5 + WORDS  # what ScriptedBackend([" w"] * WORDS) reports


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        (Limits(monthly_token_budget=4 * RESERVE), "insufficient_quota"),
        (Limits(tokens_per_minute=4 * RESERVE), "rate_limit_exceeded"),
    ],
    ids=["monthly-budget", "tokens-per-minute"],
)
def test_fifty_concurrent_requests_never_consume_more_than_the_limit(
    twin: tuple[Container, Container], limits: Limits, code: str
) -> None:
    """Each admission reserves its worst case (prompt estimate + max_tokens) in the same atomic
    step as the count, so 50 requests at once against a limit that covers 4 reservations admit
    exactly 4 (whichever order they settle in), and the tokens consumed stay within the limit."""
    first, second = twin
    key, record = new_key("tokens", limits=limits)
    first.store.create_key(record)
    one_instant(first, second)
    consumed = 0
    for wave in range(2):
        headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
        apps = [first, second]
        replies = asyncio.run(_gather(apps, headers, 50))
        admitted = [r for r in replies if r.status == 200]
        assert len(admitted) == (4 if wave == 0 else 0), wave
        assert all(r.json()["error"]["code"] == code for r in replies if r.status != 200)
        consumed += sum(r.json()["usage"]["total_tokens"] for r in admitted)
    assert consumed == 4 * ACTUAL <= 4 * RESERVE
    ledger = first.store.usage_events(record.key_id)
    assert sum(e.total_tokens for e in ledger) == consumed and {e.reserved_tokens for e in ledger} == {RESERVE}


async def _gather(apps: list[Container], headers: list[tuple[bytes, bytes]], count: int) -> list[Reply]:
    return list(
        await asyncio.gather(*(call(apps[i % len(apps)].app, "POST", CHAT, headers, CAPPED) for i in range(count)))
    )
