"""What the Messages door hands a backend, for backend tests written before (and apart from) the door:
a body as Claude Code sends one, and the `Conversation` carrying it as `original`."""

from __future__ import annotations

import json
from typing import Any

from chatgw.conversation import Conversation, Message, Original, Text

# A Messages-door body as Claude Code sends one: an earlier turn's thinking with its signature,
# cache_control on a system block, and fields no door knows of (top level and in a block).
CLIENT_BODY: dict[str, Any] = {
    "model": "claude-public-name",
    "max_tokens": 32000,
    "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": "first question"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Hmm.", "signature": "Sig/Of+The=Earlier+Turn=="},
                {"type": "text", "text": "first answer", "future_block_field": {"kept": True}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "text", "text": "second question", "cache_control": {"type": "ephemeral"}}],
        },
    ],
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "metadata": {"user_id": '{"session": "abc"}'},
}


def from_messages_door(body: dict[str, Any], *, cap: int | None = None, betas: list[str] | None = None) -> Conversation:
    """What the Messages door hands a backend: the raw body as `original` (the messages are the
    door's business; this backend never reads them for a same-dialect call)."""
    raw = json.dumps(body).encode()
    return Conversation(
        model="claude-public-name",
        messages=(Message("user", (Text("second question"),)),),
        max_output_tokens=cap,
        stream=bool(body.get("stream")),
        params={"anthropic-beta": betas} if betas is not None else {},
        given=frozenset({"anthropic-beta"}) if betas is not None else frozenset(),
        original=Original("anthropic", raw),
    )


INVOKE_MODEL_ID = "anthropic.claude-fake-v1:0"


def claude_upstreams(anthropic: Any, bedrock: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Catalog entries and the gateway's environment for a Claude behind each same-dialect backend:
    `claude-via-anthropic` (the fake Anthropic API) and `claude-via-bedrock` (the fake Bedrock runtime's
    InvokeModel, with dummy AWS credentials). Neither retries, so the fakes see every request once."""
    catalog = {
        "claude-via-anthropic": anthropic.catalog_entry("claude-via-anthropic"),
        "claude-via-bedrock": {
            "backend": "bedrock",
            "api": "invoke",
            "model_id": INVOKE_MODEL_ID,
            "region": "us-east-1",
            "max_retries": 0,
        },
    }
    env = {
        **bedrock.AWS_ENV,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock.url,
        "FAKE_UPSTREAM_KEY": "sk-upstream",
    }
    return catalog, env
