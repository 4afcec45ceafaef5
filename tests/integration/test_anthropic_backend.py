"""The `anthropic` backend in front of the fake Anthropic server: what the upstream receives (the
client's own body from a Messages-door request, byte for byte but for the model and the cap; a
translated body otherwise), what comes back (thinking signatures unchanged, tool calls, usage with
cache tokens), how the upstream's failures reach the client, and count_tokens."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from chatgw.backends import BackendDeps, build_backend
from chatgw.backends.anthropic import AnthropicBackend
from chatgw.conversation import (
    Conversation,
    Message,
    Reasoning,
    Text,
    ToolCall,
    ToolResult,
)
from chatgw.deadline import Deadline
from chatgw.errors import (
    ChatgwError,
    RequestTooLarge,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from tests.fakes.fake_anthropic import SIGNATURE, THINKING, FakeAnthropic, Script, stream_events
from tests.support.backend_calls import chat, collect, stops, streamed_text, tool_deltas, usages
from tests.support.messages_door import CLIENT_BODY, from_messages_door

T = TypeVar("T")
KEY = "sk-ant-fake-upstream-key-123456"


def backend_for(server: FakeAnthropic, **options: Any) -> Callable[[BackendDeps], AnthropicBackend]:
    def make(deps: BackendDeps) -> AnthropicBackend:
        entry = {"base_url": server.base_url, "upstream_model": "claude-upstream", "max_retries": 0}
        entry.update({"api_key_env": "ANTHROPIC_TEST_KEY", **options})
        backend = build_backend("anthropic", "claude-public-name", entry, deps)
        assert isinstance(backend, AnthropicBackend)
        return backend

    return make


def run(
    make: Callable[[BackendDeps], AnthropicBackend], scenario: Callable[[AnthropicBackend], Coroutine[Any, Any, T]]
) -> T:
    async def main() -> T:
        deps = BackendDeps()
        backend = make(deps)
        try:
            return await scenario(backend)
        finally:
            await backend.aclose()
            await deps.aclose()

    return asyncio.run(main())


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", KEY)


def test_a_messages_door_body_reaches_the_upstream_unchanged_but_for_model_and_cap(
    fake_anthropic: FakeAnthropic,
) -> None:
    async def scenario(backend: AnthropicBackend) -> None:
        answer = await backend.complete(from_messages_door(CLIENT_BODY, cap=2000), Deadline.in_seconds(30))
        sent = fake_anthropic.requests[-1]
        assert sent.body == {**CLIENT_BODY, "model": "claude-upstream", "max_tokens": 2000}
        assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in sent.headers
        # the answer's own thinking signature comes back unchanged, in the native body and in the parts
        assert answer.native is not None and answer.native.dialect == "anthropic"
        assert answer.native.body["content"][0] == {
            "type": "thinking",
            "thinking": THINKING,
            "signature": SIGNATURE,
        }
        (reasoning,) = [p for p in answer.outputs[0].parts if isinstance(p, Reasoning)]
        assert reasoning.signature == SIGNATURE and reasoning.dialect == "anthropic"

    run(backend_for(fake_anthropic), scenario)


def test_a_streamed_messages_door_call_keeps_every_upstream_event_and_the_signature(
    fake_anthropic: FakeAnthropic,
) -> None:
    async def scenario(backend: AnthropicBackend) -> None:
        request = from_messages_door({**CLIENT_BODY, "stream": True})
        events, error = await collect(backend.stream(request, Deadline.in_seconds(30)))
        assert error is None
        assert fake_anthropic.requests[-1].body == {**CLIENT_BODY, "model": "claude-upstream", "stream": True}
        natives = [e.native for e in events]
        expected = stream_events({**CLIENT_BODY, "model": "claude-upstream", "stream": True})
        assert natives == [e for e in expected if e["type"] != "ping"]
        assert all(e.dialect == "anthropic" for e in events)
        assert "".join(d.signature for e in events for d in e.deltas) == SIGNATURE
        assert "".join(d.reasoning for e in events for d in e.deltas) == THINKING
        assert stops(events) == ["end"]

    run(backend_for(fake_anthropic), scenario)


def test_beta_flags_are_forwarded_from_the_allow_list_and_the_catalog_extends_it(fake_anthropic: FakeAnthropic) -> None:
    flags = ["interleaved-thinking-2025-05-14", "made-up-flag-2030-01-01", "extra-flag-2026-01-01"]

    async def scenario(backend: AnthropicBackend) -> None:
        await backend.complete(from_messages_door(CLIENT_BODY, betas=flags), Deadline.in_seconds(30))

    run(backend_for(fake_anthropic), scenario)
    assert fake_anthropic.requests[-1].headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    run(backend_for(fake_anthropic, beta_flags=["extra-flag-2026-01-01"]), scenario)
    assert fake_anthropic.requests[-1].headers["anthropic-beta"] == (
        "interleaved-thinking-2025-05-14,extra-flag-2026-01-01"
    )


def test_a_tool_round_trip_from_the_chat_door(fake_anthropic: FakeAnthropic) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]

    async def scenario(backend: AnthropicBackend) -> None:
        first = await backend.complete(chat("m", "find the capital", tools=tools), Deadline.in_seconds(30))
        (call,) = [p for p in first.outputs[0].parts if isinstance(p, ToolCall)]
        assert first.outputs[0].stop == "tool_use"
        assert json.loads(call.arguments) == {"query": "find the capital"}
        history = [
            {"role": "user", "content": "find the capital"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "Paris"},
        ]
        second = await backend.complete(chat("m", "", messages=history, tools=tools), Deadline.in_seconds(30))
        assert second.outputs[0].stop == "end"
        assert [p.text for p in second.outputs[0].parts if isinstance(p, Text)] == ["The tool said: Paris"]
        sent = fake_anthropic.requests[-1].body["messages"]
        assert sent[1] == {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": call.id, "name": "lookup", "input": {"query": "find the capital"}}],
        }
        assert sent[2] == {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": [{"type": "text", "text": "Paris"}]}
            ],
        }

    run(backend_for(fake_anthropic), scenario)


def test_streamed_tool_calls_are_numbered_among_tool_calls_after_a_thinking_block(
    fake_anthropic: FakeAnthropic,
) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    fake_anthropic.then(Script(thinking=True))

    async def scenario(backend: AnthropicBackend) -> None:
        request = chat("m", "find it", stream=True, tools=tools)
        events, error = await collect(backend.stream(request, Deadline.in_seconds(30)))
        assert error is None
        deltas = tool_deltas(events)
        assert {d.index for d in deltas} == {0}  # the tool_use block is the upstream's block 1
        assert deltas[0].id == "call_fake_1" and deltas[0].name == "lookup"
        assert json.loads("".join(d.arguments for d in deltas)) == {"query": "find it"}
        assert stops(events) == ["tool_use"]

    run(backend_for(fake_anthropic), scenario)


def test_usage_counts_cache_reads_and_writes_as_input_buffered_and_streamed(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.then(
        Script(cache_read_tokens=100, cache_write_tokens=20), Script(cache_read_tokens=100, cache_write_tokens=20)
    )

    async def scenario(backend: AnthropicBackend) -> None:
        answer = await backend.complete(chat("m", "two words"), Deadline.in_seconds(30))
        events, _ = await collect(backend.stream(chat("m", "two words", stream=True), Deadline.in_seconds(30)))
        (streamed,) = usages(events)
        for usage in (answer.usage, streamed):
            assert usage is not None
            assert (usage.input, usage.cache_read, usage.cache_write) == (2 + 100 + 20, 100, 20)
            assert usage.output == len(streamed_text(events).split())

    run(backend_for(fake_anthropic), scenario)


def test_the_translated_request_carries_system_images_stops_sampling_and_tool_choice_none(
    fake_anthropic: FakeAnthropic,
) -> None:
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    tools = [
        {"type": "function", "function": {"name": "lookup", "description": "Look up", "parameters": {"type": "object"}}}
    ]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    request = chat(
        "m",
        "",
        messages=messages,
        tools=tools,
        tool_choice="none",
        stop=["x"],
        temperature=0.2,
        top_p=0.9,
        max_tokens=50,
    )

    async def scenario(backend: AnthropicBackend) -> None:
        backend.check(request)
        await backend.complete(request, Deadline.in_seconds(30))

    run(backend_for(fake_anthropic), scenario)
    sent = fake_anthropic.requests[-1].body
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]
    assert sent["tool_choice"] == {"type": "none"}
    assert sent["tools"] == [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}]
    assert (sent["stop_sequences"], sent["temperature"], sent["top_p"], sent["max_tokens"]) == (["x"], 0.2, 0.9, 50)
    assert sent["model"] == "claude-upstream" and "stream" not in sent


ERRORS: list[tuple[Script, type[ChatgwError], str | None]] = [
    (
        Script(status=400, message="messages.1: `thinking` blocks need a signature"),
        UpstreamRejected,
        "messages.1: `thinking` blocks need a signature",
    ),
    (Script(status=404, message="model: claude-nope"), UpstreamRejected, "model: claude-nope"),
    (
        Script(status=413, message="Request exceeds the maximum size"),
        RequestTooLarge,
        "Request exceeds the maximum size",
    ),
    (Script(status=401, message=f"invalid x-api-key {KEY}"), UpstreamError, None),
    (Script(status=400, message=f"key {KEY} cannot use this model"), UpstreamRejected, "key *** cannot use this model"),
    (Script(status=429, message="slow down", headers={"retry-after": "7"}), UpstreamRateLimited, None),
    (Script(status=529, message="Overloaded"), UpstreamOverloaded, None),
    (Script(status=500, message="Internal server error"), UpstreamError, None),
]


@pytest.mark.parametrize(("script", "kind", "message"), ERRORS, ids=[str(s.status) for s, _, _ in ERRORS])
def test_upstream_failures_before_the_first_byte_are_mapped(
    fake_anthropic: FakeAnthropic, script: Script, kind: type[ChatgwError], message: str | None
) -> None:
    async def scenario(backend: AnthropicBackend) -> ChatgwError:
        fake_anthropic.then(script)
        with pytest.raises(ChatgwError) as buffered:
            await backend.complete(chat("m", "hi"), Deadline.in_seconds(30))
        fake_anthropic.then(script)
        _, streamed = await collect(backend.stream(chat("m", "hi", stream=True), Deadline.in_seconds(30)))
        assert type(streamed) is type(buffered.value)
        return buffered.value

    error = run(backend_for(fake_anthropic), scenario)
    assert type(error) is kind
    if message is not None:
        assert error.message == message  # the upstream's own words: Claude Code's recovery reads them
    assert KEY[:8] not in error.message
    if kind is UpstreamRateLimited:
        assert error.headers["retry-after"] == "7"


def test_a_529_is_retried_before_the_first_byte(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.then(Script(status=529, message="Overloaded"))

    async def scenario(backend: AnthropicBackend) -> str:
        answer = await backend.complete(chat("m", "hi"), Deadline.in_seconds(30))
        return "".join(p.text for p in answer.outputs[0].parts if isinstance(p, Text))

    assert run(backend_for(fake_anthropic, max_retries=1), scenario)
    assert len(fake_anthropic.requests) == 2


@pytest.mark.parametrize(
    ("script", "kind"),
    [
        (Script(error_event_after_events=4, error_type="overloaded_error", message="Overloaded"), UpstreamOverloaded),
        (Script(error_event_after_events=4, error_type="api_error", message="boom"), UpstreamError),
        (Script(drop_after_events=4), UpstreamError),
        (Script(end_after_events=4), UpstreamError),
    ],
    ids=["overloaded-event", "error-event", "cut", "ended-early"],
)
def test_a_stream_that_fails_after_the_first_byte_raises_after_its_events(
    fake_anthropic: FakeAnthropic, script: Script, kind: type[ChatgwError]
) -> None:
    fake_anthropic.then(script)

    async def scenario(backend: AnthropicBackend) -> None:
        events, error = await collect(backend.stream(chat("m", "hi", stream=True), Deadline.in_seconds(30)))
        assert streamed_text(events) == "Hello"
        assert type(error) is kind
        assert stops(events) == [] and usages(events) == []

    run(backend_for(fake_anthropic), scenario)


def test_count_tokens_asks_the_upstream_without_generation_settings(fake_anthropic: FakeAnthropic) -> None:
    async def scenario(backend: AnthropicBackend) -> int:
        return await backend.count_tokens(from_messages_door({**CLIENT_BODY, "temperature": 0.5}))

    count = run(backend_for(fake_anthropic), scenario)
    sent = fake_anthropic.requests[-1]
    assert sent.path == "/v1/messages/count_tokens"
    assert "max_tokens" not in sent.body and "temperature" not in sent.body and "metadata" not in sent.body
    assert sent.body["context_management"] == CLIENT_BODY["context_management"]
    assert count == len(["You", "are", "terse.", "first", "question", "first", "answer", "second", "question"])


def test_a_tool_result_history_with_reasoning_of_another_dialect_leaves_that_reasoning_out(
    fake_anthropic: FakeAnthropic,
) -> None:
    history = (
        Message("user", (Text("q"),)),
        Message("assistant", (Reasoning("thought", dialect="openai_chat"), ToolCall("t1", "lookup", "{}"))),
        Message("tool", (ToolResult("t1", (Text("r"),), is_error=True),)),
    )
    request = Conversation(model="m", messages=history)

    async def scenario(backend: AnthropicBackend) -> None:
        await backend.complete(request, Deadline.in_seconds(30))

    run(backend_for(fake_anthropic), scenario)
    sent = fake_anthropic.requests[-1].body["messages"]
    assert sent[1]["content"] == [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}]
    assert sent[2]["content"][0]["is_error"] is True


def test_an_upstream_that_never_answers_is_a_timeout_within_the_deadline(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.then(Script(stall_before_headers=True))

    async def scenario(backend: AnthropicBackend) -> None:
        with pytest.raises(UpstreamTimeout):
            await backend.complete(chat("m", "hi"), Deadline.in_seconds(0.5))

    run(backend_for(fake_anthropic), scenario)


def test_a_connection_never_made_is_unsent_so_the_ledger_books_nothing() -> None:
    """No connection (a closed port): the upstream did no work, as for the openai backend."""
    from chatgw.metering.usage import reached_upstream
    from tests.support.servers import free_port

    def make(deps: BackendDeps) -> AnthropicBackend:
        entry = {"base_url": f"http://127.0.0.1:{free_port()}", "max_retries": 0, "api_key_env": "ANTHROPIC_TEST_KEY"}
        backend = build_backend("anthropic", "claude-public-name", entry, deps)
        assert isinstance(backend, AnthropicBackend)
        return backend

    async def scenario(backend: AnthropicBackend) -> UpstreamError:
        with pytest.raises(UpstreamError) as caught:
            await backend.complete(chat("claude-public-name", "hi"), Deadline.in_seconds(10))
        return caught.value

    error = run(make, scenario)
    assert error.unsent and not reached_upstream(error)
