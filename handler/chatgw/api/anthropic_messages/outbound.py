"""The answer side of the Messages door: an `Answer` as Anthropic's `message` JSON, stamped with the
gateway's id and the model the client asked for. An upstream of Anthropic's dialect (`native`) is sent
as it came, restamped: thinking signatures, citations and fields this door does not know survive."""

from __future__ import annotations

import json
from typing import Any

from chatgw.conversation import Answer, Output, Reasoning, Refusal, StopReason, Text, ToolCall, Usage
from chatgw.errors import UpstreamError

STOP: dict[StopReason, str] = {
    "end": "end_turn",
    "length": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "pause": "pause_turn",
    "refusal": "refusal",
    "content_filter": "refusal",
}


def usage_dict(usage: Usage) -> dict[str, Any]:
    """Anthropic counts `input_tokens` without the cache reads and writes (the conversation's
    `Usage.input` holds them all)."""
    return {
        "input_tokens": max(0, usage.input - usage.cache_read - usage.cache_write),
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
        "output_tokens": usage.output,
    }


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the `input` object (an empty text is `{}`)."""
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        raise UpstreamError("The model answered a tool call whose arguments are not JSON.") from None
    if not isinstance(value, dict):
        raise UpstreamError("The model answered a tool call whose arguments are not a JSON object.")
    return value


def content_blocks(output: Output) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in output.parts:
        if isinstance(part, Text | Refusal):
            if blocks and blocks[-1]["type"] == "text":
                blocks[-1]["text"] += part.text
            elif part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ToolCall):
            blocks.append({"type": "tool_use", "id": part.id, "name": part.name, "input": tool_input(part.arguments)})
        elif isinstance(part, Reasoning):
            # Another dialect's reasoning shows as thinking without a signature (as in a stream);
            # sent back, it is no one's to verify (inbound.py) and a translation leaves it out.
            if part.redacted and part.dialect == "anthropic":
                blocks.append({"type": "redacted_thinking", "data": part.encrypted or ""})
            elif part.text or part.signature:
                blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature or ""})
    return blocks


def stop_sequence(stop: StopReason, asked: tuple[str, ...]) -> str | None:
    """Which stop sequence ended the answer: known when the client gave one (the conversation's
    stop reason does not say which of several)."""
    return asked[0] if stop == "stop_sequence" and len(asked) == 1 else None


def message_body(
    answer: Answer, *, message_id: str, model: str, usage: Usage, stop: tuple[str, ...] = ()
) -> dict[str, Any]:
    native = answer.native
    if native is not None and native.dialect == "anthropic":
        return {**native.body, "id": message_id, "model": model}
    output = answer.outputs[0] if answer.outputs else Output([], "end")
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(output),
        "stop_reason": STOP[output.stop],
        "stop_sequence": stop_sequence(output.stop, stop),
        "usage": usage_dict(usage),
    }
