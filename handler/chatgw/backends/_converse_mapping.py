"""Conversations to Bedrock Converse requests, and Converse answers and ConverseStream events back to
the conversation model. Pure functions: no I/O, no boto3.

Cache markers on parts and tools become cache points after them; a thinking budget goes through
`additionalModelRequestFields` (Claude's own `thinking`); Claude's reasoning blocks (with their
signatures) go back as `reasoningContent`, because Claude refuses a tool-use history whose thinking
was dropped."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from chatgw.backends.base import unsupported
from chatgw.conversation import (
    Answer,
    Audio,
    Conversation,
    Delta,
    Document,
    Event,
    Image,
    Message,
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
    text_of,
)
from chatgw.errors import UnsupportedParameter

SUPPORTED = frozenset({"temperature", "top_p", "max_output_tokens", "stop", "tools", "tool_choice", "thinking_budget"})
SUPPORTED_AS_NO_OP = frozenset({"user"})
"""Identifies the end user to OpenAI; Converse has no such field and the answer does not depend on it."""
NO_OP_VALUES: dict[str, Any] = {
    "choices": 1,
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
STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end",
    "stop_sequence": "stop_sequence",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_use",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
CACHE_POINT = {"cachePoint": {"type": "default"}}
SIGNED_DIALECTS = ("anthropic", "bedrock_converse", None)
"""Whose reasoning goes back: Claude's signatures hold on Anthropic's API and on Bedrock alike."""


def _unsupported(request: Conversation, name: str, why: str = "") -> UnsupportedParameter:
    return unsupported(request, name, "bedrock", why)


def _setting(request: Conversation, name: str) -> Any:
    if name in request.params:
        return request.params[name]
    if name == "choices":
        return request.choices
    holder = request.sampling if hasattr(request.sampling, name) else request
    return getattr(holder, name, None)


def check(request: Conversation) -> None:
    for name in sorted(request.given - SUPPORTED - SUPPORTED_AS_NO_OP, key=request.spelled):
        value = _setting(request, name)
        if value is None:
            continue
        if _is_no_op(name, value):
            continue
        if name == "response_format" and value.kind == "text":
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


def converse_request(request: Conversation) -> dict[str, Any]:
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
        if message.role == "system":
            system.append({"text": text_of(message.parts)})
            if any(getattr(p, "cache", False) for p in message.parts):
                system.append(dict(CACHE_POINT))
        elif message.role == "assistant":
            add("assistant", _assistant_blocks(request, message))
        else:
            add("user", _user_blocks(request, message))

    kwargs: dict[str, Any] = {"messages": messages}
    if system:
        kwargs["system"] = system
    config: dict[str, Any] = {}
    if request.max_output_tokens is not None:
        config["maxTokens"] = request.max_output_tokens
    if request.sampling.temperature is not None:
        config["temperature"] = request.sampling.temperature
    if request.sampling.top_p is not None:
        config["topP"] = request.sampling.top_p
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if config:
        kwargs["inferenceConfig"] = config
    if request.thinking_budget is not None:
        kwargs["additionalModelRequestFields"] = {
            "thinking": {"type": "enabled", "budget_tokens": request.thinking_budget}
        }
    tool_config = _tool_config(request, messages)
    if tool_config:
        kwargs["toolConfig"] = tool_config
    return kwargs


def _user_blocks(request: Conversation, message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, Text):
            blocks.append({"text": part.text})
        elif isinstance(part, Image):
            blocks.append({"image": _image(request, part.url)})
        elif isinstance(part, ToolResult):
            result = {"toolUseId": part.id, "content": [{"text": text_of(part.content)}]}
            if part.is_error:
                result["status"] = "error"
            blocks.append({"toolResult": result})
        elif isinstance(part, Reasoning):
            continue  # a user's message holds no reasoning of the model's
        else:
            kind = {Audio: "input_audio", Document: "file"}.get(type(part), type(part).__name__.lower())
            raise _unsupported(request, "messages", f": content parts of type `{kind}` cannot be sent")
        if getattr(part, "cache", False):
            blocks.append(dict(CACHE_POINT))
    return blocks


def _image(request: Conversation, url: str) -> dict[str, Any]:
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


def _assistant_blocks(request: Conversation, message: Message) -> list[dict[str, Any]]:
    if any(isinstance(p, Audio) for p in message.parts):
        raise _unsupported(request, "messages", ": assistant audio cannot be sent")
    blocks: list[dict[str, Any]] = []
    for part in message.parts:  # in order: Claude wants its reasoning before the tool calls it led to
        if isinstance(part, Text | Refusal) and part.text:
            blocks.append({"text": part.text})
        elif isinstance(part, Reasoning) and part.dialect in SIGNED_DIALECTS:
            if part.redacted and part.encrypted:
                blocks.append({"reasoningContent": {"redactedContent": base64.b64decode(part.encrypted)}})
            elif part.signature is not None:
                text = {"text": part.text, "signature": part.signature}
                blocks.append({"reasoningContent": {"reasoningText": text}})
        elif isinstance(part, ToolCall):
            try:
                arguments = json.loads(part.arguments or "{}")
            except json.JSONDecodeError:
                arguments = None
            if not isinstance(arguments, dict):
                why = f": the arguments of tool call `{part.id}` must be a JSON object"
                raise _unsupported(request, "messages", why)
            blocks.append({"toolUse": {"toolUseId": part.id, "name": part.name, "input": arguments}})
        else:
            continue
        if getattr(part, "cache", False):
            blocks.append(dict(CACHE_POINT))
    return blocks


def _used_tools(messages: list[dict[str, Any]]) -> list[str]:
    names = [b["toolUse"]["name"] for m in messages for b in m["content"] if "toolUse" in b]
    results = any("toolResult" in b for m in messages for b in m["content"])
    return list(dict.fromkeys(names)) or (["tool"] if results else [])


def _tool_config(request: Conversation, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    used = _used_tools(messages)
    if not request.tools:
        # Converse refuses a history with tool blocks and no toolConfig: the tools it used are
        # declared (schema-less), and the model, told of no others, is free to answer in text.
        specs = [{"toolSpec": {"name": n, "inputSchema": {"json": {"type": "object"}}}} for n in used]
        return {"tools": specs} if specs else None
    choice = request.tool_choice
    if choice is not None and choice.mode == "none":
        if used:
            raise _unsupported(
                request,
                "tool_choice",
                ': "none" cannot be expressed by Converse once the conversation holds tool calls',
            )
        return None  # the model cannot call a tool it is not told of
    tools = []
    for tool in request.tools:
        spec: dict[str, Any] = {
            "name": tool.name,
            "inputSchema": {"json": dict(tool.parameters or {"type": "object", "properties": {}})},
        }
        if tool.description:
            spec["description"] = tool.description
        tools.append({"toolSpec": spec})
        if tool.cache:
            tools.append(dict(CACHE_POINT))
    config: dict[str, Any] = {"tools": tools}
    if choice is not None and choice.mode == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice is not None and choice.mode == "required":
        config["toolChoice"] = {"any": {}}
    elif choice is not None and choice.mode == "tool":
        config["toolChoice"] = {"tool": {"name": choice.name}}
    return config


# ---- the answer ------------------------------------------------------------------------


def stop_of(stop_reason: Any) -> StopReason:
    return STOP_REASONS.get(str(stop_reason), "end")


def usage_from(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    cached = int(value.get("cacheReadInputTokens") or 0)
    written = int(value.get("cacheWriteInputTokens") or 0)
    prompt = int(value.get("inputTokens") or 0) + cached + written
    return Usage(input=prompt, output=int(value.get("outputTokens") or 0), cache_read=cached, cache_write=written)


def answer_from(response: dict[str, Any]) -> Answer:
    message = (response.get("output") or {}).get("message") or {}
    parts: list[Part] = []
    for block in message.get("content") or []:
        if "text" in block:
            parts.append(Text(block["text"]))
        elif "toolUse" in block:
            use = block["toolUse"]
            parts.append(ToolCall(use["toolUseId"], use["name"], json.dumps(use.get("input") or {})))
        elif "reasoningContent" in block:
            parts.append(_reasoning(block["reasoningContent"]))
    if not parts:
        parts.append(Text(""))
    output = Output(parts, stop_of(response.get("stopReason")))
    return Answer([output], usage_from(response.get("usage")))


def _reasoning(content: dict[str, Any]) -> Reasoning:
    if "redactedContent" in content:
        data = base64.b64encode(content["redactedContent"]).decode()
        return Reasoning(encrypted=data, redacted=True, dialect="bedrock_converse")
    text = content.get("reasoningText") or {}
    return Reasoning(text.get("text") or "", signature=text.get("signature"), dialect="bedrock_converse")


class StreamMapper:
    """ConverseStream events, one at a time, to conversation events."""

    def __init__(self) -> None:
        self.stopped = False
        self._tool_index: dict[int, int] = {}

    def feed(self, event: dict[str, Any]) -> list[Event]:
        if "messageStart" in event:
            return [Event([Delta()])]
        if "contentBlockStart" in event:
            body = event["contentBlockStart"]
            use = (body.get("start") or {}).get("toolUse")
            if use is None:
                return []
            index = self._tool_index.setdefault(body.get("contentBlockIndex", 0), len(self._tool_index))
            return [Event([Delta(tool=ToolDelta(index, use["toolUseId"], use["name"]))])]
        if "contentBlockDelta" in event:
            body = event["contentBlockDelta"]
            delta = body.get("delta") or {}
            if "text" in delta:
                return [Event([Delta(text=delta["text"])])]
            reasoning = delta.get("reasoningContent") or {}
            if "text" in reasoning or "signature" in reasoning:
                text, signature = reasoning.get("text") or "", reasoning.get("signature") or ""
                return [Event([Delta(reasoning=text, signature=signature)])]
            if "toolUse" in delta:
                block = body.get("contentBlockIndex", 0)
                index = self._tool_index.setdefault(block, len(self._tool_index))
                return [Event([Delta(tool=ToolDelta(index, arguments=delta["toolUse"].get("input", "")))])]
            return []
        if "messageStop" in event:
            self.stopped = True
            return [Event([Delta(stop=stop_of(event["messageStop"].get("stopReason")))])]
        if "metadata" in event:
            usage = usage_from(event["metadata"].get("usage"))
            return [Event(usage=usage)] if usage is not None else []
        return []
