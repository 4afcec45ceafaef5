"""What Converse can and cannot express, decided before any call."""

from __future__ import annotations

from typing import Any

import pytest

from chatgw.api.openai_chat.completion import usage_dict
from chatgw.backends import _converse_mapping as mapping
from chatgw.conversation import (
    Conversation,
    Delta,
    Message,
    Reasoning,
    Text,
    Tool,
    ToolCall,
    ToolResult,
    Usage,
)
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
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"seed": 1}, "seed"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"parallel_tool_calls": False, "tools": TOOLS}, "parallel_tool_calls"),
        ({"audio": {"voice": "alloy", "format": "mp3"}, "modalities": ["text", "audio"]}, "audio"),
        ({"service_tier": "flex"}, "service_tier"),
    ],
)
def test_parameters_converse_cannot_express_are_refused(params: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        mapping.check(ask(**params))
    assert caught.value.param == param and f"`{param}`" in caught.value.message


HI = [{"role": "user", "content": [{"text": "hi"}]}]
LOOKUP_SPEC = {"name": "lookup", "inputSchema": {"json": {"type": "object", "properties": {}}}}
LOOKUP = {"toolConfig": {"tools": [{"toolSpec": LOOKUP_SPEC}]}}


@pytest.mark.parametrize(
    ("params", "sent"),
    [
        ({"n": 1}, {}),  # no-op values: accepted and not sent
        ({"logprobs": False}, {}),
        ({"presence_penalty": 0}, {}),
        ({"response_format": {"type": "text"}}, {}),
        ({"user": "u-1"}, {}),
        ({"parallel_tool_calls": True, "tools": TOOLS}, LOOKUP),
        (
            {"temperature": 1, "top_p": 0.1, "max_tokens": 5, "stop": "x"},
            {"inferenceConfig": {"maxTokens": 5, "temperature": 1.0, "topP": 0.1, "stopSequences": ["x"]}},
        ),
    ],
)
def test_no_op_values_and_supported_parameters_pass(params: dict[str, Any], sent: dict[str, Any]) -> None:
    request = ask(**params)
    mapping.check(request)  # accepted
    assert mapping.converse_request(request) == {"messages": HI, **sent}  # and sent as Converse says them


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "f-1"}},
    ],
)
def test_content_converse_cannot_take_is_refused_as_messages(part: dict[str, Any]) -> None:
    request = ask(messages=[{"role": "user", "content": [part]}])
    with pytest.raises(UnsupportedParameter) as caught:
        mapping.check(request)
    assert caught.value.param == "messages"


def test_tool_choice_none_drops_the_tools_when_no_tool_was_used() -> None:
    kwargs = mapping.converse_request(ask(tools=TOOLS, tool_choice="none"))
    assert "toolConfig" not in kwargs


def test_tool_choice_none_is_refused_once_tools_were_used() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    request = ask(
        tools=TOOLS,
        tool_choice="none",
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
    )
    with pytest.raises(UnsupportedParameter) as caught:
        mapping.check(request)
    assert caught.value.param == "tool_choice"


def test_tool_arguments_that_are_not_an_object_are_refused() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "[1, 2]"}}
    request = ask(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [call]}])
    with pytest.raises(UnsupportedParameter, match="JSON object"):
        mapping.check(request)


def test_tool_spec_defaults_to_an_empty_object_schema() -> None:
    config = mapping.converse_request(ask(tools=TOOLS, tool_choice="auto"))["toolConfig"]
    assert config == {
        "tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object", "properties": {}}}}}],
        "toolChoice": {"auto": {}},
    }


