"""The deterministic "model" behind both fake upstreams: it answers a fixed sentence one word (one
token) at a time, honours max tokens and stop sequences, calls a tool when tools are offered and
the last message is the user's, and repeats a tool's result when the last message is one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ANSWER = "Hello from the fake model, one word at a time."


@dataclass
class ToolCallOut:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class Answer:
    pieces: list[str] = field(default_factory=list)
    tool_calls: list[ToolCallOut] = field(default_factory=list)
    finish: str = "stop"  # stop | length | tool_calls
    prompt_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces) + 5 * len(self.tool_calls)


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [parts[0], *(" " + p for p in parts[1:])]


def think(
    prompt_text: str,
    *,
    last_role: str,
    last_text: str,
    tools: list[str],
    forced_tool: str | None,
    tool_choice_none: bool,
    max_tokens: int | None,
    stops: list[str],
    every_tool: bool = False,
) -> Answer:
    """`every_tool`: call each offered tool at once (parallel tool calls), not only the first."""
    prompt_tokens = len(prompt_text.split())
    if tools and not tool_choice_none and (last_role == "user" or forced_tool):
        names = tools if every_tool and not forced_tool else [forced_tool or tools[0]]
        calls = [
            ToolCallOut(id=f"call_fake_{i}", name=name, arguments={"query": last_text, "n": i})
            if every_tool
            else ToolCallOut(id="call_fake_1", name=name, arguments={"query": last_text})
            for i, name in enumerate(names, 1)
        ]
        return Answer(tool_calls=calls, finish="tool_calls", prompt_tokens=prompt_tokens)
    text = f"The tool said: {last_text}" if last_role == "tool" else ANSWER
    finish = "stop"
    for stop in stops:
        if stop in text:
            text = text[: text.index(stop)]
    pieces = words(text) if text else []
    if max_tokens is not None and len(pieces) > max_tokens:
        pieces, finish = pieces[:max_tokens], "length"
    return Answer(pieces=pieces, finish=finish, prompt_tokens=prompt_tokens)


def arguments_json(call: ToolCallOut) -> str:
    return json.dumps(call.arguments, separators=(",", ":"))
