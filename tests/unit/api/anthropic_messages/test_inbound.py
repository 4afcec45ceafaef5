"""A Messages request as the conversation every backend gets, and the unknown-field rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatgw.api.anthropic_messages import fields
from chatgw.api.anthropic_messages.inbound import to_conversation
from chatgw.api.anthropic_messages.validation import parse_messages_request
from chatgw.conversation import Conversation, Image, Reasoning, Text, ToolCall, ToolChoice, ToolResult
from chatgw.errors import InvalidRequest, UnsupportedParameter


def convert(body: dict[str, Any]) -> Conversation:
    raw = json.dumps(body).encode()
    return to_conversation(parse_messages_request(raw), raw)


BASE: dict[str, Any] = {"model": "m", "max_tokens": 50}


def test_every_block_kind_becomes_its_part() -> None:
    conversation = convert(
        {
            **BASE,
            "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "plan", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "opaque"},
                        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
                        {"type": "thinking", "thinking": "shown by another model", "signature": ""},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done", "is_error": True},
                    ],
                },
            ],
        }
    )
    system, user, assistant, result = conversation.messages
    assert system.parts == (Text("sys", cache=True),)
    assert user.parts == (Text("look"), Image("data:image/png;base64,AAA"))
    assert assistant.parts == (
        Reasoning("plan", signature="sig", dialect="anthropic"),
        Reasoning(encrypted="opaque", redacted=True, dialect="anthropic"),
        ToolCall("toolu_1", "f", '{"a": 1}'),
        Reasoning("shown by another model"),  # unsigned: no backend sends it back as Claude's thinking
    )
    assert result.parts == (ToolResult("toolu_1", (Text("done"),), is_error=True),)
    assert conversation.original is not None and conversation.original.dialect == "anthropic"


def test_settings_and_their_spelling() -> None:
    conversation = convert(
        {
            **BASE,
            "messages": [{"role": "user", "content": "x"}],
            "stop_sequences": ["END"],
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "tools": [{"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
            "top_k": 5,
        }
    )
    assert (conversation.max_output_tokens, conversation.stop, conversation.thinking_budget) == (50, ("END",), 1024)
    assert conversation.tool_choice == ToolChoice("required") and conversation.parallel_tool_calls is False
    assert conversation.tools[0].cache and conversation.sampling.top_k == 5
    assert conversation.spelled("max_output_tokens") == "max_tokens"
    assert conversation.spelled("stop") == "stop_sequences"
    assert {"max_output_tokens", "stop", "thinking_budget", "tool_choice", "tools", "top_k"} <= conversation.given


def test_what_claude_code_sends_is_kept_and_only_what_changes_the_answer_is_given() -> None:
    conversation = convert(
        {
            **BASE,
            "messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "# Environment"}],
            "metadata": {"user_id": "u"},
            "thinking": {"type": "adaptive", "display": "omitted"},
            "context_management": {"edits": []},
            "output_config": {"effort": "medium"},
            "mcp_servers": [{"url": "u"}],
        }
    )
    assert conversation.messages[1].role == "system" and conversation.reasoning_effort == "medium"
    assert set(conversation.params) == {"metadata", "thinking", "context_management", "mcp_servers"}
    assert "mcp_servers" in conversation.given and not {"metadata", "context_management"} & conversation.given
    with pytest.raises(UnsupportedParameter, match="`mcp_servers`"):
        fields.enforce(conversation.params, "m", "r")
    fields.enforce({k: v for k, v in conversation.params.items() if k != "mcp_servers"}, "m", "r")


def test_a_field_nobody_listed_changes_the_answer() -> None:
    assert fields.changes_answer("a_field_of_next_month") and not fields.changes_answer("metadata")
    conversation = convert({**BASE, "messages": [{"role": "user", "content": [{"type": "server_tool_use"}]}]})
    with pytest.raises(UnsupportedParameter, match="content block type `server_tool_use`"):
        fields.enforce(conversation.params, "m", "r")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "m", "messages": []}, "max_tokens: Field required"),
        (
            {**BASE, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages.0.content.0.text: Field required",
        ),
        (
            {**BASE, "messages": [{"role": "robot", "content": "x"}]},
            "messages.0.role: Input should be 'user', 'assistant' or 'system'",
        ),
        (
            {**BASE, "messages": [], "tool_choice": {"type": "tool"}},
            "tool_choice: `name` is required when `type` is `tool`",
        ),
    ],
)
def test_invalid_requests_name_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_messages_request(json.dumps(body).encode())
    assert caught.value.message == message


def test_beta_flags_travel_in_params_for_a_backend_of_the_dialect_and_change_nothing_elsewhere() -> None:
    raw = json.dumps({**BASE, "messages": [{"role": "user", "content": "x"}]}).encode()
    conversation = to_conversation(parse_messages_request(raw), raw, ["claude-code-20250219", "effort-2025-11-24"])
    assert conversation.params["anthropic-beta"] == ["claude-code-20250219", "effort-2025-11-24"]
    assert "anthropic-beta" not in conversation.given
    fields.enforce(conversation.params, "m", "r")  # dropped toward another dialect, no 400
