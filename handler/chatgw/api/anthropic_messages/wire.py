"""The wire format of an Anthropic Messages request, as the anthropic SDKs and Claude Code send it.

Unknown fields are accepted everywhere (Claude Code adds some every month): a backend of
Anthropic's dialect gets them in the client's own body, and `fields.py` decides what happens
toward any other backend. Unknown content-block and tool types are accepted the same way
(`OtherBlock`, `ServerTool`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator


class _Open(BaseModel):
    # Parts build their validators with MessagesRequest's (defer_build): nothing validates one alone.
    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)


class CacheControl(_Open):
    type: Literal["ephemeral"]
    ttl: str | None = None


class _Block(_Open):
    cache_control: CacheControl | None = None


# ---- sources -------------------------------------------------------------------------


class Base64Source(_Open):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(_Open):
    type: Literal["url"]
    url: str = Field(min_length=1)


class FileSource(_Open):
    type: Literal["file"]
    file_id: str


class PlainTextSource(_Open):
    type: Literal["text"]
    media_type: str = "text/plain"
    data: str


class ContentSource(_Open):
    type: Literal["content"]
    content: str | list[dict[str, Any]]


ImageSource = Annotated[Base64Source | URLSource | FileSource, Field(discriminator="type")]
DocumentSource = Annotated[
    Base64Source | URLSource | FileSource | PlainTextSource | ContentSource, Field(discriminator="type")
]


# ---- content blocks ------------------------------------------------------------------


class TextBlock(_Block):
    type: Literal["text"]
    text: str


class ImageBlock(_Block):
    type: Literal["image"]
    source: ImageSource


class DocumentBlock(_Block):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ThinkingBlock(_Open):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(_Open):
    type: Literal["redacted_thinking"]
    data: str


class OtherBlock(_Open):
    """A block type this door does not translate (server tool use, search results, ...): it reaches
    a backend of Anthropic's dialect as sent, and no other (fields.py)."""

    type: str


def _block_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind is None:
        return None
    return kind if kind in KNOWN_BLOCKS else "other"


ResultBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[DocumentBlock, Tag("document")]
    | Annotated[OtherBlock, Tag("other")],
    Discriminator(_block_tag),
]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ResultBlock] = ""
    is_error: bool = False


KNOWN_BLOCKS = frozenset({"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"})
Block = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[DocumentBlock, Tag("document")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated[OtherBlock, Tag("other")],
    Discriminator(_block_tag),
]


class MessageParam(_Open):
    # Claude Code sends `system` messages inside `messages` (its environment block).
    role: Literal["user", "assistant", "system"]
    content: str | list[Block]


# ---- tools and settings --------------------------------------------------------------


class CustomTool(_Open):
    type: Literal["custom"] | None = None
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: CacheControl | None = None
    strict: bool | None = None


class ServerTool(_Open):
    """A tool Anthropic runs (web search, code execution, ...): `type` names it."""

    type: str
    name: str | None = None
    cache_control: CacheControl | None = None


def _tool_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "custom" if kind in (None, "custom") else "server"


ToolParam = Annotated[
    Annotated[CustomTool, Tag("custom")] | Annotated[ServerTool, Tag("server")], Discriminator(_tool_tag)
]


class ToolChoiceParam(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoiceParam:
        if self.type == "tool" and not self.name:
            raise ValueError("`name` is required when `type` is `tool`")
        return self


class ThinkingEnabled(_Open):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1)


class ThinkingOther(_Open):
    type: Literal["disabled", "adaptive"]


Thinking = Annotated[ThinkingEnabled | ThinkingOther, Field(discriminator="type")]


class Metadata(_Open):
    user_id: str | None = None


class SystemBlock(_Block):
    type: Literal["text"]
    text: str


class MessagesRequest(_Open):
    model_config = ConfigDict(extra="allow", frozen=True)

    model: str = Field(min_length=1)
    messages: list[MessageParam]
    max_tokens: int = Field(ge=1)
    system: str | list[SystemBlock] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: Thinking | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    metadata: Metadata | None = None
    service_tier: str | None = None
    stream: bool | None = None
    output_config: dict[str, Any] | None = None

    def unknown(self) -> dict[str, Any]:
        """The top-level fields this door does not know, as sent."""
        return dict(self.model_extra or {})


class CountTokensRequest(MessagesRequest):
    """`POST /v1/messages/count_tokens`: a Messages request without the output cap."""

    max_tokens: int | None = Field(default=None, ge=1)  # type: ignore[assignment]
