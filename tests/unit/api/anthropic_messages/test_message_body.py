"""A buffered answer as Anthropic's `message`: blocks, stop reasons, usage, and an upstream of the
dialect sent as it came."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import Message

from chatgw.api.anthropic_messages.outbound import message_body
from chatgw.conversation import Answer, Native, Output, Reasoning, Refusal, Text, ToolCall, Usage
from chatgw.errors import UpstreamError

USAGE = Usage(12, 4, cache_read=5)


def body(answer: Answer) -> dict[str, Any]:
    out = message_body(answer, message_id="msg_x", model="asked", usage=USAGE, stop=("END",))
    Message.model_validate(out)
    return out


def test_parts_become_blocks_in_order() -> None:
    answer = Answer(
        [
            Output(
                [
                    Reasoning("plan", signature="sig", dialect="anthropic"),
                    Reasoning(encrypted="opaque", redacted=True, dialect="anthropic"),
                    Reasoning("from another model", dialect="openai_chat"),
                    Reasoning(encrypted="openai-only", dialect="openai_responses"),
                    Text("Hello"),
                    Text(" world"),
                    ToolCall("call_1", "f", '{"a": [1]}'),
                    ToolCall("call_2", "g", ""),
                ],
                "tool_use",
            )
        ],
        None,
    )
    out = body(answer)
    assert out["content"] == [
        {"type": "thinking", "thinking": "plan", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "thinking", "thinking": "from another model", "signature": ""},
        {"type": "text", "text": "Hello world"},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": [1]}},
        {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
    ]
    assert (out["stop_reason"], out["stop_sequence"]) == ("tool_use", None)
    assert out["usage"] == {
        "input_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 5,
        "output_tokens": 4,
    }


@pytest.mark.parametrize(
    ("stop", "reason", "sequence"),
    [("length", "max_tokens", None), ("stop_sequence", "stop_sequence", "END"), ("pause", "pause_turn", None),
     ("content_filter", "refusal", None), ("refusal", "refusal", None)],
)  # fmt: skip
def test_stop_reasons(stop: Any, reason: str, sequence: str | None) -> None:
    out = body(Answer([Output([Refusal("no")], stop)], None))
    assert (out["stop_reason"], out["stop_sequence"], out["content"]) == (
        reason,
        sequence,
        [{"type": "text", "text": "no"}],
    )


def test_an_upstream_of_the_dialect_goes_as_it_came_restamped() -> None:
    native = {
        "id": "msg_up", "type": "message", "role": "assistant", "model": "claude-up",
        "content": [{"type": "text", "text": "hi", "citations": None}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 1, "service_tier": "standard"},
        "container": None,
    }  # fmt: skip
    out = body(Answer([Output([Text("hi")], "end")], None, Native("anthropic", native)))
    assert out == {**native, "id": "msg_x", "model": "asked"}


def test_tool_arguments_that_are_not_a_json_object_are_an_upstream_error() -> None:
    for arguments in ("{not json", "[1]"):
        with pytest.raises(UpstreamError):
            body(Answer([Output([ToolCall("c", "f", arguments)], "tool_use")], None))
