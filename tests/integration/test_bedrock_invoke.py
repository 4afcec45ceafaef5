"""The `bedrock` backend with `"api": "invoke"` in front of the fake Bedrock runtime, through the real
boto3 client: a Messages-door body goes to InvokeModel as the client sent it but for what Bedrock
wants (no `model` or `stream`, its `anthropic_version`, only the beta flags it accepts), thinking
signatures come back unchanged, the streamed `chunk` events are Anthropic's own, usage counts the
cache, and CountTokens answers for both APIs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from chatgw.backends import BackendDeps, CatalogError, build_backend
from chatgw.backends.bedrock_converse import BedrockBackend
from chatgw.conversation import Reasoning, Text, ToolCall
from chatgw.deadline import Deadline
from chatgw.errors import UpstreamError, UpstreamRejected
from tests.fakes.fake_anthropic import SIGNATURE, THINKING, stream_events
from tests.fakes.fake_bedrock import FakeBedrock, Script
from tests.support.backend_calls import chat, collect, stops, streamed_text, tool_deltas, usages
from tests.support.messages_door import CLIENT_BODY, from_messages_door

T = TypeVar("T")
MODEL_ID = "anthropic.claude-fake-v1:0"
CLAUDE_CODE_BETAS = ["claude-code-20250219", "interleaved-thinking-2025-05-14", "prompt-caching-scope-2026-01-05"]


def run(server: FakeBedrock, scenario: Callable[[BedrockBackend], Coroutine[Any, Any, T]], **options: Any) -> T:
    async def main() -> T:
        deps = BackendDeps(aws_client_factory=server.client)
        entry = {"model_id": MODEL_ID, "region": "us-east-1", "max_retries": 0, "api": "invoke", **options}
        backend = build_backend("bedrock", "claude-public-name", entry, deps)
        assert isinstance(backend, BedrockBackend)
        try:
            return await scenario(backend)
        finally:
            await backend.aclose()
            await deps.aclose()

    return asyncio.run(main())


def bedrock_body(**changes: Any) -> dict[str, Any]:
    body = {k: v for k, v in CLIENT_BODY.items() if k != "model"}
    return {**body, "anthropic_version": "bedrock-2023-05-31", **changes}


def test_a_messages_door_body_reaches_invoke_model_unchanged_but_for_bedrocks_fields(
    fake_bedrock: FakeBedrock,
) -> None:
    async def scenario(backend: BedrockBackend) -> Any:
        request = from_messages_door(CLIENT_BODY, cap=2000, betas=CLAUDE_CODE_BETAS)
        return await backend.complete(request, Deadline.in_seconds(30))

    answer = run(fake_bedrock, scenario)
    sent = fake_bedrock.requests[-1]
    assert sent.path == f"/model/{MODEL_ID}/invoke"
    # Bedrock answers "invalid beta flag" to Claude Code's own flags: only those it accepts go
    assert sent.body == bedrock_body(max_tokens=2000, anthropic_beta=["interleaved-thinking-2025-05-14"])
    assert answer.native is not None and answer.native.body["content"][0]["signature"] == SIGNATURE
    (reasoning,) = [p for p in answer.outputs[0].parts if isinstance(p, Reasoning)]
    assert (reasoning.text, reasoning.signature) == (THINKING, SIGNATURE)


def test_a_streamed_call_yields_anthropics_own_events_from_the_chunks(fake_bedrock: FakeBedrock) -> None:
    fake_bedrock.then(Script(cache_read_tokens=40, cache_write_tokens=8))

    async def scenario(backend: BedrockBackend) -> Any:
        request = from_messages_door({**CLIENT_BODY, "stream": True})
        return await collect(backend.stream(request, Deadline.in_seconds(30)))

    events, error = run(fake_bedrock, scenario)
    assert error is None
    sent = fake_bedrock.requests[-1]
    assert sent.path == f"/model/{MODEL_ID}/invoke-with-response-stream"
    assert sent.body == bedrock_body()  # no `stream`, no `anthropic_beta` when the client sent none
    upstream = stream_events(sent.body)
    assert [e.native["type"] for e in events if e.native] == [e["type"] for e in upstream if e["type"] != "ping"]
    assert "".join(d.signature for e in events for d in e.deltas) == SIGNATURE
    (usage,) = usages(events)
    assert (usage.cache_read, usage.cache_write) == (40, 8)
    assert usage.input == upstream[0]["message"]["usage"]["input_tokens"] + 48
    assert stops(events) == ["end"]


def test_a_catalog_entry_extends_the_beta_flags_and_converse_takes_none(fake_bedrock: FakeBedrock) -> None:
    async def scenario(backend: BedrockBackend) -> None:
        request = from_messages_door(CLIENT_BODY, betas=[*CLAUDE_CODE_BETAS, "new-flag-2027-01-01"])
        await backend.complete(request, Deadline.in_seconds(30))

    run(fake_bedrock, scenario, beta_flags=["new-flag-2027-01-01"])
    assert fake_bedrock.requests[-1].body["anthropic_beta"] == [
        "interleaved-thinking-2025-05-14",
        "new-flag-2027-01-01",
    ]
    with pytest.raises(CatalogError, match="beta_flags"):
        build_backend("bedrock", "m", {"model_id": MODEL_ID, "beta_flags": ["x"]}, BackendDeps())
    with pytest.raises(CatalogError, match="'api' must be one of converse, invoke"):
        build_backend("bedrock", "m", {"model_id": MODEL_ID, "api": "chat"}, BackendDeps())


def test_a_tool_round_trip_from_the_chat_door(fake_bedrock: FakeBedrock) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]

    async def scenario(backend: BedrockBackend) -> None:
        first = await backend.complete(chat("m", "find it", tools=tools), Deadline.in_seconds(30))
        (call,) = [p for p in first.outputs[0].parts if isinstance(p, ToolCall)]
        events, _ = await collect(
            backend.stream(chat("m", "find it", tools=tools, stream=True), Deadline.in_seconds(30))
        )
        assert json.loads("".join(d.arguments for d in tool_deltas(events))) == json.loads(call.arguments)
        tool_call = {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        history = [
            {"role": "user", "content": "find it"},
            {"role": "assistant", "content": None, "tool_calls": [tool_call]},
            {"role": "tool", "tool_call_id": call.id, "content": "found"},
        ]
        second = await backend.complete(chat("m", "", messages=history, tools=tools), Deadline.in_seconds(30))
        assert [p.text for p in second.outputs[0].parts if isinstance(p, Text)] == ["The tool said: found"]

    run(fake_bedrock, scenario)
    sent = fake_bedrock.requests[-1].body
    assert "model" not in sent and sent["anthropic_version"] == "bedrock-2023-05-31"
    assert sent["messages"][2]["content"][0]["type"] == "tool_result"


def test_failures_before_and_after_the_first_byte(fake_bedrock: FakeBedrock) -> None:
    fake_bedrock.then(
        Script(status=400, error_type="ValidationException", message="invalid beta flag"),
        Script(exception_after_events=4),
    )

    async def scenario(backend: BedrockBackend) -> None:
        with pytest.raises(UpstreamRejected, match="invalid beta flag"):
            await backend.complete(chat("m", "hi"), Deadline.in_seconds(30))
        events, error = await collect(backend.stream(chat("m", "hi", stream=True), Deadline.in_seconds(30)))
        assert streamed_text(events) == "Hello"
        assert isinstance(error, UpstreamError)

    run(fake_bedrock, scenario)


@pytest.mark.parametrize("api", ["invoke", "converse"])
def test_count_tokens_is_bedrocks_own_count(fake_bedrock: FakeBedrock, api: str) -> None:
    async def scenario(backend: BedrockBackend) -> int:
        return await backend.count_tokens(chat("m", "three little words", max_tokens=5))

    assert run(fake_bedrock, scenario, api=api) == 3
    sent = fake_bedrock.requests[-1]
    assert sent.path == f"/model/{MODEL_ID}/count-tokens"
    assert set(sent.body["input"]) == {"invokeModel" if api == "invoke" else "converse"}
