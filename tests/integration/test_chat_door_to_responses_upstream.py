"""A chat-completions client (the official openai SDK) through the gateway to an OpenAI Responses
upstream (`api: responses`): text, parallel tool calls, usage with cached and reasoning tokens exact
for the client and in the ledger, buffered and streamed, and the upstream's errors as the chat door's."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from chatgw.access.limits import month_of
from chatgw.cli.usage import usage_report
from chatgw.compose import Container
from chatgw.store import UsageEvent, UsageQuery
from tests.fakes.fake_responses import FakeResponses, Script
from tests.fakes.model import ANSWER
from tests.support.keys import add_key
from tests.support.polling import eventually
from tests.support.sdk import openai_client
from tests.support.servers import ThreadServer

USER: Any = [{"role": "user", "content": "tell me about prompt caches"}]
PRICE = {"input": 1.0, "output": 2.0, "cached_input": 0.5}
TOOLS: Any = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "fetch", "parameters": {"type": "object", "properties": {}}}},
]


@pytest.fixture
def gateway(
    make_container: Callable[..., Container], fake_responses: FakeResponses, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Container, Any, str]]:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-fake")
    models = {"gpt": fake_responses.catalog_entry("gpt", price_per_million_tokens=PRICE)}
    container = make_container(models=json.dumps(models))
    key = add_key(container)
    with ThreadServer(container.app) as server:
        yield container, openai_client(server.base_url + "/v1", key, max_retries=0), key.split("_")[1]


def ledger(container: Container, key_id: str) -> tuple[UsageEvent, dict[str, Any]]:
    (event,) = eventually(lambda: container.store.usage_events(key_id))
    query = UsageQuery("month", month_of(event.at), key_id=key_id)
    (row,) = usage_report(container.store, query, container.settings)
    return event, row


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_text_and_usage_with_cached_and_reasoning_tokens_exact_for_client_and_ledger(
    gateway: tuple[Container, Any, str], fake_responses: FakeResponses, stream: bool
) -> None:
    container, sdk, key_id = gateway
    fake_responses.then(Script(cached_tokens=3, reasoning_tokens=7, reasoning=True))
    if stream:
        chunks = list(
            sdk.chat.completions.create(model="gpt", messages=USER, stream=True, stream_options={"include_usage": True})
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
        usage = chunks[-1].usage
    else:
        completion = sdk.chat.completions.create(model="gpt", messages=USER)
        text, usage = completion.choices[0].message.content, completion.usage
        assert completion.choices[0].finish_reason == "stop"
    assert text == ANSWER
    (seen,) = fake_responses.requests
    assert seen.body["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": USER[0]["content"]}]}
    ]
    assert seen.body["model"] == "up-gpt" and seen.headers["authorization"] == "Bearer sk-fake"
    prompt = len(USER[0]["content"].split())
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, len(ANSWER.split()) + 7)
    assert usage.prompt_tokens_details.cached_tokens == 3
    assert usage.completion_tokens_details.reasoning_tokens == 7
    event, row = ledger(container, key_id)
    assert (event.prompt_tokens, event.completion_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    assert (event.cached_tokens, event.cache_write_tokens, event.reasoning_tokens) == (3, 0, 7)
    cost = ((usage.prompt_tokens - 3) * 1.0 + 3 * 0.5 + usage.completion_tokens * 2.0) / 1e6
    assert event.cost == pytest.approx(cost)
    assert (row["cached_tokens"], row["reasoning_tokens"], row["cost"]) == (3, 7, pytest.approx(cost))


def test_parallel_tool_calls_reach_the_chat_client_buffered_and_streamed(
    gateway: tuple[Container, Any, str], fake_responses: FakeResponses
) -> None:
    _, sdk, _ = gateway
    fake_responses.then(Script(parallel_calls=2), Script(parallel_calls=2))
    completion = sdk.chat.completions.create(model="gpt", messages=USER, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]
    query = {"query": USER[0]["content"]}
    assert calls == [("call_fake_1", "lookup", query), ("call_fake_2", "fetch", query)]
    chunks = list(sdk.chat.completions.create(model="gpt", messages=USER, tools=TOOLS, stream=True))
    streamed: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = streamed.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.id or ""
            entry["name"] += (call.function.name or "") if call.function else ""
            entry["arguments"] += (call.function.arguments or "") if call.function else ""
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in streamed.values()] == calls
    assert sorted(streamed) == [0, 1]


def test_upstream_errors_reach_the_chat_client_as_the_chat_doors(
    gateway: tuple[Container, Any, str], fake_responses: FakeResponses
) -> None:
    _, sdk, _ = gateway
    too_many = {"error": {"message": "Slow down.", "code": "rate_limit_exceeded"}}
    fake_responses.then(
        Script(status=429, body=too_many, headers={"retry-after": "4"}),
        Script(failed=("server_error", "the model fell over")),
    )
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model="gpt", messages=USER)
    assert limited.value.response.headers["retry-after"] == "4"
    with pytest.raises(openai.APIError, match="the model fell over"):
        list(sdk.chat.completions.create(model="gpt", messages=USER, stream=True))
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="gpt", messages=USER, stop=["x"])
    assert "`stop`" in refused.value.message
    assert len(fake_responses.requests) == 2  # the refused request never left the gateway
