"""OpenAI's Responses dialect for the `openai` backend with `api: responses`: a `Conversation` as a
request body (the client's own body when the door spoke this dialect too), and the Response object
and its stream events back to the conversation model, each keeping the upstream's own object for a
door of the same dialect. Pure functions (and one small per-stream state): no I/O. Shapes the
gateway cannot read raise `Garbage`; a failed response raises `Failed` (the backend names the model)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chatgw.conversation import (
    Answer,
    Conversation,
    Delta,
    Dialect,
    Document,
    Event,
    Image,
    Message,
    Native,
    Output,
    Part,
    Reasoning,
    Refusal,
    StopReason,
    Text,
    Tool,
    ToolCall,
    ToolDelta,
    ToolResult,
    Usage,
)

DIALECT: Dialect = "openai_responses"
SUPPORTED = (
    "max_output_tokens",
    "temperature",
    "top_p",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
)
"""The conversation's settings a Responses body has a place for; the rest are refused by name."""
PARAMS = ("user", "safety_identifier", "metadata", "service_tier", "prompt_cache_key")
"""Chat-door parameters a Responses body has under the same name and meaning (the catalog's
`account_params` already decided whether a client may send the account-level ones)."""
MAPPED_PARAMS = (*PARAMS, "verbosity", "store")
"""All the chat-door parameters this backend takes: `verbosity` becomes `text.verbosity`, and `store`
is always sent as false (the gateway keeps no conversations, nor lets the upstream keep them)."""
STOP_OF_INCOMPLETE: dict[str, StopReason] = {"max_output_tokens": "length", "content_filter": "content_filter"}
TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?)\s*(ms|s)", re.IGNORECASE)


class Garbage(ValueError):
    """The upstream answered something that is not this dialect; the message says what."""


