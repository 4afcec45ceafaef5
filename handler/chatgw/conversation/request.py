"""A request as the service and every backend see it: a `Conversation`.

A front door translates its wire format into one; a backend translates it to its upstream. What a
door accepts but the conversation has no field for stays in `params`, under the door's own name, so
that a backend of another dialect can refuse it by name (or drop it, where the door says it changes
nothing). When door and backend share a dialect, `original` carries the client's body, and the
backend sends that nearly as is: nothing lost, nothing translated twice."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from chatgw.conversation.parts import Dialect, Part, Text

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    parts: tuple[Part, ...]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    """A JSON schema of the arguments."""
    strict: bool | None = None
    cache: bool = False


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "tool"]
    name: str | None = None
    """The tool `mode="tool"` requires."""


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    kind: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: Mapping[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class Original:
    """The client's body, for a backend that speaks the door's dialect: parsed from the raw bytes
    only when such a backend asks for it (a translated call never pays for it)."""

    __slots__ = ("_body", "dialect", "raw")

    def __init__(self, dialect: Dialect, raw: bytes) -> None:
        self.dialect = dialect
        self.raw = raw
        self._body: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        """A fresh copy of the top level each time (a backend edits it); nested values are shared."""
        if self._body is None:
            self._body = json.loads(self.raw)
        return dict(self._body)


FEATURES = (
    "max_output_tokens",
    "choices",
    "stop",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "thinking_budget",
)
"""The names of the request's settings in `Conversation.given`, whatever the door called them."""


@dataclass(frozen=True, slots=True)
class Conversation:
    model: str
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    sampling: Sampling = field(default_factory=Sampling)
    max_output_tokens: int | None = None
    """Per choice. The service sets it when the client did not and the key's limits need a bound."""
    stop: tuple[str, ...] = ()
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    thinking_budget: int | None = None
    stream: bool = False
    choices: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)
    """Door parameters with no field here, by the door's name (OpenAI's `logprobs`, `user`, ...)."""
    given: frozenset[str] = frozenset()
    """What the client set: names of `FEATURES` and keys of `params`."""
    spelling: Mapping[str, str] = field(default_factory=dict)
    """A feature's name in the door's dialect, for errors (`max_output_tokens` -> `max_tokens`)."""
    original: Original | None = None

    def spelled(self, name: str) -> str:
        return self.spelling.get(name, name)

    def with_cap(self, cap: int) -> Conversation:
        return replace(self, max_output_tokens=cap)

    @property
    def system(self) -> str:
        """The system and developer text, joined (for upstreams that take it apart)."""
        return "\n\n".join(
            "".join(p.text for p in m.parts if isinstance(p, Text)) for m in self.messages if m.role == "system"
        )
