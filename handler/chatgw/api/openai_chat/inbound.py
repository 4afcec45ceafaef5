"""A validated chat-completions request to the `Conversation` every backend speaks."""

from __future__ import annotations

from typing import Any

from chatgw.api.openai_chat.wire import (
    AssistantMessage,
    AudioPart,
    ChatRequest,
    DeveloperMessage,
    FilePart,
    ImagePart,
    JSONSchemaResponseFormat,
    NamedToolChoice,
    RefusalPart,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)
from chatgw.conversation import (
    Audio,
    Conversation,
    Document,
    Image,
    Message,
    Original,
    Part,
    Refusal,
    ResponseFormat,
    Sampling,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)

SAMPLING = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
FEATURE_OF = {
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "n": "choices",
    "stop": "stop",
    "response_format": "response_format",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "parallel_tool_calls": "parallel_tool_calls",
    "reasoning_effort": "reasoning_effort",
    **{name: name for name in SAMPLING},
}
DOOR_ONLY = frozenset({"model", "messages", "stream", "stream_options"})
"""Fields the door itself handles: not settings of the conversation."""


def to_conversation(request: ChatRequest, raw: bytes) -> Conversation:
    given = request.given()
    features = {FEATURE_OF[name] for name in given if name in FEATURE_OF}
    params = {name: getattr(request, name) for name in given - DOOR_ONLY if name not in FEATURE_OF}
    cap_name = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    return Conversation(
        model=request.model,
        messages=tuple(_message(m) for m in request.messages),
        tools=tuple(_tool(t) for t in request.tools or ()),
        tool_choice=_tool_choice(request.tool_choice),
        parallel_tool_calls=request.parallel_tool_calls,
        sampling=Sampling(**{name: getattr(request, name) for name in SAMPLING}),
        max_output_tokens=request.token_cap,
        stop=tuple(request.stop_sequences),
        response_format=_response_format(request),
        reasoning_effort=request.reasoning_effort,
        stream=bool(request.stream),
        choices=request.n or 1,
        params=params,
        given=frozenset(features | set(params)),
        spelling={"max_output_tokens": cap_name, "choices": "n"},
        original=Original("openai_chat", raw),
    )


def _content(content: str | list[Any] | None) -> tuple[Part, ...]:
    if content is None:
        return ()
    if isinstance(content, str):
        return (Text(content),)
    return tuple(_part(part) for part in content)


def _part(part: Any) -> Part:
    if isinstance(part, TextPart):
        return Text(part.text)
    if isinstance(part, ImagePart):
        return Image(part.image_url.url, part.image_url.detail)
    if isinstance(part, RefusalPart):
        return Refusal(part.refusal)
    if isinstance(part, AudioPart):
        return Audio(part.input_audio.data, part.input_audio.format)
    assert isinstance(part, FilePart)
    return Document(data=part.file.file_data, file_id=part.file.file_id, name=part.file.filename)


def _message(message: Any) -> Message:
    if isinstance(message, SystemMessage | DeveloperMessage):
        return Message("system", _content(message.content), message.name)
    if isinstance(message, UserMessage):
        return Message("user", _content(message.content), message.name)
    if isinstance(message, ToolMessage):
        return Message("tool", (ToolResult(message.tool_call_id, _content(message.content)),))
    assert isinstance(message, AssistantMessage)
    parts = list(_content(message.content))
    if message.refusal is not None:
        parts.append(Refusal(message.refusal))
    parts += [ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()]
    if message.audio is not None:
        parts.append(Audio("", "", id=message.audio.id))
    return Message("assistant", tuple(parts), message.name)


def _tool(tool: Any) -> Tool:
    f = tool.function
    return Tool(f.name, f.description, f.parameters, f.strict)


def _tool_choice(choice: Any) -> ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, NamedToolChoice):
        return ToolChoice("tool", choice.function.name)
    return ToolChoice(choice)


def _response_format(request: ChatRequest) -> ResponseFormat | None:
    value = request.response_format
    if value is None:
        return None
    if isinstance(value, JSONSchemaResponseFormat):
        s = value.json_schema
        return ResponseFormat("json_schema", s.name, s.schema_, s.strict, s.description)
    return ResponseFormat(value.type)
