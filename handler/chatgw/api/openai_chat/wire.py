"""The wire format of a chat-completions request, validated with OpenAI's rules.
The answer side (completion, chunk, usage) is in `api/openai_chat/completion.py`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

ROUTING_OR_CREDENTIAL_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "extra_headers",
        "headers",
        "endpoint",
        "endpoint_url",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_region_name",
        "organization",
        "custom_llm_provider",
    }
)
"""Names that could choose where the gateway connects or with what credentials.
Refused wherever they appear in a body (they are unknown fields everywhere, and
refused as keys of the free-form `metadata` map too)."""


def check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    """OpenAI's `metadata` rules (16 pairs, keys up to 64 characters), and no key that names where or
    how the gateway connects."""
    if value is None:
        return value
    if len(value) > 16:
        raise ValueError("at most 16 metadata pairs")
    for key in value:
        if len(key) > 64:
            raise ValueError(f"metadata key {key[:64]!r}... is longer than 64 characters")
        if key.lower() in ROUTING_OR_CREDENTIAL_FIELDS:
            raise ValueError(f"metadata key {key!r} is not allowed: the gateway chooses upstreams")
    return value


class _Strict(BaseModel):
    # The parts of a request build no validator of their own at import (defer_build): ChatRequest's
    # validator, built at import, holds them all, and nothing validates a part alone on the request
    # path. Saves about 7 ms of each cold start (Python 3.11 and 3.13, pydantic 2.14).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


# ---- content parts -------------------------------------------------------------------


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Strict):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(_Strict):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class FilePart(_Strict):
    type: Literal["file"]
    file: FileRef


class RefusalPart(_Strict):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]

# ---- messages ------------------------------------------------------------------------


class ToolCallFunction(_Strict):
    name: str
    arguments: str


class ToolCall(_Strict):
    id: str
    type: Literal["function"]
    function: ToolCallFunction


class SystemMessage(_Strict):
    role: Literal["system"]
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMessage(_Strict):
    role: Literal["developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(_Strict):
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class AssistantAudioRef(_Strict):
    id: str


class AssistantMessage(_Strict):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None
    audio: AssistantAudioRef | None = None

    @model_validator(mode="after")
    def _content_or_tool_calls(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls and self.refusal is None and self.audio is None:
            raise ValueError("an assistant message needs `content` unless it has `tool_calls`")
        return self


class ToolMessage(_Strict):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]

# ---- tools and formats ---------------------------------------------------------------


class FunctionDefinition(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: FunctionName


class JSONSchemaFormat(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextFormat(_Strict):
    type: Literal["text"]


class JSONObjectFormat(_Strict):
    type: Literal["json_object"]


class JSONSchemaResponseFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = Annotated[TextFormat | JSONObjectFormat | JSONSchemaResponseFormat, Field(discriminator="type")]


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class AudioOutput(_Strict):
    voice: str
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]


class Prediction(_Strict):
    type: Literal["content"]
    content: str | list[TextPart]


# ---- the request ---------------------------------------------------------------------


class ChatRequest(_Strict):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=False)  # built at import

    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = None
    user: str | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = None
    store: bool | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None
    prediction: Prediction | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(value)

    # Each rule on the field it is about (fields are validated in order: `stream` before
    # `stream_options`, `logprobs` before `top_logprobs`, `tools` before `tool_choice`).
    @field_validator("stream_options")
    @classmethod
    def _stream_options_need_stream(cls, value: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if value is not None and not info.data.get("stream"):
            raise ValueError("`stream_options` is only allowed when `stream` is true")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_need_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("`top_logprobs` requires `logprobs` to be true")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice_needs_tools(cls, value: object, info: ValidationInfo) -> object:
        if value not in (None, "none") and not info.data.get("tools"):
            raise ValueError("`tool_choice` is only allowed when `tools` are given")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and any(not s for s in value):
            raise ValueError("`stop` sequences must not be empty")
        return value

    @property
    def token_cap(self) -> int | None:
        """The completion-token cap the client asked for, whichever name it used."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    @property
    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def given(self) -> set[str]:
        """The parameters the client actually sent (not defaults)."""
        return set(self.model_fields_set)


def text_of(content: str | list[Any] | None) -> str:
    """The plain text of a message's content (text parts joined, other parts skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content if isinstance(part, TextPart))
