"""OpenAI chat requests to Bedrock Converse requests, and Converse answers and ConverseStream events
back to the gateway's `Completion` and `Piece`s. Pure functions: no I/O, no boto3."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from chatgw.api.openai_chat.completion import Choice, ChunkChoice, Completion, Piece, Usage
from chatgw.api.openai_chat.wire import (
    AssistantMessage,
    ChatRequest,
    DeveloperMessage,
    ImagePart,
    NamedToolChoice,
    RefusalPart,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
    text_of,
)
from chatgw.backends.base import ALWAYS_SUPPORTED
from chatgw.errors import UnsupportedParameter

SUPPORTED = frozenset({"temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "tools", "tool_choice"})
SUPPORTED_AS_NO_OP = frozenset({"user"})
"""Identifies the end user to OpenAI; Converse has no such field and the answer does not depend on it."""
NO_OP_VALUES: dict[str, Any] = {
    "n": 1,
    "logprobs": False,
    "parallel_tool_calls": True,
    "frequency_penalty": 0,
    "presence_penalty": 0,
}
"""Parameters Converse cannot express, accepted only at the value that changes nothing."""
IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}


def _unsupported(request: ChatRequest, param: str, why: str = "") -> UnsupportedParameter:
    return UnsupportedParameter(
        f"The parameter `{param}` is not supported by the bedrock backend of model '{request.model}'{why}.",
        param=param,
    )


def check(request: ChatRequest) -> None:
    for name in sorted(request.given() - ALWAYS_SUPPORTED - SUPPORTED - SUPPORTED_AS_NO_OP):
        value = getattr(request, name)
        if value is None:
            continue
        if _is_no_op(name, value):
            continue
        if name == "response_format" and getattr(value, "type", None) == "text":
            continue
        raise _unsupported(request, name)
    converse_request(request)


def _is_no_op(name: str, value: Any) -> bool:
    if name not in NO_OP_VALUES:
        return False
    expected = NO_OP_VALUES[name]
    if isinstance(expected, bool):
        return value is expected
    return not isinstance(value, bool) and value == expected


# ---- the request -----------------------------------------------------------------------


def converse_request(request: ChatRequest) -> dict[str, Any]:
    """The keyword arguments of `converse` / `converse_stream`, without `modelId`."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for message in request.messages:
        if isinstance(message, SystemMessage | DeveloperMessage):
            system.append({"text": text_of(message.content)})
        elif isinstance(message, UserMessage):
            add("user", _user_blocks(request, message))
        elif isinstance(message, AssistantMessage):
            add("assistant", _assistant_blocks(request, message))
        elif isinstance(message, ToolMessage):
            result = {"toolUseId": message.tool_call_id, "content": [{"text": text_of(message.content)}]}
            add("user", [{"toolResult": result}])

    kwargs: dict[str, Any] = {"messages": messages}
    if system:
        kwargs["system"] = system
    config: dict[str, Any] = {}
    if request.token_cap is not None:
        config["maxTokens"] = request.token_cap
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop_sequences:
        config["stopSequences"] = request.stop_sequences
    if config:
        kwargs["inferenceConfig"] = config
    tool_config = _tool_config(request, messages)
    if tool_config:
        kwargs["toolConfig"] = tool_config
    return kwargs


def _user_blocks(request: ChatRequest, message: UserMessage) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"text": message.content}]
    blocks: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            blocks.append({"text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append({"image": _image(request, part.image_url.url)})
        else:
            raise _unsupported(request, "messages", f": content parts of type `{part.type}` cannot be sent")
    return blocks


def _image(request: ChatRequest, url: str) -> dict[str, Any]:
    if not url.startswith("data:"):
        raise _unsupported(request, "messages", ": images must be sent inline as `data:` URLs, not fetched from a URL")
    header, _, data = url[5:].partition(",")
    mime, _, encoding = header.partition(";")
    image_format = IMAGE_FORMATS.get(mime.lower())
    if image_format is None or encoding != "base64":
        raise _unsupported(request, "messages", ": images must be base64 PNG, JPEG, GIF or WebP `data:` URLs")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _unsupported(request, "messages", ": an image `data:` URL is not valid base64") from None
    return {"format": image_format, "source": {"bytes": raw}}


def _assistant_blocks(request: ChatRequest, message: AssistantMessage) -> list[dict[str, Any]]:
    if message.audio is not None:
        raise _unsupported(request, "messages", ": assistant audio cannot be sent")
    blocks: list[dict[str, Any]] = []
    if isinstance(message.content, str):
        texts = [message.content]
    else:
        texts = [p.refusal if isinstance(p, RefusalPart) else p.text for p in message.content or []]
    blocks += [{"text": t} for t in texts if t]
    for call in message.tool_calls or []:
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise _unsupported(request, "messages", f": the arguments of tool call `{call.id}` must be a JSON object")
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.function.name, "input": arguments}})
    return blocks


