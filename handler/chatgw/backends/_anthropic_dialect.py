"""Anthropic's Messages dialect, shared by the `anthropic` backend and Bedrock's InvokeModel: a
`Conversation` as a Messages body (the client's own body when the door spoke this dialect too), and
messages and stream events back to the conversation model, each keeping the upstream's own object for
a door of the same dialect. Pure functions: no I/O. Shapes the gateway cannot read raise `Garbage`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chatgw.backends.base import unsupported
from chatgw.conversation import (
    Answer,
    Audio,
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
    ToolCall,
    ToolDelta,
    ToolResult,
    Usage,
)
from chatgw.errors import UnsupportedParameter

DIALECT: Dialect = "anthropic"
BETA_PARAM = "anthropic-beta"
"""Where the Messages door puts the client's `anthropic-beta` flags (a list of strings) in `params`."""
DEFAULT_MAX_TOKENS = 4096
"""Anthropic requires an output cap; this one is sent when neither the client nor the service set one."""
STOP: dict[str, StopReason] = {
    "end_turn": "end",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "pause_turn": "pause",
    "refusal": "refusal",
}
SUPPORTED = frozenset(
    {
        "max_output_tokens",
        "stop",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "thinking_budget",
        "user",
        BETA_PARAM,
    }
)
"""What a translated conversation can carry to Anthropic (by `FEATURES` name or door parameter)."""
NO_OP_VALUES: dict[str, Any] = {"choices": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0}


class Garbage(ValueError):
    """The upstream answered something that is not this dialect; the message says what."""


def _unsupported(request: Conversation, name: str, why: str = "") -> UnsupportedParameter:
    return unsupported(request, name, DIALECT, why)


def same_dialect(request: Conversation) -> bool:
    return request.original is not None and request.original.dialect == DIALECT


def check(request: Conversation) -> None:
    """A same-dialect body goes as the client sent it (the upstream judges it); a translated one
    refuses, by the door's name, what Anthropic cannot express."""
    if same_dialect(request):
        return
    for name in sorted(request.given - SUPPORTED, key=request.spelled):
        value = _setting(request, name)
        if value is None or (name in NO_OP_VALUES and value == NO_OP_VALUES[name] and not isinstance(value, bool)):
            continue
        if name == "logprobs" and value is False:
            continue
        if name == "response_format" and getattr(value, "kind", None) == "text":
            continue
        raise _unsupported(request, name)
    translate(request)


def _setting(request: Conversation, name: str) -> Any:
    if name in request.params:
        return request.params[name]
    if name == "choices":
        return request.choices
    holder = request.sampling if hasattr(request.sampling, name) else request
    return getattr(holder, name, None)


# ---- the request ---------------------------------------------------------------------------


def request_body(request: Conversation, *, model: str | None) -> dict[str, Any]:
    """The body to send (without `stream`): the client's own when it spoke this dialect, else the
    conversation translated; the model (None: no `model` key, Bedrock's way) and the cap are the gateway's."""
    body = request.original.body() if request.original is not None and same_dialect(request) else translate(request)
    if model is None:
        body.pop("model", None)
    else:
        body["model"] = model
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    body.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    return body


def betas(request: Conversation, allowed: frozenset[str]) -> list[str]:
    """The client's beta flags the upstream is allowed to see, in the client's order."""
    flags = request.params.get(BETA_PARAM) or ()
    return [f for f in flags if isinstance(f, str) and f in allowed]


def translate(request: Conversation) -> dict[str, Any]:
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            system += [_cached({"type": "text", "text": p.text}, p.cache) for p in message.parts if isinstance(p, Text)]
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(request, message)
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    sampling = request.sampling
    for name in ("temperature", "top_p", "top_k"):
        if getattr(sampling, name) is not None:
            body[name] = getattr(sampling, name)
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
    choice = _tool_choice(request)
    if choice is not None:
        body["tool_choice"] = choice
    if request.thinking_budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": request.thinking_budget}
    user = request.params.get("user")
    if isinstance(user, str) and user:
        body["metadata"] = {"user_id": user}
    return body


