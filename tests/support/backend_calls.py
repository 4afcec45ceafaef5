"""Calling a backend as the service does, from a chat-completions body, and reading what came back:
on the conversation model (what every backend promises), or rendered by the chat door (what a chat
client sees)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from chatgw.api.openai_chat.completion import ChunkGrammar, completion_body
from chatgw.conversation import Answer, Conversation, Event, StopReason, ToolDelta, Usage, text_of
from chatgw.errors import ChatgwError
from tests.support.conversations import conversation_of


def chat(model: str, content: str, *, stream: bool = False, **params: Any) -> Conversation:
    """A one-message chat body (`params` override or add fields), validated and converted by the door."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}], **params}
    if stream:
        body["stream"] = True
    return conversation_of(body)


async def collect(stream: AsyncIterator[Event]) -> tuple[list[Event], ChatgwError | None]:
    """The events that arrived, and the error the stream raised after them (if any)."""
    events: list[Event] = []
    try:
        async for event in stream:
            events.append(event)
    except ChatgwError as exc:
        return events, exc
    return events, None


def answer_text(answer: Answer, output: int = 0) -> str:
    return text_of(answer.outputs[output].parts)


def streamed_text(events: Iterable[Event]) -> str:
    return "".join(d.text for e in events for d in e.deltas)


def stops(events: Iterable[Event]) -> list[StopReason]:
    return [d.stop for e in events for d in e.deltas if d.stop is not None]


def tool_deltas(events: Iterable[Event]) -> list[ToolDelta]:
    return [d.tool for e in events for d in e.deltas if d.tool is not None]


def usages(events: Iterable[Event]) -> list[Usage]:
    return [e.usage for e in events if e.usage is not None]


# ---- as the chat door renders it --------------------------------------------------------------


def rendered_answer(answer: Answer) -> dict[str, Any]:
    """The `chat.completion` body a chat client gets for this answer (the upstream's usage, or none)."""
    usage = answer.usage or Usage(0, 0)
    return completion_body(answer, completion_id="chatcmpl-test", created=1, model="test-model", usage=usage)


def rendered_chunks(events: Iterable[Event]) -> list[dict[str, Any]]:
    """The `chat.completion.chunk` objects a chat client gets for these events (before the usage
    chunk and `[DONE]`, which the gateway adds)."""
    grammar = ChunkGrammar(completion_id="chatcmpl-test", created=1, model="test-model", include_usage=False)
    chunks = []
    for event in events:
        data = grammar.event(event)
        if data:
            assert data.startswith(b"data: ") and data.endswith(b"\n\n")
            chunks.append(json.loads(data[len(b"data: ") : -2]))
    return chunks


def finish_reasons(chunks: Iterable[dict[str, Any]]) -> list[str]:
    return [c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]]


def tool_call_chunks(chunks: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [call for chunk in chunks for c in chunk["choices"] for call in c["delta"].get("tool_calls", [])]