def test_cached_prompt_tokens_count_as_prompt_tokens() -> None:
    usage = mapping.usage_from({"inputTokens": 10, "outputTokens": 3, "cacheReadInputTokens": 100, "totalTokens": 113})
    assert usage == Usage(input=110, output=3, cache_read=100)
    assert usage_dict(usage) == {  # as a chat client sees it
        "prompt_tokens": 110,
        "completion_tokens": 3,
        "total_tokens": 113,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def test_stream_mapper_numbers_tool_calls_from_zero_whatever_the_block_index() -> None:
    mapper = mapping.StreamMapper()
    events = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "Let me look."}}},
        {
            "contentBlockStart": {
                "contentBlockIndex": 1,
                "start": {"toolUse": {"toolUseId": "a", "name": "x"}},
            }
        },
        {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{}"}}}},
        {
            "contentBlockStart": {
                "contentBlockIndex": 2,
                "start": {"toolUse": {"toolUseId": "b", "name": "y"}},
            }
        },
        {"contentBlockDelta": {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{}"}}}},
        {"messageStop": {"stopReason": "tool_use"}},
    ]
    mapped = [m for e in events for m in mapper.feed(e)]
    assert [(t.index, t.id) for t in tool_deltas(mapped)] == [(0, "a"), (0, None), (1, "b"), (1, None)]
    assert mapped[0].deltas == [Delta()]  # the opening
    assert stops(mapped) == ["tool_use"] and mapped[-1].deltas[0].stop == "tool_use" and mapper.stopped


# ---- conversations from doors other than the chat door (thinking, cache markers, reasoning) ----

CLAUDE_SIGNATURE = "EqQBCkYIBxgCKkAsig=="


def _history_with_tool_use(*, tools: tuple[Tool, ...] = ()) -> Conversation:
    return Conversation(
        model="claude",
        messages=(
            Message("user", (Text("look it up"),)),
            Message(
                "assistant",
                (
                    Reasoning("I should look.", signature=CLAUDE_SIGNATURE, dialect="anthropic"),
                    ToolCall("t1", "lookup", "{}"),
                ),
            ),
            Message("tool", (ToolResult("t1", (Text("found"),)),)),
        ),
        tools=tools,
    )


def test_a_history_with_tool_blocks_gets_a_tool_config_even_without_tools() -> None:
    kwargs = mapping.converse_request(_history_with_tool_use())
    assert kwargs["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object"}}}}]
    }
    assert "toolConfig" not in mapping.converse_request(ask())


def test_claudes_reasoning_goes_back_before_the_tool_call_it_led_to_with_its_signature() -> None:
    assistant = mapping.converse_request(_history_with_tool_use())["messages"][1]["content"]
    assert assistant == [
        {"reasoningContent": {"reasoningText": {"text": "I should look.", "signature": CLAUDE_SIGNATURE}}},
        {"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {}}},
    ]
    other = Conversation(
        model="claude",
        messages=(Message("assistant", (Reasoning("hidden", dialect="openai_chat"), Text("hi"))),),
    )
    assert mapping.converse_request(other)["messages"][0]["content"] == [{"text": "hi"}]


def test_reasoning_round_trips_from_an_answer_and_its_stream() -> None:
    answer = mapping.answer_from(
        {
            "output": {
                "message": {
                    "content": [
                        {"reasoningContent": {"reasoningText": {"text": "Hmm.", "signature": CLAUDE_SIGNATURE}}},
                        {"reasoningContent": {"redactedContent": b"\x00secret"}},
                        {"text": "Yes."},
                    ]
                }
            },
            "stopReason": "end_turn",
        }
    )
    signed, redacted, text = answer.outputs[0].parts
    assert signed == Reasoning("Hmm.", signature=CLAUDE_SIGNATURE, dialect="bedrock_converse")
    assert isinstance(redacted, Reasoning) and redacted.redacted and text == Text("Yes.")
    again = Conversation(model="claude", messages=(Message("assistant", (signed, redacted, text)),))
    assert mapping.converse_request(again)["messages"][0]["content"][:2] == [
        {"reasoningContent": {"reasoningText": {"text": "Hmm.", "signature": CLAUDE_SIGNATURE}}},
        {"reasoningContent": {"redactedContent": b"\x00secret"}},
    ]
    mapper = mapping.StreamMapper()
    deltas = [
        d
        for e in (
            {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Hmm."}}}},
            {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "S=="}}}},
        )
        for event in mapper.feed(e)
        for d in event.deltas
    ]
    assert [(d.reasoning, d.signature) for d in deltas] == [("Hmm.", ""), ("", "S==")]


def test_a_thinking_budget_goes_through_additional_model_request_fields() -> None:
    request = Conversation(model="claude", messages=(Message("user", (Text("hi"),)),), thinking_budget=2048)
    mapping.check(request)
    fields = mapping.converse_request(request)["additionalModelRequestFields"]
    assert fields == {"thinking": {"type": "enabled", "budget_tokens": 2048}}


def test_cache_markers_become_cache_points_after_their_blocks() -> None:
    request = Conversation(
        model="claude",
        messages=(
            Message("system", (Text("long rules", cache=True),)),
            Message("user", (Text("context", cache=True), Text("question"))),
        ),
        tools=(Tool("lookup", cache=True),),
    )
    kwargs = mapping.converse_request(request)
    point = {"cachePoint": {"type": "default"}}
    assert kwargs["system"] == [{"text": "long rules"}, point]
    assert kwargs["messages"][0]["content"] == [{"text": "context"}, point, {"text": "question"}]
    assert kwargs["toolConfig"]["tools"][1] == point