class Failed(Exception):
    """The upstream's response failed (`status: failed`, `response.failed` or an `error` event)."""

    def __init__(self, code: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def retry_after(self) -> float | None:
        """The wait a rate-limit message names ("try again in 1.5s"), in seconds."""
        found = TRY_AGAIN.search(self.message)
        if found is None:
            return None
        value = float(found.group(1))
        return value / 1000 if found.group(2).lower() == "ms" else value


# ---- the request ---------------------------------------------------------------------------


def request_body(request: Conversation, *, model: str, stream: bool) -> dict[str, Any]:
    """The body to send: the client's own when it spoke this dialect (so encrypted reasoning,
    hosted tools and fields the gateway does not know arrive unchanged), else the conversation
    translated. The model and the output cap are the gateway's; nothing is stored upstream."""
    original = request.original
    body = original.body() if original is not None and original.dialect == DIALECT else translate(request)
    body["model"] = model
    body.pop("max_output_tokens", None)
    if request.max_output_tokens is not None:
        body["max_output_tokens"] = request.max_output_tokens
    body["store"] = False  # the gateway keeps no conversations, and neither may the upstream for it
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


def translate(request: Conversation) -> dict[str, Any]:
    system = request.system
    body: dict[str, Any] = {"input": [item for m in request.messages if m.role != "system" for item in _items(m)]}
    if system:
        body["instructions"] = system
    for name in ("temperature", "top_p"):
        value = getattr(request.sampling, name)
        if value is not None:
            body[name] = value
    if request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = {"type": "function", "name": choice.name} if choice.mode == "tool" else choice.mode
    if request.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.reasoning_effort is not None:
        body["reasoning"] = {"effort": request.reasoning_effort}
    fmt = request.response_format
    if fmt is not None:
        out: dict[str, Any] = {"type": fmt.kind}
        if fmt.kind == "json_schema":
            out.update(name=fmt.name or "answer", schema=dict(fmt.schema or {}))
            if fmt.strict is not None:
                out["strict"] = fmt.strict
            if fmt.description is not None:
                out["description"] = fmt.description
        body["text"] = {"format": out}
    for name in PARAMS:
        if request.params.get(name) is not None:
            body[name] = request.params[name]
    if request.params.get("verbosity") is not None:
        body.setdefault("text", {})["verbosity"] = request.params["verbosity"]
    return body


def _tool(tool: Tool) -> dict[str, Any]:
    # Responses makes a function tool strict unless told; chat completions does not: keep the client's meaning.
    out: dict[str, Any] = {
        "type": "function",
        "name": tool.name,
        "parameters": dict(tool.parameters) if tool.parameters is not None else {"type": "object", "properties": {}},
        "strict": bool(tool.strict),
    }
    if tool.description is not None:
        out["description"] = tool.description
    return out


def _input_content(parts: tuple[Part, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text):
            out.append({"type": "input_text", "text": part.text})
        elif isinstance(part, Image):
            out.append({"type": "input_image", "image_url": part.url, "detail": part.detail or "auto"})
        elif isinstance(part, Document):
            file = {
                k: v for k, v in (("file_data", part.data), ("file_id", part.file_id), ("filename", part.name)) if v
            }
            out.append({"type": "input_file", **file})
    return out


def _output(parts: tuple[Part, ...] | list[Part]) -> str | list[dict[str, Any]]:
    """A tool's result: its text, or input parts when it has more than text."""
    if all(isinstance(p, Text) for p in parts):
        return "".join(p.text for p in parts if isinstance(p, Text))
    return _input_content(tuple(parts))


def _items(message: Message) -> list[dict[str, Any]]:
    """One message as input items, in the order of its parts: an assistant's text becomes a message
    item, its calls function_call items, its reasoning (only what a Responses model made, with the
    encrypted content it needs) reasoning items; tool results are function_call_output items."""
    if message.role != "assistant":
        results = [p for p in message.parts if isinstance(p, ToolResult)]
        rest = tuple(p for p in message.parts if not isinstance(p, ToolResult))
        outputs = [{"type": "function_call_output", "call_id": r.id, "output": _output(r.content)} for r in results]
        if rest:
            outputs.append({"type": "message", "role": "user", "content": _input_content(rest)})
        return outputs
    items: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []

    def flush() -> None:
        if content:
            items.append({"type": "message", "role": "assistant", "content": list(content)})
            content.clear()

    for part in message.parts:
        if isinstance(part, Text):
            content.append({"type": "output_text", "text": part.text, "annotations": []})
        elif isinstance(part, Refusal):
            content.append({"type": "refusal", "refusal": part.text})
        elif isinstance(part, ToolCall):
            flush()
            items.append({"type": "function_call", "call_id": part.id, "name": part.name, "arguments": part.arguments})
        elif isinstance(part, Reasoning) and part.dialect == DIALECT and part.encrypted:
            flush()
            summary = [{"type": "summary_text", "text": part.text}] if part.text else []
            items.append({"type": "reasoning", "summary": summary, "encrypted_content": part.encrypted})
    flush()
    return items


# ---- the answer ----------------------------------------------------------------------------


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_usage(value: Any) -> Usage | None:
    """Responses usage: `input_tokens` counts cached tokens too (the conversation's convention)."""
    if not isinstance(value, dict) or not isinstance(value.get("input_tokens"), int):
        return None
    inputs = value.get("input_tokens_details") or {}
    outputs = value.get("output_tokens_details") or {}
    return Usage(
        input=_int(value.get("input_tokens")),
        output=_int(value.get("output_tokens")),
        cache_read=_int(inputs.get("cached_tokens")) if isinstance(inputs, dict) else 0,
        cache_write=_int(inputs.get("cache_write_tokens")) if isinstance(inputs, dict) else 0,
        reasoning=_int(outputs.get("reasoning_tokens")) if isinstance(outputs, dict) else 0,
    )


def reasoning_of(item: Mapping[str, Any]) -> Reasoning:
    texts = [s.get("text", "") for s in item.get("summary") or () if isinstance(s, dict)]
    if not texts:
        texts = [c.get("text", "") for c in item.get("content") or () if isinstance(c, dict)]
    encrypted = item.get("encrypted_content")
    return Reasoning("\n\n".join(texts), encrypted=encrypted if isinstance(encrypted, str) else None, dialect=DIALECT)


def parts_of(output: Any) -> list[Part]:
    if not isinstance(output, list):
        raise Garbage("a response whose output is not a list")
    parts: list[Part] = []
    for item in output:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for content in item.get("content") or ():
                if isinstance(content, dict) and content.get("type") == "output_text":
                    parts.append(Text(str(content.get("text") or "")))
                elif isinstance(content, dict) and content.get("type") == "refusal":
                    parts.append(Refusal(str(content.get("refusal") or "")))
        elif kind == "function_call":
            parts.append(
                ToolCall(str(item.get("call_id") or ""), str(item.get("name") or ""), str(item.get("arguments") or ""))
            )
        elif kind == "reasoning":
            parts.append(reasoning_of(item))
        # hosted tools' items (web_search_call, ...) have no part: a door of this dialect has them natively
    return parts


def stop_of(response: Mapping[str, Any], calls: bool) -> tuple[StopReason, str]:
    """The stop reason, and the upstream's own word for it (the incomplete reason, or the status)."""
    status = response.get("status")
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = str(details.get("reason")) if isinstance(details, dict) else "incomplete"
        return STOP_OF_INCOMPLETE.get(reason, "length"), reason
    return ("tool_use" if calls else "end"), str(status or "completed")


def failure_of(response: Mapping[str, Any]) -> Failed:
    error = response.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        return Failed(str(code) if code else None, str(error.get("message") or code or "the response failed"))
    return Failed(None, "the response failed")


def answer_from(data: Any) -> Answer:
    if not isinstance(data, dict) or data.get("object", "response") != "response":
        raise Garbage("JSON that is not a response")
    if data.get("status") == "failed" or (data.get("status") is None and data.get("error")):
        raise failure_of(data)
    parts = parts_of(data.get("output"))
    stop, native_stop = stop_of(data, any(isinstance(p, ToolCall) for p in parts))
    return Answer([Output(parts, stop, 0, native_stop)], parse_usage(data.get("usage")), Native(DIALECT, data))


class StreamState:
    """What one stream needs to remember: each function call's position among the output's calls
    (a chat client's tool index), found by its output index."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}
        self.finished = False

    def event(self, data: Mapping[str, Any]) -> Event:
        """One upstream event as a conversation event (deltas may be empty: the native event still
        goes to a door of this dialect). Raises `Failed` for a failed response or an error event."""
        kind = data.get("type")
        deltas: list[Delta] = []
        usage = None
        if kind == "response.created":
            deltas.append(Delta())
        elif kind == "response.output_text.delta":
            deltas.append(Delta(text=str(data.get("delta") or "")))
        elif kind == "response.refusal.delta":
            deltas.append(Delta(refusal=str(data.get("delta") or "")))
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            deltas.append(Delta(reasoning=str(data.get("delta") or "")))
        elif kind == "response.output_item.added":
            item = data.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                index = self.calls.setdefault(_position(data), len(self.calls))
                tool = ToolDelta(index, item.get("call_id"), item.get("name"), str(item.get("arguments") or ""))
                deltas.append(Delta(tool=tool))
        elif kind == "response.function_call_arguments.delta":
            call = self.calls.get(_position(data))
            if call is None:
                raise Garbage("function call arguments before the call")
            deltas.append(Delta(tool=ToolDelta(call, arguments=str(data.get("delta") or ""))))
        elif kind in ("response.completed", "response.incomplete"):
            response = data.get("response")
            if not isinstance(response, dict):
                raise Garbage(f"a {kind} event without its response")
            stop, native_stop = stop_of(response, bool(self.calls))
            deltas.append(Delta(stop=stop, native_stop=native_stop))
            usage = parse_usage(response.get("usage"))
            self.finished = True
        elif kind == "response.failed":
            response = data.get("response")
            raise failure_of(response if isinstance(response, dict) else {})
        elif kind == "error":
            error: Mapping[str, Any] = data["error"] if isinstance(data.get("error"), dict) else data
            code = error.get("code")
            raise Failed(str(code) if code else None, str(error.get("message") or "an error"))
        return Event(deltas, usage, data, DIALECT)


def _position(data: Mapping[str, Any]) -> int:
    index = data.get("output_index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise Garbage("an event without its output_index")
    return index
