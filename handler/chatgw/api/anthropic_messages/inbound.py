"""A validated Messages request to the `Conversation` every backend speaks.

What the conversation has no field for goes into `params` under the door's name (fields.py says,
for a backend of another dialect, which of them change the answer); those that do are also in
`given`, so that a backend refusing what it does not know refuses them by name."""

from __future__ import annotations

import base64
import json
from typing import Any

from chatgw.api.anthropic_messages import fields
from chatgw.api.anthropic_messages.wire import (
    Base64Source,
    CustomTool,
    DocumentBlock,
    FileSource,
    ImageBlock,
    MessageParam,
    MessagesRequest,
    OtherBlock,
    PlainTextSource,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ThinkingEnabled,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from chatgw.conversation import (
    Conversation,
    Document,
    Image,
    Message,
    Original,
    Part,
    Reasoning,
    ResponseFormat,
    Sampling,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)

SPELLING = {
    "max_output_tokens": "max_tokens",
    "stop": "stop_sequences",
    "thinking_budget": "thinking.budget_tokens",
    "reasoning_effort": "output_config.effort",
    "response_format": "output_config.format",
    "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
}
TRANSLATED_OUTPUT_CONFIG = ("effort", "format")
HARMLESS_TIERS = ("auto", "standard_only")


class _Collect:
    """What a request carries that the conversation cannot: door-made names (fields.py)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def add(self, name: str, value: Any = True) -> None:
        self.params.setdefault(name, value)


BETA_PARAM = "anthropic-beta"
"""The client's `anthropic-beta` flags, a list in `params`: a backend of Anthropic's dialect forwards
those on its allow-list."""


def to_conversation(request: MessagesRequest, raw: bytes, betas: list[str] | None = None) -> Conversation:
    extra = _Collect()
    if betas:
        extra.add(BETA_PARAM, betas)
    for name, value in request.unknown().items():
        extra.add(name, value)
    given: set[str] = {"max_output_tokens"}
    messages: list[Message] = []
    if request.system:
        messages.append(Message("system", _system(request.system)))
    messages += [_message(m, extra) for m in request.messages]
    tools = tuple(_tool(t, extra) for t in request.tools or ())
    if tools or request.tools:
        given.add("tools")
    choice, parallel = _tool_choice(request)
    if choice is not None:
        given.add("tool_choice")
    if parallel is not None:
        given.add("parallel_tool_calls")
    sampling = Sampling(temperature=request.temperature, top_p=request.top_p, top_k=request.top_k)
    given |= {n for n in ("temperature", "top_p", "top_k") if getattr(request, n) is not None}
    if request.stop_sequences:
        given.add("stop")
    budget = request.thinking.budget_tokens if isinstance(request.thinking, ThinkingEnabled) else None
    if budget is not None:
        given.add("thinking_budget")
    elif request.thinking is not None and request.thinking.type != "disabled":
        extra.add("thinking", request.thinking.model_dump())
    effort, response_format = _output_config(request, extra)
    given |= {n for n, v in (("reasoning_effort", effort), ("response_format", response_format)) if v is not None}
    if request.metadata is not None:
        extra.add("metadata", request.metadata.model_dump(exclude_none=True))
    if request.service_tier is not None:
        extra.add("service_tier", request.service_tier)
    params = extra.params
    changing, _ = fields.split(params)
    if request.service_tier is not None and request.service_tier not in HARMLESS_TIERS:
        changing.add("service_tier")  # the catalog's `account_params` decides (catalog.py)
    return Conversation(
        model=request.model,
        messages=tuple(messages),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        sampling=sampling,
        max_output_tokens=request.max_tokens,
        stop=tuple(request.stop_sequences or ()),
        response_format=response_format,
        reasoning_effort=effort,
        thinking_budget=budget,
        stream=bool(request.stream),
        params=params,
        given=frozenset(given | changing),
        spelling=SPELLING,
        original=Original("anthropic", raw),
    )


def _system(system: str | list[Any]) -> tuple[Part, ...]:
    if isinstance(system, str):
        return (Text(system),)
    return tuple(Text(b.text, cache=b.cache_control is not None) for b in system)


def _message(message: MessageParam, extra: _Collect) -> Message:
    if isinstance(message.content, str):
        return Message(message.role, (Text(message.content),))
    return Message(message.role, tuple(_part(b, extra) for b in message.content))


def _part(block: Any, extra: _Collect) -> Part:
    cache = getattr(block, "cache_control", None) is not None
    if isinstance(block, TextBlock):
        return Text(block.text, cache=cache)
    if isinstance(block, ImageBlock):
        return _image(block, cache, extra)
    if isinstance(block, DocumentBlock):
        return _document(block, cache, extra)
    if isinstance(block, ToolUseBlock):
        return ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False), cache=cache)
    if isinstance(block, ToolResultBlock):
        content = (
            (Text(block.content),) if isinstance(block.content, str) else tuple(_part(b, extra) for b in block.content)
        )
        return ToolResult(block.tool_use_id, content, is_error=block.is_error, cache=cache)
    if isinstance(block, ThinkingBlock):  # without a signature, another dialect's reasoning shown as thinking
        signed = bool(block.signature)
        return Reasoning(block.thinking, signature=block.signature or None, dialect="anthropic" if signed else None)
    if isinstance(block, RedactedThinkingBlock):
        return Reasoning(encrypted=block.data, redacted=True, dialect="anthropic")
    assert isinstance(block, OtherBlock)
    extra.add(f"content:{block.type}")
    return Text("")


def _image(block: ImageBlock, cache: bool, extra: _Collect) -> Part:
    source = block.source
    if isinstance(source, Base64Source):
        return Image(f"data:{source.media_type};base64,{source.data}", cache=cache)
    if isinstance(source, URLSource):
        return Image(source.url, cache=cache)
    extra.add("image:file")
    return Image("", cache=cache)


def _document(block: DocumentBlock, cache: bool, extra: _Collect) -> Part:
    source = block.source
    if isinstance(source, Base64Source):
        return Document(data=source.data, media_type=source.media_type, name=block.title, cache=cache)
    if isinstance(source, PlainTextSource):
        data = base64.b64encode(source.data.encode()).decode()
        return Document(data=data, media_type=source.media_type, name=block.title, cache=cache)
    if isinstance(source, FileSource):
        return Document(file_id=source.file_id, name=block.title, cache=cache)
    extra.add(f"document:{source.type}")
    return Document(name=block.title, cache=cache)


def _tool(tool: Any, extra: _Collect) -> Tool:
    if isinstance(tool, CustomTool):
        return Tool(tool.name, tool.description, tool.input_schema, tool.strict, cache=tool.cache_control is not None)
    extra.add(f"tools:{tool.type}")
    return Tool(tool.name or tool.type)


def _tool_choice(request: MessagesRequest) -> tuple[ToolChoice | None, bool | None]:
    choice = request.tool_choice
    if choice is None:
        return None, None
    parallel = None if choice.disable_parallel_tool_use is None else not choice.disable_parallel_tool_use
    mode = {"auto": "auto", "any": "required", "none": "none", "tool": "tool"}[choice.type]
    return ToolChoice(mode, choice.name), parallel  # type: ignore[arg-type]


def _output_config(request: MessagesRequest, extra: _Collect) -> tuple[str | None, ResponseFormat | None]:
    """`output_config.effort` is the conversation's reasoning effort and `output_config.format` its
    answer format; anything else in it goes by the unknown-field rule."""
    config = request.output_config or {}
    effort = config.get("effort")
    fmt = config.get("format")
    response_format = None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        response_format = ResponseFormat("json_schema", schema=fmt.get("schema"))
    rest = {k: v for k, v in config.items() if k not in TRANSLATED_OUTPUT_CONFIG}
    if rest or (fmt is not None and response_format is None):
        extra.add("output_config", rest or config)
    return (effort if isinstance(effort, str) else None), response_format
