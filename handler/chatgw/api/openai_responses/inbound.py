"""A validated Responses request to the `Conversation` every backend speaks.

Items become messages: `instructions` a system message first, developer messages system ones,
function calls (and the reasoning before them) one assistant message, each call's output a tool
message. A `custom` tool (free-text input) is a function taking one string, `input`. Tools the
provider runs (hosted: web_search, namespace, ...) stay in `params["hosted_tools"]`: an upstream of
this dialect gets the client's body anyway, any other backend never sees them (see `hosted_rule`)."""

from __future__ import annotations

import json
from typing import Any

from chatgw.api.openai_responses.wire import (
    AllowedTools,
    CustomTool,
    CustomToolCall,
    CustomToolCallOutput,
    FormatJSONSchema,
    FunctionCall,
    FunctionCallOutput,
    FunctionTool,
    HostedChoice,
    HostedTool,
    InputFile,
    InputImage,
    InputText,
    MessageItem,
    NamedTool,
    OutputText,
    ReasoningItem,
    RefusalContent,
    ResponsesRequest,
)
from chatgw.conversation import (
    Conversation,
    Document,
    Image,
    Message,
    Original,
    Part,
    Reasoning,
    Refusal,
    ResponseFormat,
    Role,
    Sampling,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)

CUSTOM_INPUT = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}
"""A custom tool's free-text input, as a function's arguments."""
FEATURE_OF = {
    "max_output_tokens": "max_output_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "tool_choice": "tool_choice",
    "parallel_tool_calls": "parallel_tool_calls",
}
PARAMS = ("user", "metadata", "prompt_cache_key", "safety_identifier", "service_tier", "top_logprobs", "max_tool_calls")
"""Settings kept by their own name, for a backend to refuse (or an account rule to check)."""
ROLES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
SPELLING = {
    "max_output_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
    "response_format": "text.format",
    "verbosity": "text.verbosity",
    "choices": "n",
}


def to_conversation(request: ResponsesRequest, raw: bytes) -> Conversation:
    given = request.given()
    features = {FEATURE_OF[name] for name in given if name in FEATURE_OF}
    params: dict[str, Any] = {name: getattr(request, name) for name in PARAMS if name in given}
    if request.store:  # `store: false` is what the gateway does anyway
        params["store"] = True
    text = request.text
    if text is not None and text.verbosity is not None:
        params["verbosity"] = text.verbosity
    response_format = _response_format(request)
    if response_format is not None:
        features.add("response_format")
    effort = request.reasoning.effort if request.reasoning is not None else None
    if effort is not None:
        features.add("reasoning_effort")
    tools = [_tool(t) for t in request.tools or () if not isinstance(t, HostedTool)]
    if tools:
        features.add("tools")
    hosted = [t.model_dump() for t in request.tools or () if isinstance(t, HostedTool)]
    if hosted:
        params["hosted_tools"] = hosted  # not `given`: no backend is asked to honour them
    return Conversation(
        model=request.model,
        messages=tuple(_messages(request)),
        tools=tuple(tools),
        tool_choice=_tool_choice(request),
        parallel_tool_calls=request.parallel_tool_calls,
        sampling=Sampling(temperature=request.temperature, top_p=request.top_p),
        max_output_tokens=request.max_output_tokens,
        response_format=response_format,
        reasoning_effort=effort,
        stream=bool(request.stream),
        params=params,
        given=frozenset(features | (set(params) - {"hosted_tools"})),
        spelling=SPELLING,
        original=Original("openai_responses", raw),
    )


def _tool(tool: FunctionTool | CustomTool | HostedTool) -> Tool:
    if isinstance(tool, CustomTool):
        return Tool(tool.name, tool.description, CUSTOM_INPUT)
    assert isinstance(tool, FunctionTool)
    return Tool(tool.name, tool.description, tool.parameters, tool.strict)


