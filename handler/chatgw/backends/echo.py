"""`echo`: the built-in development model. Not a language model: it answers with the text of the
last user message, word by word, so that the gateway can be run and tested with nothing configured.

It honours `n` (at most MAX_N), `stop`, `max_tokens` / `max_completion_tokens` (a token is a word; the
answer is capped at MAX_OUTPUT_WORDS words and MAX_OUTPUT_CHARS characters), and accepts the
sampling parameters, whose only effect on a deterministic echo is none. Tools are offered but never called
(a `tool_choice` that requires one is refused); anything else that would need a real model (JSON
modes, logprobs, audio) is refused with a 400."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from chatgw.backends.base import BackendDeps, CatalogError, refuse_unsupported, unsupported
from chatgw.conversation import Answer, Conversation, Delta, Event, Output, StopReason, Text, Usage, text_of
from chatgw.deadline import Deadline
from chatgw.errors import UnsupportedParameter
from chatgw.metering.estimate import estimate_prompt_tokens

SUPPORTED = frozenset(
    {
        "choices",
        "stop",
        "max_output_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "reasoning_effort",
        "thinking_budget",
        # the chat door's parameters that do not change an echo
        "user",
        "metadata",
        "safety_identifier",
        "prompt_cache_key",
        "verbosity",
        # tools it may leave uncalled: an agent (Codex) always offers some
        "tools",
        "tool_choice",
        "parallel_tool_calls",
    }
)
NO_TEXT = "(the last user message has no text)"
_WORD = re.compile(r"\s*\S+")
MAX_N = 8
"""Echo answers at most this many choices: with MAX_OUTPUT_CHARS, an answer body stays under ~200 KB
whatever the request (a 6 MB message with n=128 once made a 768 MB body)."""
MAX_OUTPUT_CHARS = 16_384
MAX_OUTPUT_WORDS = 4_096


def answer(request: Conversation) -> tuple[list[str], StopReason]:
    """The words of the echo answer and its stop reason."""
    text = next((text_of(m.parts) for m in reversed(request.messages) if m.role == "user"), "").strip() or NO_TEXT
    finish: StopReason = "end"
    cut = min((text.find(s) for s in request.stop if s in text), default=-1)
    if cut >= 0:
        text, finish = text[:cut], "stop_sequence"
    if len(text) > MAX_OUTPUT_CHARS:
        text, finish = text[:MAX_OUTPUT_CHARS], "length"
    words = _WORD.findall(text)
    cap = min(request.max_output_tokens or MAX_OUTPUT_WORDS, MAX_OUTPUT_WORDS)
    if len(words) > cap:
        words, finish = words[:cap], "length"
    return words, finish


class EchoBackend:
    kind = "echo"

    def __init__(self, name: str, delay_s: float = 0.0) -> None:
        self.name = name
        self.delay_s = delay_s

    def check(self, request: Conversation) -> None:
        refuse_unsupported(request, SUPPORTED, "echo (development)")
        if request.choices > MAX_N:
            n = request.spelled("choices")
            raise UnsupportedParameter(f"The echo development model answers at most {MAX_N} choices (`{n}`).", param=n)
        if request.response_format is not None and request.response_format.kind != "text":
            param = request.spelled("response_format")
            raise UnsupportedParameter(
                f"The echo development model only supports `{param}` of type `text`.", param=param
            )
        choice = request.tool_choice
        if request.tools and choice is not None and choice.mode in ("required", "tool"):
            raise unsupported(request, "tool_choice", "echo (development)", ": it never calls a tool")

    async def complete(self, request: Conversation, deadline: Deadline) -> Answer:
        words, finish = answer(request)
        content = "".join(words)
        n = request.choices
        outputs = [Output([Text(content)], finish, index=i) for i in range(n)]
        return Answer(outputs, Usage(estimate_prompt_tokens(request), len(words) * n))

    async def stream(self, request: Conversation, deadline: Deadline) -> AsyncIterator[Event]:
        words, finish = answer(request)
        n = request.choices
        outputs = range(n)
        yield Event([Delta(output=i) for i in outputs])
        for word in words:
            await asyncio.sleep(self.delay_s)
            yield Event([Delta(output=i, text=word) for i in outputs])
        yield Event([Delta(output=i, stop=finish) for i in outputs])
        yield Event(usage=Usage(estimate_prompt_tokens(request), len(words) * n))

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
