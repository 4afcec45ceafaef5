"""An answer as every backend gives it: outputs of parts with one stop-reason vocabulary, and usage;
streamed, as `Event`s of the same vocabulary.

`Usage.input` counts every input token, cache reads and writes included (OpenAI's convention;
Anthropic's door subtracts them for its `input_tokens`). `native` keeps the upstream's own body,
chunk or usage object for a door of the same dialect, which sends it as it came (restamped)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from chatgw.conversation.parts import Dialect, Part

StopReason = Literal["end", "length", "tool_use", "stop_sequence", "content_filter", "refusal", "pause"]


@dataclass(frozen=True, slots=True)
class Usage:
    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    """Output tokens spent reasoning (part of `output`)."""
    native: Mapping[str, Any] | None = None
    """The upstream's usage fields beyond input and output (OpenAI's `*_tokens_details`, ...)."""

    @property
    def total(self) -> int:
        return self.input + self.output


@dataclass(frozen=True, slots=True)
class Native:
    dialect: Dialect
    body: Mapping[str, Any]


@dataclass(slots=True)
class Output:
    parts: list[Part]
    stop: StopReason
    index: int = 0
    native_stop: str | None = None
    """The upstream's own word for the stop (OpenAI's `finish_reason`), for a door of its dialect."""


@dataclass(slots=True)
class Answer:
    outputs: list[Output]
    usage: Usage | None
    native: Native | None = None


@dataclass(frozen=True, slots=True)
class ToolDelta:
    index: int
    """Which tool call of the output, from 0."""
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Delta:
    """One output's step of a stream."""

    output: int = 0
    text: str = ""
    refusal: str = ""
    reasoning: str = ""
    signature: str = ""
    tool: ToolDelta | None = None
    stop: StopReason | None = None
    native_stop: str | None = None


@dataclass(slots=True)
class Event:
    """One step of an answer stream: deltas, or the final usage, or both. `native` is the upstream's
    own chunk (in `dialect`), when it has one."""

    deltas: list[Delta] = field(default_factory=list)
    usage: Usage | None = None
    native: Mapping[str, Any] | None = None
    dialect: Dialect | None = None
