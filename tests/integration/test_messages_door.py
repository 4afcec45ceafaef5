"""The anthropic SDK drives `chatgw serve` (a real process on loopback) through the Messages door: to
the echo model, and to the fake OpenAI-compatible upstream (tools, usage with cache reads). Every
answer, event and error is read with the SDK's own types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent

from chatgw.access.keys import Limits
from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_openai import FakeOpenAI, Script
from tests.support.polling import eventually
from tests.support.sdk import anthropic_client
from tests.support.served import away_from_a_minute_boundary
from tests.support.servers import Gateway, running_gateway

QUESTION = "What is the capital of France?"
TOOLS: Any = [
    {"name": "lookup", "description": "Look it up", "input_schema": {"type": "object"}},
    {"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
]
EVENTS: Any = pydantic.TypeAdapter(RawMessageStreamEvent)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, _openai_server: FakeOpenAI, _bedrock_server: FakeBedrock
) -> Iterator[Gateway]:
    catalog = {
        "echo": {"backend": "echo", "aliases": ["claude-haiku-4-5-20251001"]},
        "gpt-fake": {**_openai_server.catalog_entry("gpt-fake")},
        "converse-fake": {"backend": "bedrock", "model_id": "anthropic.claude-fake-v1:0", "region": "us-east-1"},
    }
    env = {
        **FakeBedrock.AWS_ENV,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": _bedrock_server.url,
        "FAKE_UPSTREAM_KEY": "sk-upstream",
        "CHATGW_MODELS": json.dumps(catalog),
    }
    with running_gateway(tmp_path_factory.mktemp("gw") / "state", env) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _fresh(fake_openai: FakeOpenAI, fake_bedrock: FakeBedrock) -> None:
    """The fake upstreams are reset before each test (the fixtures do it)."""


def client(gateway: Gateway, key: str | None = None) -> anthropic.Anthropic:
    return anthropic_client(gateway.base_url, key or gateway.key)  # type: ignore[no-any-return]


def raw_stream(gateway: Gateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The streamed answer's events as sent, each checked: `event:` names `data.type`, and the data
    validates as the SDK's `RawMessageStreamEvent` (pings aside, which the SDK skips)."""
    events = []
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/v1/messages?beta=true",
        json={**body, "stream": True},
        headers={"authorization": f"Bearer {gateway.key}", "anthropic-version": "2023-06-01"},
        timeout=30,
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    for frame in text.split("\n\n"):
        if not frame:
            continue
        name, data = frame.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        if event["type"] not in ("ping", "error"):
            EVENTS.validate_python(event)
        events.append(event)
    return events


def test_buffered_answer_from_echo(gateway: Gateway) -> None:
    message = client(gateway).messages.create(
        model="echo", max_tokens=100, messages=[{"role": "user", "content": "hello there world"}]
    )
    Message.model_validate(message.model_dump())
    assert message.id.startswith("msg_") and message.model == "echo"
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "hello there world"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 3


def test_a_stop_sequence_is_named_buffered_and_streamed(gateway: Gateway) -> None:
    ask: Any = {
        "model": "echo",
        "max_tokens": 100,
        "stop_sequences": ["STOP"],
        "messages": [{"role": "user", "content": "go on STOP never said"}],
    }
    message = client(gateway).messages.create(**ask)
    assert (message.stop_reason, message.stop_sequence, message.content[0].text) == ("stop_sequence", "STOP", "go on")  # type: ignore[union-attr]
    with client(gateway).messages.stream(**ask) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "STOP")


def test_a_dated_alias_reaches_its_entry_and_is_answered_by_its_name(gateway: Gateway) -> None:
    message = client(gateway).messages.create(
        model="claude-haiku-4-5-20251001", max_tokens=100, messages=[{"role": "user", "content": "aliased"}]
    )
    assert message.content[0].text == "aliased" and message.model == "claude-haiku-4-5-20251001"  # type: ignore[union-attr]


