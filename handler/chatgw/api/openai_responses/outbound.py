"""The answer side of the Responses door: an `Answer` as OpenAI's `response` object, with the
request's settings echoed as OpenAI's object has them, `store: false` (the gateway keeps nothing)
and usage in the Responses names. An upstream of this dialect (`native`) is sent as it came,
restamped with the gateway's id and the client's model name. The stream is in `grammar.py`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatgw.api.openai_responses.wire import ResponsesRequest
from chatgw.conversation import Answer, Output, Reasoning, Refusal, StopReason, Text, ToolCall, Usage

INCOMPLETE: dict[StopReason, str] = {"length": "max_output_tokens", "content_filter": "content_filter"}
ENCRYPTED = "reasoning.encrypted_content"


@dataclass(frozen=True, slots=True)
class Stamp:
    """What every response object of one request carries: the gateway's id, the client's model,
    the creation time, the settings echoed, and how to spell the answer's items."""

    response_id: str
    created_at: int
    model: str
    settings: Mapping[str, Any]
    custom_tools: frozenset[str]
    encrypted: bool
    """The client asked (`include`) for reasoning's `encrypted_content`."""

    def item_id(self, prefix: str, n: int) -> str:
        return f"{prefix}_{self.response_id.removeprefix('resp_')}{n:02d}"


def stamp_for(request: ResponsesRequest, raw_body: Mapping[str, Any], *, response_id: str, created_at: int) -> Stamp:
    return Stamp(
        response_id=response_id,
        created_at=created_at,
        model=request.model,
        settings=echoed_settings(request, raw_body),
        custom_tools=frozenset(t.get("name") for t in raw_body.get("tools") or () if t.get("type") == "custom"),
        encrypted=ENCRYPTED in (request.include or ()),
    )


def echoed_settings(request: ResponsesRequest, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The request's settings as OpenAI's response object repeats them (its defaults where unset)."""
    reasoning = request.reasoning
    text = dict(raw.get("text") or {})
    text.setdefault("format", {"type": "text"})
    text.setdefault("verbosity", "medium")
    return {
        "background": False,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "metadata": dict(request.metadata or {}),
        "parallel_tool_calls": request.parallel_tool_calls if request.parallel_tool_calls is not None else True,
        "previous_response_id": None,
        "prompt_cache_key": request.prompt_cache_key,
        "reasoning": {
            "effort": reasoning.effort if reasoning else None,
            "summary": (reasoning.summary or reasoning.generate_summary) if reasoning else None,
        },
        "safety_identifier": request.safety_identifier,
        "service_tier": request.service_tier or "default",
        "store": False,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": text,
        "tool_choice": raw.get("tool_choice", "auto"),
        "tools": list(raw.get("tools") or ()),
        "top_logprobs": request.top_logprobs if request.top_logprobs is not None else 0,
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "truncation": request.truncation or "disabled",
        "user": request.user,
    }


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input,
        "input_tokens_details": {"cached_tokens": usage.cache_read, "cache_write_tokens": usage.cache_write},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.total,
    }


def response_object(
    stamp: Stamp,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    stop: StopReason | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    reason = INCOMPLETE.get(stop) if stop is not None else None
    return {
        "id": stamp.response_id,
        "object": "response",
        "created_at": stamp.created_at,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": reason} if status == "incomplete" and reason else None,
        "model": stamp.model,
        "output": output,
        "usage": usage_dict(usage) if usage is not None else None,
        **stamp.settings,
    }


def status_of(stop: StopReason | None) -> str:
    return "incomplete" if stop in INCOMPLETE else "completed"


# ---- items -------------------------------------------------------------------------------


def message_item(item_id: str, text: str, refusal: str = "", status: str = "completed") -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text or not refusal:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def call_item(stamp: Stamp, item_id: str, call: ToolCall, status: str = "completed") -> dict[str, Any]:
    if call.name in stamp.custom_tools:
        return {
            "id": item_id,
            "type": "custom_tool_call",
            "status": status,
            "call_id": call.id,
            "name": call.name,
            "input": custom_input(call.arguments),
        }
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
    }


def custom_input(arguments: str) -> str:
    """A custom tool's free text from the function arguments it was asked for as (`{"input": ...}`);
    arguments of another shape are given whole."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return str(value["input"])
    return arguments


def reasoning_item(stamp: Stamp, item_id: str, part: Reasoning) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": part.text}] if part.text else [],
    }
    if stamp.encrypted and part.encrypted and part.dialect == "openai_responses":
        item["encrypted_content"] = part.encrypted
    return item


def output_items(stamp: Stamp, output: Output) -> list[dict[str, Any]]:
    """One output's parts as items, in order: reasoning, a message for the text, then the calls."""
    items: list[dict[str, Any]] = []
    texts = "".join(p.text for p in output.parts if isinstance(p, Text))
    refusals = "".join(p.text for p in output.parts if isinstance(p, Refusal))
    message_done = False
    for part in output.parts:
        n = len(items)
        if isinstance(part, Reasoning):
            items.append(reasoning_item(stamp, stamp.item_id("rs", n), part))
        elif isinstance(part, Text | Refusal) and not message_done:
            message_done = True
            items.append(message_item(stamp.item_id("msg", n), texts, refusals))
        elif isinstance(part, ToolCall):
            items.append(call_item(stamp, stamp.item_id("fc", n), part))
    if not items:
        items.append(message_item(stamp.item_id("msg", 0), ""))
    return items


def response_body(answer: Answer, stamp: Stamp, usage: Usage) -> dict[str, Any]:
    native = answer.native.body if answer.native is not None and answer.native.dialect == "openai_responses" else None
    if native is not None:
        return restamp(native, stamp)
    output = answer.outputs[0] if answer.outputs else Output([], "end")
    status = status_of(output.stop)
    return response_object(stamp, status=status, output=output_items(stamp, output), usage=usage, stop=output.stop)


def restamp(body: Mapping[str, Any], stamp: Stamp) -> dict[str, Any]:
    """An upstream's own response object under the gateway's id and the client's model name."""
    out = dict(body)
    out.update(id=stamp.response_id, model=stamp.model)
    usage = out.get("usage")
    if isinstance(usage, Mapping) and isinstance(usage.get("input_tokens_details"), Mapping):
        details = {"cache_write_tokens": 0, **usage["input_tokens_details"]}
        out["usage"] = {**usage, "input_tokens_details": details}
    return out
