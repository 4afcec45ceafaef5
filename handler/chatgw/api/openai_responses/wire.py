"""The wire format of a Responses request (`POST /v1/responses`), validated with OpenAI's rules.
The top level is strict (an unknown field is a 400 naming it); input items and content parts ignore
fields the gateway has no use for (`id`, `status`, `phase`), which clients send back as they got them.
The answer side (response object, stream events) is in `api/openai_responses/outbound.py`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from chatgw.api.openai_chat.wire import check_metadata

STATEFUL = ("previous_response_id", "conversation", "background")
"""Fields that need responses kept on the server: the gateway keeps none."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True, defer_build=True)


# ---- content parts -------------------------------------------------------------------


class InputText(_Item):
    type: Literal["input_text"]
    text: str


class InputImage(_Item):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] | None = None


class InputFile(_Item):
    type: Literal["input_file"]
    file_data: str | None = None
    file_id: str | None = None
    file_url: str | None = None
    filename: str | None = None


class OutputText(_Item):
    type: Literal["output_text"]
    text: str


class RefusalContent(_Item):
    type: Literal["refusal"]
    refusal: str


Content = Annotated[InputText | InputImage | InputFile | OutputText | RefusalContent, Field(discriminator="type")]

# ---- input items ---------------------------------------------------------------------


class MessageItem(_Item):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Content]


class FunctionCall(_Item):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class FunctionCallOutput(_Item):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[Content]


class CustomToolCall(_Item):
    type: Literal["custom_tool_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: str


class CustomToolCallOutput(_Item):
    type: Literal["custom_tool_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[Content]


class SummaryText(_Item):
    type: Literal["summary_text"]
    text: str


class ReasoningText(_Item):
    type: Literal["reasoning_text"]
    text: str


class ReasoningItem(_Item):
    type: Literal["reasoning"]
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None


class ItemReference(_Item):
    type: Literal["item_reference"]
    id: str


def _item_tag(value: Any) -> str | None:
    """Easy input messages (`{"role": ..., "content": ...}`) have no `type`: they are messages."""
    if isinstance(value, dict):
        return str(value.get("type", "message"))
    return getattr(value, "type", None)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCall, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")]
    | Annotated[CustomToolCall, Tag("custom_tool_call")]
    | Annotated[CustomToolCallOutput, Tag("custom_tool_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")],
    Discriminator(_item_tag),
]

# ---- tools, formats, settings --------------------------------------------------------


class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    defer_loading: bool | None = None


class CustomTool(_Item):
    """A tool whose input is free text (Codex's `apply_patch`); `format` (a grammar) is advice to
    the model, kept for an upstream of this dialect."""

    type: Literal["custom"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    format: dict[str, Any] | None = None


class HostedTool(BaseModel):
    """A tool the provider runs (web_search, file_search, code_interpreter, namespace, tool_search,
    mcp, ...): kept whole for an upstream of this dialect, dropped or refused for any other."""

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)
    type: str = Field(min_length=1)


def _tool_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("function", "custom") else "hosted"


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")]
    | Annotated[CustomTool, Tag("custom")]
    | Annotated[HostedTool, Tag("hosted")],
    Discriminator(_tool_tag),
]


class NamedTool(_Strict):
    type: Literal["function", "custom"]
    name: str


class AllowedTools(_Item):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class HostedChoice(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)
    type: str = Field(min_length=1)


def _choice_tag(value: Any) -> str:
    if isinstance(value, str):
        return "mode"
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind in ("function", "custom"):
        return "named"
    return "allowed" if kind == "allowed_tools" else "hosted"


ToolChoiceValue = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("mode")]
    | Annotated[NamedTool, Tag("named")]
    | Annotated[AllowedTools, Tag("allowed")]
    | Annotated[HostedChoice, Tag("hosted")],
    Discriminator(_choice_tag),
]


class Reasoning(_Strict):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class FormatText(_Strict):
    type: Literal["text"]


class FormatJSONObject(_Strict):
    type: Literal["json_object"]


class FormatJSONSchema(_Strict):
    type: Literal["json_schema"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[FormatText | FormatJSONObject | FormatJSONSchema, Field(discriminator="type")]


class TextConfig(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class StreamOptions(_Strict):
    include_obfuscation: bool | None = None


INCLUDABLE = Literal[
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "code_interpreter_call.outputs",
]

# ---- the request ---------------------------------------------------------------------


class ResponsesRequest(_Strict):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=False)  # built at import

    model: str = Field(min_length=1, max_length=256)
    input: str | list[InputItem]
    instructions: str | None = None
    tools: Annotated[list[Tool], Field(max_length=512)] | None = None
    tool_choice: ToolChoiceValue | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    reasoning: Reasoning | None = None
    text: TextConfig | None = None
    include: list[INCLUDABLE] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    client_metadata: dict[str, Any] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    # refused with the reason (the gateway keeps no responses), not as unknown fields
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(value)

    @field_validator("input")
    @classmethod
    def _input_not_empty(cls, value: str | list[Any]) -> str | list[Any]:
        if isinstance(value, list) and not value:
            raise ValueError("`input` must contain at least one item")
        return value

    def given(self) -> set[str]:
        return set(self.model_fields_set)