def custom_tools(request: ResponsesRequest) -> frozenset[str]:
    """The names of the free-text tools: their calls are answered as `custom_tool_call` items."""
    return frozenset(t.name for t in request.tools or () if isinstance(t, CustomTool))


def hosted_rule(request: ResponsesRequest) -> tuple[list[str], bool]:
    """The hosted tools given, and whether `tool_choice` requires one of them (then a backend of
    another dialect cannot answer the request: a 400; otherwise they are dropped for it)."""
    hosted = [t.type for t in request.tools or () if isinstance(t, HostedTool)]
    choice = request.tool_choice
    own = [t for t in request.tools or () if not isinstance(t, HostedTool)]
    if isinstance(choice, HostedChoice):
        return hosted, True
    if isinstance(choice, AllowedTools):
        allowed_own = [t for t in choice.tools if t.get("type") in ("function", "custom")]
        return hosted, choice.mode == "required" and not allowed_own
    return hosted, choice == "required" and bool(hosted) and not own


def _tool_choice(request: ResponsesRequest) -> ToolChoice | None:
    choice = request.tool_choice
    if choice is None or isinstance(choice, HostedChoice):
        return None
    if isinstance(choice, NamedTool):
        return ToolChoice("tool", choice.name)
    if isinstance(choice, AllowedTools):
        return ToolChoice(choice.mode)
    return ToolChoice(choice)


def _response_format(request: ResponsesRequest) -> ResponseFormat | None:
    fmt = request.text.format if request.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if isinstance(fmt, FormatJSONSchema):
        return ResponseFormat("json_schema", fmt.name, fmt.schema_, fmt.strict, fmt.description)
    return ResponseFormat("json_object")


def _part(part: Any) -> Part:
    if isinstance(part, InputText | OutputText):
        return Text(part.text)
    if isinstance(part, RefusalContent):
        return Refusal(part.refusal)
    if isinstance(part, InputImage):
        if part.image_url:
            return Image(part.image_url, part.detail)
        return Document(file_id=part.file_id, media_type="image/*")
    assert isinstance(part, InputFile)
    return Document(data=part.file_data or part.file_url, file_id=part.file_id, name=part.filename)


def _content(content: str | list[Any]) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (Text(content),)
    return tuple(_part(p) for p in content)


def _messages(request: ResponsesRequest) -> list[Message]:
    out: list[Message] = []
    if request.instructions:
        out.append(Message("system", (Text(request.instructions),)))
    items = [MessageItem(role="user", content=request.input)] if isinstance(request.input, str) else request.input
    for item in items:
        if isinstance(item, MessageItem):
            out.append(Message(ROLES[item.role], _content(item.content)))
        elif isinstance(item, FunctionCall | CustomToolCall | ReasoningItem):
            _to_assistant(out, _assistant_part(item))
        elif isinstance(item, FunctionCallOutput | CustomToolCallOutput):
            out.append(Message("tool", (ToolResult(item.call_id, _content(item.output)),)))
    return out


def _assistant_part(item: FunctionCall | CustomToolCall | ReasoningItem) -> Part:
    if isinstance(item, FunctionCall):
        return ToolCall(item.call_id, item.name, item.arguments)
    if isinstance(item, CustomToolCall):
        return ToolCall(item.call_id, item.name, json.dumps({"input": item.input}))
    text = "\n\n".join(s.text for s in item.summary) or "".join(c.text for c in item.content or ())
    return Reasoning(text=text, encrypted=item.encrypted_content, dialect="openai_responses")


def _to_assistant(out: list[Message], part: Part) -> None:
    """Calls and reasoning join the assistant message before them (parallel calls are one turn);
    text after a call starts a new one."""
    last = out[-1] if out else None
    if (
        last is not None
        and last.role == "assistant"
        and not (isinstance(part, Reasoning) and any(isinstance(p, ToolCall) for p in last.parts))
    ):
        out[-1] = Message("assistant", (*last.parts, part))
    else:
        out.append(Message("assistant", (part,)))