def _tool_config(request: ChatRequest, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not request.tools:
        return None
    if request.tool_choice == "none":
        uses_tools = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
        if uses_tools:
            raise _unsupported(
                request,
                "tool_choice",
                ': "none" cannot be expressed by Converse once the conversation holds tool calls',
            )
        return None  # the model cannot call a tool it is not told of
    tools = []
    for tool in request.tools:
        spec: dict[str, Any] = {
            "name": tool.function.name,
            "inputSchema": {"json": tool.function.parameters or {"type": "object", "properties": {}}},
        }
        if tool.function.description:
            spec["description"] = tool.function.description
        tools.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": tools}
    if request.tool_choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif request.tool_choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(request.tool_choice, NamedToolChoice):
        config["toolChoice"] = {"tool": {"name": request.tool_choice.function.name}}
    return config


# ---- the answer ------------------------------------------------------------------------


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(str(stop_reason), "stop")


def usage_from(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    cached = int(value.get("cacheReadInputTokens") or 0)
    written = int(value.get("cacheWriteInputTokens") or 0)
    prompt = int(value.get("inputTokens") or 0) + cached + written
    details = {"cached_tokens": cached, **({"cache_write_tokens": written} if written else {})}
    extra: dict[str, Any] = {"prompt_tokens_details": details} if cached or written else {}
    return Usage(prompt_tokens=prompt, completion_tokens=int(value.get("outputTokens") or 0), extra=extra)


def completion_from(response: dict[str, Any]) -> Completion:
    message = (response.get("output") or {}).get("message") or {}
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        if "text" in block:
            texts.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            arguments = json.dumps(use.get("input") or {})
            tool_calls.append(
                {
                    "id": use["toolUseId"],
                    "type": "function",
                    "function": {"name": use["name"], "arguments": arguments},
                }
            )
    choice = Choice(
        index=0,
        content="".join(texts) if texts or not tool_calls else None,
        finish_reason=finish_reason(response.get("stopReason")),
        tool_calls=tool_calls or None,
    )
    return Completion(choices=[choice], usage=usage_from(response.get("usage")))


class StreamMapper:
    """ConverseStream events, one at a time, to pieces."""

    def __init__(self) -> None:
        self.started = False
        self.stopped = False
        self._tool_index: dict[int, int] = {}

    def feed(self, event: dict[str, Any]) -> list[Piece]:
        if "messageStart" in event:
            return [self._delta({"content": ""})]
        if "contentBlockStart" in event:
            body = event["contentBlockStart"]
            use = (body.get("start") or {}).get("toolUse")
            if use is None:
                return []
            index = self._tool_index.setdefault(body.get("contentBlockIndex", 0), len(self._tool_index))
            call = {
                "index": index,
                "id": use["toolUseId"],
                "type": "function",
                "function": {"name": use["name"], "arguments": ""},
            }
            return [self._delta({"tool_calls": [call]})]
        if "contentBlockDelta" in event:
            body = event["contentBlockDelta"]
            delta = body.get("delta") or {}
            if "text" in delta:
                return [self._delta({"content": delta["text"]})]
            if "toolUse" in delta:
                block = body.get("contentBlockIndex", 0)
                index = self._tool_index.setdefault(block, len(self._tool_index))
                part = {"index": index, "function": {"arguments": delta["toolUse"].get("input", "")}}
                return [self._delta({"tool_calls": [part]})]
            return []
        if "messageStop" in event:
            self.stopped = True
            reason = finish_reason(event["messageStop"].get("stopReason"))
            return [self._delta({}, reason)]
        if "metadata" in event:
            usage = usage_from(event["metadata"].get("usage"))
            return [Piece(usage=usage)] if usage is not None else []
        return []

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> Piece:
        if not self.started:
            self.started = True
            delta = {"role": "assistant", **delta}
        return Piece(choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)])