def _cached(block: dict[str, Any], cache: bool) -> dict[str, Any]:
    if cache:
        block["cache_control"] = {"type": "ephemeral"}
    return block


def _tool(tool: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": tool.name,
        "input_schema": dict(tool.parameters or {"type": "object", "properties": {}}),
    }
    if tool.description:
        out["description"] = tool.description
    return _cached(out, tool.cache)


def _tool_choice(request: Conversation) -> dict[str, Any] | None:
    choice = request.tool_choice
    out: dict[str, Any] | None = None
    if choice is not None:
        kind = {"auto": "auto", "none": "none", "required": "any", "tool": "tool"}[choice.mode]
        out = {"type": kind, **({"name": choice.name} if choice.mode == "tool" else {})}
    if request.parallel_tool_calls is False and request.tools:
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


def _blocks(request: Conversation, message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in message.parts:
        block = _block(request, part)
        if block is not None:
            blocks.append(block)
    return blocks


def _block(request: Conversation, part: Part) -> dict[str, Any] | None:
    if isinstance(part, Text | Refusal):
        return _cached({"type": "text", "text": part.text}, getattr(part, "cache", False)) if part.text else None
    if isinstance(part, Image):
        return _cached({"type": "image", "source": _image_source(request, part.url)}, part.cache)
    if isinstance(part, Document):
        return _cached({"type": "document", "source": _document_source(request, part)}, part.cache)
    if isinstance(part, ToolCall):
        try:
            arguments = json.loads(part.arguments or "{}")
        except json.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise _unsupported(request, "messages", f": the arguments of tool call `{part.id}` must be a JSON object")
        return _cached({"type": "tool_use", "id": part.id, "name": part.name, "input": arguments}, part.cache)
    if isinstance(part, ToolResult):
        content = [b for b in (_block(request, p) for p in part.content) if b is not None]
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.id, "content": content}
        if part.is_error:
            result["is_error"] = True
        return _cached(result, part.cache)
    if isinstance(part, Reasoning):
        return _reasoning(part)
    if isinstance(part, Audio):
        raise _unsupported(request, "messages", ": content parts of type `input_audio` cannot be sent")
    return None


def _reasoning(part: Reasoning) -> dict[str, Any] | None:
    """Only Claude's own thinking goes back (with its signature, which holds on Anthropic's API and
    on Bedrock alike); another model's reasoning is not something Claude can verify, and is left out."""
    if part.dialect not in (DIALECT, "bedrock_converse", None):
        return None
    if part.redacted and part.encrypted:
        return {"type": "redacted_thinking", "data": part.encrypted}
    if part.signature is None:
        return None
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


def _image_source(request: Conversation, url: str) -> dict[str, Any]:
    if not url.startswith("data:"):
        return {"type": "url", "url": url}
    header, _, data = url[5:].partition(",")
    mime, _, encoding = header.partition(";")
    if encoding != "base64" or not mime:
        raise _unsupported(request, "messages", ": an image `data:` URL must be base64 with a media type")
    return {"type": "base64", "media_type": mime.lower(), "data": data}


def _document_source(request: Conversation, part: Document) -> dict[str, Any]:
    if part.file_id:
        return {"type": "file", "file_id": part.file_id}
    data = part.data or ""
    media_type = part.media_type or "application/pdf"
    if data.startswith("data:"):
        header, _, data = data[5:].partition(",")
        media_type = header.partition(";")[0] or media_type
    if not data:
        raise _unsupported(request, "messages", ": a file part needs its data or a file_id")
    return {"type": "base64", "media_type": media_type, "data": data}


# ---- the answer ----------------------------------------------------------------------------


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from(value: Any) -> Usage | None:
    """Anthropic's `input_tokens` leaves out the cache reads and writes; `Usage.input` counts them.
    No `native`: the chat door renders it as an OpenAI upstream's own usage fields; the Messages door
    reads Anthropic's usage from the message (`Answer.native`) and the events."""
    if not isinstance(value, Mapping) or not isinstance(value.get("output_tokens"), int):
        return None
    read, written = _int(value.get("cache_read_input_tokens")), _int(value.get("cache_creation_input_tokens"))
    return Usage(
        input=_int(value.get("input_tokens")) + read + written,
        output=_int(value.get("output_tokens")),
        cache_read=read,
        cache_write=written,
    )


