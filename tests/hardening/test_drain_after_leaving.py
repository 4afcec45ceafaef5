"""Leaving a stream early must not dodge token budgets. Closing the upstream when the client leaves
and booking an estimate of the message text only would let a 360 KB `tools` payload pass as 7
prompt tokens. So the upstream is read on after the client left (bounded in time and size, while
nobody waits) for its own usage, and the estimate counts the whole request."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from chatgw.access.keys import Limits
from chatgw.access.limits import month_of
from chatgw.compose import Container
from chatgw.store.base import UsageQuery
from chatgw.streaming import DRAIN_MAX_CHARS
from tests.fakes.backends import ScriptedBackend
from tests.fakes.fake_openai import FakeOpenAI, Script
from tests.support.keys import add_key
from tests.support.polling import eventually
from tests.support.servers import ThreadServer
from tests.support.upstream import USER, Upstreamed, events_of
from tests.support.upstream import up as up

SCHEMA = {
    "type": "object",
    "properties": {
        f"field_{i}": {"type": "string", "description": "The value of this field, as text."} for i in range(300)
    },
}
TOOLS = [{"type": "function", "function": {"name": f"tool_{i}", "parameters": SCHEMA}} for i in range(16)]


def leave_after_first_chunk(up: Upstreamed, gw: Container, key: str) -> Any:
    reply = up.chat(gw, key, True, leave=1, tools=TOOLS)
    assert reply.status == 200
    (event,) = events_of(gw, key)
    assert event.status == "client_closed"
    return event


def test_leaving_early_books_the_upstreams_own_usage(up: Upstreamed, fake_openai: FakeOpenAI) -> None:
    assert len(json.dumps(TOOLS)) > 360_000
    gw, key = up.gateway(fake_openai.base_url)
    fake_openai.then(Script(chunk_delay_s=0.05))
    event = leave_after_first_chunk(up, gw, key)
    assert fake_openai.stream_completed.wait(10) and not fake_openai.stream_aborted.is_set()
    assert not event.estimated  # the upstream's count, read after the client left
    assert event.completion_tokens > 1


def test_leaving_early_from_an_upstream_without_usage_books_the_whole_request(
    up: Upstreamed, fake_openai: FakeOpenAI
) -> None:
    gw, key = up.gateway(fake_openai.base_url)
    fake_openai.then(Script(send_usage=False, chunk_delay_s=0.05))
    event = leave_after_first_chunk(up, gw, key)
    assert event.estimated and event.prompt_tokens > 60_000  # it was 7: tools were not counted
    month = month_of(datetime.now(UTC))
    (row,) = gw.store.usage(UsageQuery("month", month, key_id=key.split("_")[1]))
    assert row.total_tokens > 60_000


def test_a_budget_reserves_the_whole_request(up: Upstreamed, fake_openai: FakeOpenAI) -> None:
    """The ledger's reservation is this estimate plus the output cap: the request that once booked
    7 tokens against a 1,000-token budget is now refused before it reaches the upstream."""
    gw, _ = up.gateway(fake_openai.base_url)
    budget_key = add_key(gw, limits=Limits(monthly_token_budget=1_000))
    refused = up.chat(gw, budget_key, True, tools=TOOLS)
    assert refused.status == 429, refused.body
    assert fake_openai.requests == []
    assert up.chat(gw, budget_key, True, max_tokens=100).status == 200  # a small request still fits


def test_the_drain_is_bounded_in_size(make_container: Callable[..., Container]) -> None:
    from tests.support.asgi import CHAT, run

    words = ["x" * 100_000] * 30  # 3 MB of answer after the client left
    backend = ScriptedBackend(words, usage=False)
    gw = make_container({"m": backend})
    key = add_key(gw)
    body = json.dumps({"model": "m", "messages": USER, "stream": True}).encode()
    run(gw.app, "POST", CHAT, [(b"x-api-key", key.encode())], body, leave_after_chunks=1)
    assert backend.closed.is_set()
    assert DRAIN_MAX_CHARS // 100_000 <= backend.sent < len(words)
    (event,) = gw.store.usage_events(key.split("_")[1])
    assert event.status == "client_closed" and event.estimated and event.completion_tokens > 100_000


def test_the_drain_is_off_the_clients_path(make_container: Callable[..., Container]) -> None:
    """While a left stream is still being read, the server answers the next request."""
    backend = ScriptedBackend([f" w{i}" for i in range(100)], delay_s=0.05)
    gw = make_container({"slow": backend})
    key = add_key(gw)
    headers = {"x-api-key": key}
    with ThreadServer(gw.app) as server, httpx.Client(timeout=20) as client:
        body = {"model": "slow", "messages": USER, "stream": True}
        with client.stream("POST", f"{server.base_url}/v2/llms/chat/completions", json=body, headers=headers) as r:
            next(line for line in r.iter_lines() if line.startswith("data: {"))
        answer = client.post(
            f"{server.base_url}/v2/llms/chat/completions", json={"model": "echo", "messages": USER}, headers=headers
        )
        assert answer.status_code == 200
        assert backend.sent < len(backend.words)  # the first stream was still being read
        assert backend.closed.wait(20)
        events = eventually(lambda: len(gw.store.usage_events(key.split("_")[1])) == 2)
    assert events and backend.sent == len(backend.words)
