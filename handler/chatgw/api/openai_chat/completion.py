"""The answer side of the chat door: an `Answer` as `chat.completion` JSON and stream `Event`s as
`chat.completion.chunk` frames, stamped with the gateway's id and model. An upstream of this dialect
(`native`) is sent as it came, with the same normalisation a translated answer gets."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chatgw.api.sse import DONE, KEEPALIVE, frame
from chatgw.conversation import Answer, Delta, Event, Output, Refusal, StopReason, Text, ToolCall, Usage
from chatgw.errors import ChatgwError

FINISH: dict[StopReason, str] = {
    "end": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "stop",
    "pause": "stop",
}
GATEWAY_OWNED = frozenset({"id", "object", "created", "model", "choices", "usage"})
MESSAGE_FIELDS = frozenset({"role", "content", "tool_calls", "refusal"})


def usage_dict(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.total,
    }
    if usage.native is not None:  # an OpenAI-compatible upstream's own details, as it sent them
        out.update(usage.native)
        return out
    if usage.cache_read or usage.cache_write:
        details = {"cached_tokens": usage.cache_read}
        if usage.cache_write:
            details["cache_write_tokens"] = usage.cache_write
        out["prompt_tokens_details"] = details
    if usage.reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning}
    return out


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _native_choice(choice: Mapping[str, Any], position: int) -> dict[str, Any]:
    message = choice["message"]
    out: dict[str, Any] = {"role": "assistant", "content": message.get("content"), "refusal": message.get("refusal")}
    if message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    out.update({k: v for k, v in message.items() if k not in MESSAGE_FIELDS})
    return {
        "index": _int(choice.get("index"), position),
        "message": out,
        "logprobs": choice.get("logprobs"),
        "finish_reason": choice.get("finish_reason") or "stop",
    }


def _choice(output: Output) -> dict[str, Any]:
    texts = [p.text for p in output.parts if isinstance(p, Text)]
    refusals = [p.text for p in output.parts if isinstance(p, Refusal)]
    calls = [p for p in output.parts if isinstance(p, ToolCall)]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": "".join(refusals) if refusals else None,
    }
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
        ]
    return {"index": output.index, "message": message, "logprobs": None, "finish_reason": FINISH[output.stop]}


def completion_body(answer: Answer, *, completion_id: str, created: int, model: str, usage: Usage) -> dict[str, Any]:
    native = answer.native.body if answer.native is not None and answer.native.dialect == "openai_chat" else None
    if native is not None:
        choices = [_native_choice(c, i) for i, c in enumerate(native["choices"])]
        extra = {k: v for k, v in native.items() if k not in GATEWAY_OWNED}
    else:
        choices, extra = [_choice(o) for o in answer.outputs], {}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage_dict(usage),
        **extra,
    }


def _delta(delta: Delta) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if delta.text or (delta.tool is None and not delta.refusal and delta.stop is None):
        out["content"] = delta.text  # an empty delta opens the answer: {"content": ""}, as OpenAI does
    if delta.refusal:
        out["refusal"] = delta.refusal
    tool = delta.tool
    if tool is not None:
        call: dict[str, Any] = {"index": tool.index}
        if tool.id is not None:
            call.update(id=tool.id, type="function", function={"name": tool.name or "", "arguments": tool.arguments})
        else:
            call["function"] = {"arguments": tool.arguments}
        out["tool_calls"] = [call]
    return out


class ChunkGrammar:
    """The chat door's stream: one `chat.completion.chunk` per event, `role` on the first, the
    usage chunk (with `stream_options.include_usage`) and `[DONE]` at the end, and an in-band error
    event (no `[DONE]`) for a failure after the first byte."""

    keepalive = KEEPALIVE

    def __init__(self, *, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self._stamp = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        self.include_usage = include_usage
        self._first = True

    def event(self, event: Event) -> bytes:
        native = event.native if event.dialect == "openai_chat" else None
        if native is not None:
            choices = [_chunk_choice(c, i) for i, c in enumerate(native.get("choices") or ()) if isinstance(c, Mapping)]
            extra = {k: v for k, v in native.items() if k not in GATEWAY_OWNED}
        else:
            choices = [
                {"index": d.output, "delta": _delta(d), "finish_reason": FINISH[d.stop] if d.stop else None}
                for d in event.deltas
            ]
            extra = {}
        if not choices:
            return b""
        if self._first:
            self._first = False
            for choice in choices:
                choice["delta"] = {"role": "assistant", **choice["delta"]}
        return frame({**self._stamp, "choices": choices, **extra})

    def end(self, usage: Callable[[], Usage]) -> bytes:
        if not self.include_usage:
            return DONE
        return frame({**self._stamp, "choices": [], "usage": usage_dict(usage())}) + DONE

    def error(self, error: ChatgwError, request_id: str) -> bytes:
        return frame({"error": error.envelope(request_id)["error"]})


def _chunk_choice(choice: Mapping[str, Any], position: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": _int(choice.get("index"), position),
        "delta": dict(choice.get("delta") or {}),
        "finish_reason": choice.get("finish_reason"),
    }
    if choice.get("logprobs") is not None:
        out["logprobs"] = choice["logprobs"]
    return out
