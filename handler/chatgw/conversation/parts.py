"""The parts a message or an answer is made of, in no door's dialect.

Every part may carry a cache marker (`cache`): the client asked the provider to cache the prompt up to
and including it (Anthropic's `cache_control`, Bedrock's cache points). A `Reasoning` part keeps what
the model that made it needs to see again, opaque to the gateway: Anthropic's `signature` (or the
whole `redacted` payload), OpenAI's `encrypted` content, and the `dialect` that made it, because
only a backend of that dialect can send it back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dialect = Literal["openai_chat", "openai_responses", "anthropic", "bedrock_converse"]


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    cache: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    """The model declined (OpenAI's `refusal`): text, but not the answer's content."""

    text: str


@dataclass(frozen=True, slots=True)
class Image:
    url: str
    """An http(s) URL or a `data:` URL with the bytes in base64."""
    detail: str | None = None
    cache: bool = False


@dataclass(frozen=True, slots=True)
class Audio:
    data: str
    """Base64 (empty for a reference to an earlier answer's audio, `id`)."""
    format: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Document:
    """A file given whole (`data`, base64 or a `data:` URL), or by the provider's `file_id`."""

    data: str | None = None
    media_type: str | None = None
    file_id: str | None = None
    name: str | None = None
    cache: bool = False


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    """JSON text, as the model wrote it (an object for every provider that checks)."""
    cache: bool = False


@dataclass(frozen=True, slots=True)
class ToolResult:
    id: str
    """The `ToolCall.id` it answers."""
    content: tuple[Part, ...]
    is_error: bool = False
    cache: bool = False


@dataclass(frozen=True, slots=True)
class Reasoning:
    text: str = ""
    signature: str | None = None
    encrypted: str | None = None
    """OpenAI's encrypted reasoning item, or Anthropic's redacted thinking payload."""
    redacted: bool = False
    dialect: Dialect | None = None


Part = Text | Refusal | Image | Audio | Document | ToolCall | ToolResult | Reasoning


def text_of(parts: tuple[Part, ...] | list[Part]) -> str:
    """The plain text of some parts (text parts joined, other parts skipped)."""
    return "".join(p.text for p in parts if isinstance(p, Text))
