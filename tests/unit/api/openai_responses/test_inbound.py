"""A Responses request as the conversation backends get: instructions and developer messages as
system text, a call and the reasoning before it in one assistant turn, parallel calls together, each
output a tool result, custom tools as one-string functions, the settings by their Responses names."""

from __future__ import annotations

import json
from typing import Any

from chatgw.api.openai_responses.inbound import CUSTOM_INPUT, to_conversation
from chatgw.api.openai_responses.validation import parse_responses_request
from chatgw.conversation import Conversation, Reasoning, Text, ToolCall, ToolResult


def conversation(**body: Any) -> Conversation:
    raw = json.dumps({"model": "m", **body}).encode()
    return to_conversation(parse_responses_request(raw), raw)


def test_history_items_become_messages() -> None:
    c = conversation(
        instructions="be kind",
        input=[
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
            {"role": "user", "content": "weather in two cities?"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "two calls"}],
             "encrypted_content": "opaque"},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": '{"q":"a"}'},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": '{"q":"b"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "sun"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
            {"type": "custom_tool_call", "call_id": "c3", "name": "apply_patch", "input": "*** Begin"},
        ],
    )  # fmt: skip
    roles = [m.role for m in c.messages]
    assert roles == ["system", "system", "user", "assistant", "tool", "tool", "assistant"]
    assert c.system == "be kind\n\nrules"
    reasoning, first, second = c.messages[3].parts
    assert reasoning == Reasoning(text="two calls", encrypted="opaque", dialect="openai_responses")
    assert (first, second) == (ToolCall("c1", "w", '{"q":"a"}'), ToolCall("c2", "w", '{"q":"b"}'))
    assert c.messages[5].parts == (ToolResult("c2", (Text("rain"),)),)
    (patch,) = c.messages[6].parts
    assert isinstance(patch, ToolCall) and json.loads(patch.arguments) == {"input": "*** Begin"}


def test_settings_keep_their_responses_names() -> None:
    c = conversation(
        input="hi",
        max_output_tokens=9,
        reasoning={"effort": "low", "summary": "auto"},
        text={"format": {"type": "json_object"}, "verbosity": "low"},
        tools=[{"type": "custom", "name": "apply_patch"}, {"type": "web_search"}],
        include=["reasoning.encrypted_content"],
        store=False,
        client_metadata={"x": "y"},
    )
    assert c.max_output_tokens == 9 and c.reasoning_effort == "low"
    assert c.response_format is not None and c.response_format.kind == "json_object"
    assert [t.parameters for t in c.tools] == [CUSTOM_INPUT]
    assert c.params["hosted_tools"] == [{"type": "web_search"}]
    assert c.given == {"max_output_tokens", "reasoning_effort", "response_format", "tools", "verbosity"}
    assert [c.spelled(n) for n in ("reasoning_effort", "response_format", "verbosity")] == [
        "reasoning.effort",
        "text.format",
        "text.verbosity",
    ]
