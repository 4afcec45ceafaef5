"""What a conversation from another door becomes in Anthropic's Messages dialect, and what Anthropic's
messages and events become in the conversation model, decided before any call."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatgw.backends import _anthropic_dialect as dialect
from chatgw.conversation import Conversation, Document, Message, Reasoning, Text, Tool, ToolCall
from chatgw.errors import UnsupportedParameter
from tests.support.backend_calls import stops, tool_deltas
from tests.support.conversations import conversation_of

TOOLS = [{"type": "function", "function": {"name": "lookup"}}]


def ask(**params: Any) -> Conversation:
    return conversation_of({"model": "claude", "messages": [{"role": "user", "content": "hi"}], **params})


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"seed": 1}, "seed"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
    ],
)
def test_settings_anthropic_cannot_take_are_refused_by_the_doors_name(params: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        dialect.check(ask(**params))
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("params", "sent"),
    [
        ({"tools": TOOLS, "tool_choice": "auto"}, {"type": "auto"}),
        ({"tools": TOOLS, "tool_choice": "required"}, {"type": "any"}),
        ({"tools": TOOLS, "tool_choice": "none"}, {"type": "none"}),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "lookup"}}},
            {"type": "tool", "name": "lookup"},
        ),
        ({"tools": TOOLS, "parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        (
            {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False},
            {"type": "any", "disable_parallel_tool_use": True},
        ),
    ],
)
def test_tool_choice_in_anthropics_words(params: dict[str, Any], sent: dict[str, Any]) -> None:
    request = ask(**params)
    dialect.check(request)
    assert dialect.translate(request)["tool_choice"] == sent


def test_no_op_values_pass_and_the_cap_defaults_when_nobody_set_one() -> None:
    request = ask(n=1, logprobs=False, frequency_penalty=0, user="u-1")
    dialect.check(request)
    body = dialect.request_body(request, model="up")
    assert body == {
        "model": "up",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "metadata": {"user_id": "u-1"},
        "max_tokens": dialect.DEFAULT_MAX_TOKENS,
    }


def test_parts_with_cache_markers_thinking_budget_documents_and_redacted_thinking() -> None:
    request = Conversation(
        model="claude",
        messages=(
            Message("system", (Text("rules", cache=True),)),
            Message("user", (Document(data="data:application/pdf;base64,JVBERi0=", cache=True), Text("q"))),
            Message(
                "assistant",
                (
                    Reasoning(encrypted="opaque", redacted=True, dialect="anthropic"),
                    Reasoning("t", signature="S", dialect="bedrock_converse"),
                    ToolCall("t1", "lookup", '{"a": 1}'),
                ),
            ),
        ),
        tools=(Tool("lookup", "Look up", {"type": "object"}, cache=True),),
        thinking_budget=2048,
    )
    body = dialect.translate(request)
    ephemeral = {"type": "ephemeral"}
    assert body["system"] == [{"type": "text", "text": "rules", "cache_control": ephemeral}]
    assert body["messages"][0]["content"][0] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        "cache_control": ephemeral,
    }
    assert body["messages"][1]["content"] == [
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "thinking", "thinking": "t", "signature": "S"},
        {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"a": 1}},
    ]
    assert body["tools"][0]["cache_control"] == ephemeral
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}


def test_tool_arguments_that_are_not_an_object_are_refused() -> None:
    request = Conversation(model="claude", messages=(Message("assistant", (ToolCall("t1", "f", "[1]"),)),))
    with pytest.raises(UnsupportedParameter, match="must be a JSON object"):
        dialect.check(request)


def test_a_message_with_every_block_kind_and_each_stop_reason() -> None:
    content = [
        {"type": "thinking", "thinking": "hm", "signature": "S1"},
        {"type": "redacted_thinking", "data": "R"},
        {"type": "text", "text": "yes"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"x": [1]}},
        {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
    ]
    usage = {"input_tokens": 5, "output_tokens": 9, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}
    answer = dialect.answer_from({"content": content, "stop_reason": "tool_use", "usage": usage})
    thinking, redacted, text, call = answer.outputs[0].parts
    assert thinking == Reasoning("hm", signature="S1", dialect="anthropic")
    assert redacted == Reasoning(encrypted="R", redacted=True, dialect="anthropic")
    assert text == Text("yes") and isinstance(call, ToolCall) and json.loads(call.arguments) == {"x": [1]}
    assert answer.usage is not None and (answer.usage.input, answer.usage.output) == (125, 9)
    expected = {
        "end_turn": "end",
        "max_tokens": "length",
        "stop_sequence": "stop_sequence",
        "pause_turn": "pause",
        "refusal": "refusal",
        "tool_use": "tool_use",
    }
    for native, stop in expected.items():
        assert dialect.answer_from({"content": [], "stop_reason": native}).outputs[0].stop == stop


def test_the_stream_mapper_numbers_tool_calls_and_says_the_usage_once_at_the_end() -> None:
    mapper = dialect.StreamMapper()
    start_usage = {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 10}
    raw = [
        {"type": "message_start", "message": {"usage": start_usage}},
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "x", "name": "f", "input": {}},
        },
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "y", "name": "g", "input": {}},
        },
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}},
        {"type": "message_stop"},
    ]
    events = [e for e in (mapper.feed(r) for r in raw) if e is not None]
    assert len(events) == len(raw) - 1  # all but the ping, each with its own event as native
    assert [(d.index, d.id) for d in tool_deltas(events)] == [(0, "x"), (0, None), (1, "y")]
    assert stops(events) == ["tool_use"]
    assert [e.usage for e in events if e.usage] == [events[-1].usage]
    assert events[-1].usage is not None and (events[-1].usage.input, events[-1].usage.output) == (15, 30)