def stop_of(stop_reason: Any) -> StopReason:
    return STOP.get(str(stop_reason), "end")


def part_of(block: Mapping[str, Any]) -> Part | None:
    kind = block.get("type")
    if kind == "text":
        return Text(str(block.get("text") or ""))
    if kind == "tool_use":
        return ToolCall(str(block.get("id") or ""), str(block.get("name") or ""), json.dumps(block.get("input") or {}))
    if kind == "thinking":
        return Reasoning(str(block.get("thinking") or ""), signature=block.get("signature"), dialect=DIALECT)
    if kind == "redacted_thinking":
        return Reasoning(encrypted=str(block.get("data") or ""), redacted=True, dialect=DIALECT)
    return None  # server tool blocks and others: kept in the native body only


def answer_from(data: Any) -> Answer:
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise Garbage("JSON that is not a message")
    parts = [p for p in (part_of(b) for b in data["content"] if isinstance(b, dict)) if p is not None]
    if not parts:
        parts.append(Text(""))
    stop = data.get("stop_reason")
    output = Output(parts, stop_of(stop), 0, stop if isinstance(stop, str) else None)
    return Answer([output], usage_from(data.get("usage")), Native(DIALECT, data))


class StreamMapper:
    """Anthropic's stream events, one at a time (dicts, checked by the caller), to conversation
    events; each keeps its event as `native`. Tool deltas are numbered by position among the tool
    calls (a block index counts text and thinking blocks too). The usage is said once, at
    `message_stop`: `message_start`'s input counts updated by `message_delta`'s."""

    def __init__(self) -> None:
        self.stopped = False
        self._usage: dict[str, Any] = {}
        self._tools: dict[int, int] = {}

    def feed(self, event: Mapping[str, Any]) -> Event | None:
        kind = event.get("type")
        deltas: list[Delta] = []
        usage: Usage | None = None
        if kind == "message_start":
            message = event.get("message")
            if not isinstance(message, Mapping):
                raise Garbage("a message_start without a message")
            self._usage.update(message.get("usage") or {})
            deltas.append(Delta())
        elif kind == "content_block_start":
            deltas += self._block_start(event)
        elif kind == "content_block_delta":
            deltas += self._block_delta(event)
        elif kind == "message_delta":
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            stop = (event.get("delta") or {}).get("stop_reason")
            if stop is not None:
                deltas.append(Delta(stop=stop_of(stop), native_stop=str(stop)))
        elif kind == "message_stop":
            self.stopped = True
            usage = usage_from(self._usage)
        elif kind != "content_block_stop":
            # `ping` (a door keeps its own client alive) or a newer event type this gateway cannot read
            return None
        return Event(deltas, usage, event, DIALECT)

    def _tool_index(self, block: Any) -> int:
        return self._tools.setdefault(_int(block), len(self._tools))

    def _block_start(self, event: Mapping[str, Any]) -> list[Delta]:
        block = event.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            index = self._tool_index(event.get("index"))
            given = block.get("input")
            arguments = json.dumps(given) if isinstance(given, dict) and given else ""
            return [Delta(tool=ToolDelta(index, str(block.get("id") or ""), str(block.get("name") or ""), arguments))]
        if kind == "text" and block.get("text"):
            return [Delta(text=str(block["text"]))]
        if kind == "thinking" and block.get("thinking"):
            return [Delta(reasoning=str(block["thinking"]))]
        return []

    def _block_delta(self, event: Mapping[str, Any]) -> list[Delta]:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [Delta(text=str(delta.get("text") or ""))]
        if kind == "thinking_delta":
            return [Delta(reasoning=str(delta.get("thinking") or ""))]
        if kind == "signature_delta":
            return [Delta(signature=str(delta.get("signature") or ""))]
        if kind == "input_json_delta":
            index = self._tool_index(event.get("index"))
            return [Delta(tool=ToolDelta(index, arguments=str(delta.get("partial_json") or "")))]
        return []