def test_a_keys_model_permission_applies_to_the_entry_an_alias_names(gateway: Gateway) -> None:
    ask: Any = {"model": "claude-haiku-4-5-20251001", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(anthropic.NotFoundError):
        client(gateway, gateway.create_key(allowed_models=("gpt-fake",))).messages.create(**ask)
    assert client(gateway, gateway.create_key(allowed_models=("echo",))).messages.create(**ask).content


def test_streamed_answer_final_message_and_the_grammar(gateway: Gateway) -> None:
    body: Any = {"model": "echo", "max_tokens": 100, "messages": [{"role": "user", "content": "one two three"}]}
    with client(gateway).messages.stream(**body) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "one two three" and final.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert final.usage.output_tokens == 3
    events = raw_stream(gateway, body)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1
    assert {e["index"] for e in events if "index" in e} == {0}


def test_unknown_fields_claude_code_sends_are_dropped_toward_echo(gateway: Gateway) -> None:
    message = client(gateway).messages.create(
        model="echo",
        max_tokens=32000,
        system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": "still answered"},
            {"role": "system", "content": [{"type": "text", "text": "# Environment"}]},  # type: ignore[list-item,misc]
        ],
        metadata={"user_id": json.dumps({"session_id": "s"})},
        thinking={"type": "adaptive", "display": "omitted"},  # type: ignore[typeddict-unknown-key]
        extra_body={
            "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
            "output_config": {"effort": "high"},
        },
    )
    assert message.content[0].text == "still answered"  # type: ignore[union-attr]


def test_an_unknown_field_that_changes_the_answer_is_refused_by_name(gateway: Gateway) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(gateway).messages.create(
            model="gpt-fake",
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"mcp_servers": [{"type": "url", "url": "https://mcp.example"}]},
        )
    assert caught.value.status_code == 400 and "`mcp_servers`" in caught.value.message
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_errors_are_the_sdks_exceptions_with_anthropics_types(gateway: Gateway) -> None:
    with pytest.raises(anthropic.AuthenticationError) as auth:
        client(gateway, "sk-chatgw-wrong").messages.create(
            model="echo", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert auth.value.response.headers["request-id"] == auth.value.body["request_id"]  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client(gateway).messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error" and "`nope`" in missing.value.message  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as invalid:
        client(gateway).messages.create(
            model="echo", max_tokens=anthropic.NOT_GIVEN, messages=[{"role": "user", "content": "x"}], timeout=30
        )
    assert invalid.value.body["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}  # type: ignore[index]


def test_rate_limited_is_a_429_with_retry_after_and_anthropics_headers(gateway: Gateway) -> None:
    away_from_a_minute_boundary()
    key = gateway.create_key(limits=Limits(requests_per_minute=1))
    ask: Any = {"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    first = client(gateway, key).messages.with_raw_response.create(**ask)
    assert first.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert first.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert first.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    with pytest.raises(anthropic.RateLimitError) as limited:
        client(gateway, key).messages.create(**ask)
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(limited.value.response.headers["retry-after"]) >= 1


def test_count_tokens_is_a_404_when_the_backend_cannot_count(gateway: Gateway) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client(gateway).messages.count_tokens(model="echo", messages=[{"role": "user", "content": "x"}])
    assert "cannot count tokens" in caught.value.message


def test_models_in_anthropics_shape_and_openais_without_the_version_header(gateway: Gateway) -> None:
    page = client(gateway).models.list()
    assert [m.id for m in page.data] == ["echo", "gpt-fake", "converse-fake"] and page.data[0].type == "model"
    assert page.first_id == "echo" and page.last_id == "converse-fake" and page.has_more is False
    plain = httpx.get(f"{gateway.base_url}/v1/models", headers={"authorization": f"Bearer {gateway.key}"}).json()
    assert plain["object"] == "list" and plain["data"][0]["object"] == "model"
    assert httpx.head(f"{gateway.base_url}/").status_code == 200


def test_parallel_tool_calls_from_an_openai_upstream_become_tool_use_blocks(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.then(Script(every_tool=True, cached_tokens=3))
    message = client(gateway).messages.create(
        model="gpt-fake", max_tokens=100, tools=TOOLS, messages=[{"role": "user", "content": QUESTION}]
    )
    assert message.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in message.content] == [  # type: ignore[union-attr]
        ("tool_use", "lookup", {"query": QUESTION, "n": 1}),
        ("tool_use", "weather", {"query": QUESTION, "n": 2}),
    ]
    prompt = len(QUESTION.split())
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (prompt - 3, 3)
    sent = fake_openai.requests[0].body
    assert [t["function"]["name"] for t in sent["tools"]] == ["lookup", "weather"]


def test_streamed_parallel_tool_calls_and_a_tool_round_trip(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(every_tool=True))
    body: Any = {
        "model": "gpt-fake",
        "max_tokens": 100,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": QUESTION}],
    }
    events = raw_stream(gateway, body)
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [(e["index"], e["content_block"]["name"]) for e in starts] == [(0, "lookup"), (1, "weather")]
    with client(gateway).messages.stream(**body) as stream:
        final = stream.get_final_message()
    calls = [b for b in final.content if b.type == "tool_use"]
    assert [c.input for c in calls] == [{"query": QUESTION}]  # the fake calls one tool unless scripted
    answer = client(gateway).messages.create(
        model="gpt-fake",
        max_tokens=100,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": [c.model_dump() for c in calls]},  # type: ignore[misc]
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "Paris"}]},
        ],
    )
    assert answer.content[0].text == "The tool said: Paris"  # type: ignore[union-attr]
    sent = fake_openai.requests[-1].body["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": calls[0].id, "content": "Paris"}
    assert json.loads(sent[-2]["tool_calls"][0]["function"]["arguments"]) == {"query": QUESTION}


