"""Fake backends that satisfy the ChatBackend Protocol, for driving the service's edge cases."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from chatgw.backends.base import Deadline, refuse_unsupported
from chatgw.completion import Choice, ChunkChoice, Completion, Piece, Usage
from chatgw.errors import ChatgwError, UpstreamError
from chatgw.wire import ChatRequest


class ScriptedBackend:
    """Streams `words` with `delay_s` between them; fails with `fail` after `fail_after` words
    (0: before the first piece); `usage=False` sends no usage. Records whether it was closed."""

    kind = "fake"

    def __init__(
        self,
        words: list[str] | None = None,
        *,
        delay_s: float = 0.0,
        fail: ChatgwError | None = None,
        fail_after: int = 0,
        usage: bool = True,
    ) -> None:
        self.words = words if words is not None else ["one", " two", " three"]
        self.delay_s = delay_s
        self.fail = fail
        self.fail_after = fail_after
        self.send_usage = usage
        self.calls = 0
        self.closed = threading.Event()
        self.sent = 0

    def check(self, request: ChatRequest) -> None:
        refuse_unsupported(request, {"max_tokens", "temperature"}, "fake")

    async def complete(self, request: ChatRequest, deadline: Deadline) -> Completion:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        usage = Usage(5, len(self.words)) if self.send_usage else None
        return Completion([Choice(0, "".join(self.words), "stop")], usage)

    async def stream(self, request: ChatRequest, deadline: Deadline) -> AsyncIterator[Piece]:
        self.calls += 1
        try:
            if self.fail is not None and self.fail_after == 0:
                raise self.fail
            yield Piece([ChunkChoice(0, {"role": "assistant", "content": ""})])
            for i, word in enumerate(self.words):
                await asyncio.sleep(self.delay_s)
                if self.fail is not None and i == self.fail_after:
                    raise self.fail
                self.sent += 1
                yield Piece([ChunkChoice(0, {"content": word})])
            yield Piece([ChunkChoice(0, {}, "stop")])
            if self.send_usage:
                yield Piece(usage=Usage(5, len(self.words)))
        finally:
            self.closed.set()

    async def aclose(self) -> None:
        return None


def failing(message: str = "upstream exploded") -> ChatgwError:
    return UpstreamError(message)
