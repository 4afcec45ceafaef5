"""`echo`: the built-in development model. Not a language model: it answers with the text of the
last user message, word by word, so that the gateway can be run and tested with nothing configured.

It honours `n` (at most MAX_N), `stop`, `max_tokens` / `max_completion_tokens` (a token is a word; the
answer is capped at MAX_OUTPUT_WORDS words and MAX_OUTPUT_CHARS characters), and accepts the
sampling parameters, whose only effect on a deterministic echo is none. Anything that would need a
real model (tools, JSON modes, logprobs, audio) is refused with a 400."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from chatgw.api.openai_chat.completion import Choice, ChunkChoice, Completion, Piece, Usage
from chatgw.api.openai_chat.wire import ChatRequest, TextFormat, UserMessage, text_of
from chatgw.backends.base import BackendDeps, CatalogError, Deadline, refuse_unsupported
from chatgw.errors import UnsupportedParameter
from chatgw.metering.estimate import estimate_prompt_tokens

SUPPORTED = frozenset(
    {
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "user",
        "metadata",
        "safety_identifier",
        "prompt_cache_key",
        "response_format",
        "reasoning_effort",
        "verbosity",
    }
)
NO_TEXT = "(the last user message has no text)"
_WORD = re.compile(r"\s*\S+")
MAX_N = 8
"""Echo answers at most this many choices: with MAX_OUTPUT_CHARS, an answer body stays under ~200 KB
whatever the request (a 6 MB message with n=128 once made a 768 MB body)."""
MAX_OUTPUT_CHARS = 16_384
MAX_OUTPUT_WORDS = 4_096


def answer(request: ChatRequest) -> tuple[list[str], str]:
    """The words of the echo answer and its finish reason."""
    text = (
        next((text_of(m.content) for m in reversed(request.messages) if isinstance(m, UserMessage)), "").strip()
        or NO_TEXT
    )
    finish = "stop"
    cut = min((text.find(s) for s in request.stop_sequences if s in text), default=-1)
    if cut >= 0:
        text = text[:cut]
    if len(text) > MAX_OUTPUT_CHARS:
        text, finish = text[:MAX_OUTPUT_CHARS], "length"
    words = _WORD.findall(text)
    cap = min(request.token_cap or MAX_OUTPUT_WORDS, MAX_OUTPUT_WORDS)
    if len(words) > cap:
        words, finish = words[:cap], "length"
    return words, finish


class EchoBackend:
    kind = "echo"

    def __init__(self, name: str, delay_s: float = 0.0) -> None:
        self.name = name
        self.delay_s = delay_s

    def check(self, request: ChatRequest) -> None:
        refuse_unsupported(request, SUPPORTED, "echo (development)")
        if (request.n or 1) > MAX_N:
            raise UnsupportedParameter(f"The echo development model answers at most {MAX_N} choices (`n`).", param="n")
        if request.response_format is not None and not isinstance(request.response_format, TextFormat):
            raise UnsupportedParameter(
                "The echo development model only supports `response_format` of type `text`.",
                param="response_format",
            )

    async def complete(self, request: ChatRequest, deadline: Deadline) -> Completion:
        words, finish = answer(request)
        content = "".join(words)
        choices = [Choice(index=i, content=content, finish_reason=finish) for i in range(request.n or 1)]
        n = request.n or 1
        return Completion(choices=choices, usage=Usage(estimate_prompt_tokens(request), len(words) * n))

    async def stream(self, request: ChatRequest, deadline: Deadline) -> AsyncIterator[Piece]:
        words, finish = answer(request)
        n = request.n or 1
        yield Piece(choices=[ChunkChoice(index=i, delta={"role": "assistant", "content": ""}) for i in range(n)])
        for word in words:
            await asyncio.sleep(self.delay_s)
            yield Piece(choices=[ChunkChoice(index=i, delta={"content": word}) for i in range(n)])
        yield Piece(choices=[ChunkChoice(index=i, delta={}, finish_reason=finish) for i in range(n)])
        yield Piece(usage=Usage(estimate_prompt_tokens(request), len(words) * n))

    async def aclose(self) -> None:
        return None


def from_options(name: str, options: Mapping[str, Any], deps: BackendDeps) -> EchoBackend:
    unknown = set(options) - {"delay_ms"}
    if unknown:
        raise CatalogError(f"CHATGW_MODELS: model '{name}': unknown field '{sorted(unknown)[0]}' for echo")
    delay = options.get("delay_ms", 0)
    if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
        raise CatalogError(f"CHATGW_MODELS: model '{name}': field 'delay_ms' must be a number >= 0")
    return EchoBackend(name, delay_s=float(delay) / 1000)
