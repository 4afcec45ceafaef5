"""What backends return (`Completion`, `Piece`s of a stream, `Usage`) and the bodies the gateway
sends: `chat.completion` and `chat.completion.chunk`, stamped with the gateway's id and model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def _detail(self, group: str, name: str) -> int:
        details = self.extra.get(group)
        value = details.get(name) if isinstance(details, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    @property
    def cached_tokens(self) -> int:
        """Input tokens read from the provider's prompt cache (part of `prompt_tokens`)."""
        return self._detail("prompt_tokens_details", "cached_tokens")

    @property
    def cache_write_tokens(self) -> int:
        """Input tokens written to the provider's prompt cache (part of `prompt_tokens`)."""
        return self._detail("prompt_tokens_details", "cache_write_tokens")

    @property
    def reasoning_tokens(self) -> int:
        """Output tokens spent on reasoning (part of `completion_tokens`)."""
        return self._detail("completion_tokens_details", "reasoning_tokens")

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            **self.extra,
        }


@dataclass(slots=True)
class Choice:
    index: int
    content: str | None
    finish_reason: str
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Further fields of the upstream's `message` (annotations, audio, ...), passed through."""

    def to_dict(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": self.refusal}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        message.update(self.extra)
        return {
            "index": self.index,
            "message": message,
            "logprobs": self.logprobs,
            "finish_reason": self.finish_reason,
        }


@dataclass(slots=True)
class Completion:
    """A backend's buffered answer, before the gateway stamps id, created and model."""

    choices: list[Choice]
    usage: Usage | None
    extra: dict[str, Any] = field(default_factory=dict)
    """Top-level fields worth passing through (`system_fingerprint`, `service_tier`)."""


@dataclass(slots=True)
class ChunkChoice:
    index: int
    delta: dict[str, Any]
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "delta": self.delta, "finish_reason": self.finish_reason}
        if self.logprobs is not None:
            out["logprobs"] = self.logprobs
        return out


@dataclass(slots=True)
class Piece:
    """One streamed step of a backend: some chunk choices, or the final usage, or both."""

    choices: list[ChunkChoice] = field(default_factory=list)
    usage: Usage | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def completion_body(
    completion: Completion, *, completion_id: str, created: int, model: str, usage: Usage
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [c.to_dict() for c in completion.choices],
        "usage": usage.to_dict(),
        **completion.extra,
    }


def chunk_body(
    piece: Piece, *, completion_id: str, created: int, model: str, usage: Usage | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [c.to_dict() for c in piece.choices],
        **piece.extra,
    }
    if usage is not None:
        body["usage"] = usage.to_dict()
    return body
