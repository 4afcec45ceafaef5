"""OpenAI's chat-completions dialect for the `openai` backend: a `Conversation` as a request body
(the client's own body when the door spoke this dialect too), and answers and chunks back to the
conversation model, each keeping the upstream's own object for a door of the same dialect.
Pure functions: no I/O. Shapes the gateway cannot read raise `Garbage` (the backend names the model)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatgw.conversation import (
    Answer,
    Audio,
    Conversation,
    Delta,
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

STOP: dict[str, StopReason] = {
    "stop": "end",
    "length": "length",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}
CAP_NAMES = ("max_tokens", "max_completion_tokens")
PARAMS_AS_IS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")


class Garbage(ValueError):
    """The upstream answered something that is not this dialect; the message says what."""


# ---- the request ---------------------------------------------------------------------------


def request_body(request: Conversation, *, model: str, cap_name: str) -> dict[str, Any]:
    """The body to send (without `stream`): the client's own when it spoke this dialect, else the
    conversation translated; the model and the output cap are the gateway's, and only the one cap
    the gateway checked is sent."""
    original = request.original
    body = original.body() if original is not None and original.dialect == "openai_chat" else translate(request)
    body["model"] = model
    for name in CAP_NAMES:
        body.pop(name, None)
    if request.max_output_tokens is not None:
        body[cap_name] = request.max_output_tokens
    return body


def translate(request: Conversation) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [m for message in request.messages for m in _messages(message)]}
    sampling = request.sampling
    for name in PARAMS_AS_IS:
        value = getattr(sampling, name)
        if value is not None:
            body[name] = value
    if request.stop:
        body["stop"] = list(request.stop)
    if request.choices != 1:
        body["n"] = request.choices
    if request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}} if choice.mode == "tool" else choice.mode
        )
    if request.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.reasoning_effort is not None:
        body["reasoning_effort"] = request.reasoning_effort
    fmt = request.response_format
    if fmt is not None:
        if fmt.kind == "json_schema":
            schema: dict[str, Any] = {"name": fmt.name or "answer", "schema": dict(fmt.schema or {})}
            if fmt.strict is not None:
                schema["strict"] = fmt.strict
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        else:
            body["response_format"] = {"type": fmt.kind}
    return body


def _tool(tool: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = dict(tool.parameters)
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _content(parts: tuple[Part, ...]) -> str | list[dict[str, Any]]:
    if all(isinstance(p, Text) for p in parts):
        return "".join(p.text for p in parts if isinstance(p, Text))
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text):
            out.append({"type": "text", "text": part.text})
        elif isinstance(part, Image):
            image: dict[str, Any] = {"url": part.url}
            if part.detail is not None:
                image["detail"] = part.detail
            out.append({"type": "image_url", "image_url": image})
        elif isinstance(part, Audio):
            out.append({"type": "input_audio", "input_audio": {"data": part.data, "format": part.format}})
        elif isinstance(part, Document):
            file = {
                k: v for k, v in (("file_data", part.data), ("file_id", part.file_id), ("filename", part.name)) if v
            }
            out.append({"type": "file", "file": file})
    return out


def _messages(message: Message) -> list[dict[str, Any]]:
    """One message of the conversation as chat messages: tool results are one `tool` message each;
    reasoning is not part of this dialect's history and is left out."""
    if message.role == "tool" or any(isinstance(p, ToolResult) for p in message.parts):
        out = [
            {"role": "tool", "tool_call_id": p.id, "content": _content(p.content)}
            for p in message.parts
            if isinstance(p, ToolResult)
        ]
        rest = tuple(p for p in message.parts if not isinstance(p, ToolResult))
        return out + ([{"role": "user", "content": _content(rest)}] if rest else [])
    if message.role != "assistant":
        chat: dict[str, Any] = {"role": message.role, "content": _content(message.parts)}
        if message.name:
            chat["name"] = message.name
        return [chat]
    texts = [p for p in message.parts if isinstance(p, Text)]
    calls = [p for p in message.parts if isinstance(p, ToolCall)]
    refusals = [p.text for p in message.parts if isinstance(p, Refusal)]
    assistant: dict[str, Any] = {"role": "assistant", "content": _content(tuple(texts)) if texts or not calls else None}
    if refusals:
        assistant["refusal"] = "".join(refusals)
    if calls:
        assistant["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
        ]
    return [assistant]


# ---- the answer ----------------------------------------------------------------------------


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _detail(details: Any, name: str) -> int:
    value = details.get(name) if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = _int(value.get("prompt_tokens"), -1), _int(value.get("completion_tokens"), -1)
    if prompt < 0 or completion < 0:
        return None
    extra = {k: v for k, v in value.items() if k not in ("prompt_tokens", "completion_tokens", "total_tokens")}
    prompt_details = extra.get("prompt_tokens_details")
    return Usage(
        input=prompt,
        output=completion,
        cache_read=_detail(prompt_details, "cached_tokens"),
        cache_write=_detail(prompt_details, "cache_write_tokens"),
        reasoning=_detail(extra.get("completion_tokens_details"), "reasoning_tokens"),
        native=extra,
    )


def stop_of(finish_reason: Any) -> StopReason:
    return STOP.get(str(finish_reason), "end")


def _tool_calls(calls: Any) -> list[Part]:
    parts: list[Part] = []
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.append(
                ToolCall(
                    str(call.get("id") or ""), str(function.get("name") or ""), str(function.get("arguments") or "")
                )
            )
    return parts


def answer_from(data: Any) -> Answer:
    if not isinstance(data, dict):
        raise Garbage("JSON that is not a chat completion")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise Garbage("a completion without choices")
    outputs = []
    for position, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise Garbage("a choice without a message")
        parts: list[Part] = []
        reasoning = message.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            parts.append(Reasoning(reasoning, dialect="openai_chat"))
        if isinstance(message.get("content"), str):
            parts.append(Text(message["content"]))
        if isinstance(message.get("refusal"), str):
            parts.append(Refusal(message["refusal"]))
        parts += _tool_calls(message.get("tool_calls"))
        finish = choice.get("finish_reason")
        outputs.append(Output(parts, stop_of(finish), _int(choice.get("index"), position), finish))
    return Answer(outputs, parse_usage(data.get("usage")), Native("openai_chat", data))


def event_from(chunk: Mapping[str, Any]) -> Event:
    """A chunk (a dict, checked by the caller) as an event; raises `Garbage` for a bad shape."""
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise Garbage("a chunk whose choices are not a list")
    deltas = []
    for position, choice in enumerate(choices):
        delta = choice.get("delta", {}) if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            raise Garbage("a chunk choice without a delta")
        index = _int(choice.get("index"), position)
        finish = choice.get("finish_reason")
        step = Delta(
            output=index,
            text=delta.get("content") or "",
            refusal=delta.get("refusal") or "",
            reasoning=delta.get("reasoning_content") or "",
            stop=stop_of(finish) if finish else None,
            native_stop=finish,
        )
        deltas.append(step)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                function = call.get("function") or {}
                deltas.append(
                    Delta(
                        output=index,
                        tool=ToolDelta(
                            _int(call.get("index"), 0),
                            call.get("id"),
                            function.get("name"),
                            function.get("arguments") or "",
                        ),
                    )
                )
    return Event(deltas, parse_usage(chunk.get("usage")), chunk, "openai_chat")