def test_an_upstream_failure_after_the_first_byte_is_an_error_event(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(error_event_after_chunks=3))
    body: Any = {"model": "gpt-fake", "max_tokens": 100, "messages": [{"role": "user", "content": QUESTION}]}
    events = raw_stream(gateway, body)
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "error"
    assert events[-1]["error"]["type"] == "api_error" and "message_stop" not in [e["type"] for e in events]
    fake_openai.then(Script(error_event_after_chunks=3))
    with pytest.raises(anthropic.APIStatusError), client(gateway).messages.stream(**body) as stream:
        stream.get_final_message()


def test_the_ledger_has_the_streamed_request(gateway: Gateway) -> None:
    key = gateway.create_key()
    with client(gateway, key).messages.stream(
        model="echo", max_tokens=10, messages=[{"role": "user", "content": "ledger"}]
    ) as stream:
        stream.get_final_message()
    store = gateway.store()
    events = eventually(lambda: store.usage_events(key.split("_")[1]))
    store.close()
    assert [(e.streamed, e.model, e.completion_tokens, e.door) for e in events] == [(True, "echo", 1, "messages")]


@pytest.mark.parametrize("stream", [False, True])
def test_a_converse_upstream_with_tools_and_claude_codes_system_message(
    gateway: Gateway, fake_bedrock: FakeBedrock, stream: bool
) -> None:
    ask: Any = {
        "model": "converse-fake",
        "max_tokens": 100,
        "system": "be brief",
        "tools": TOOLS[:1],
        "messages": [{"role": "user", "content": QUESTION}, {"role": "system", "content": "# Environment"}],
        "extra_body": {"context_management": {"edits": []}},
    }
    if stream:
        with client(gateway).messages.stream(**ask) as events:
            message = events.get_final_message()
    else:
        message = client(gateway).messages.create(**ask)
    (call,) = message.content
    assert (message.stop_reason, call.type, call.input) == ("tool_use", "tool_use", {"query": QUESTION})  # type: ignore[union-attr]
    answer = client(gateway).messages.create(
        model="converse-fake",
        max_tokens=100,
        tools=TOOLS[:1],
        messages=[
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": [call.model_dump()]},  # type: ignore[misc]
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},  # type: ignore[union-attr]
        ],
    )
    assert answer.content[0].text == "The tool said: sunny"  # type: ignore[union-attr]
