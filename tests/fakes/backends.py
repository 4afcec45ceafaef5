"""Fake backends that satisfy the ChatBackend Protocol, for driving the service's edge cases."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

from chatgw.backends.base import refuse_unsupported
from chatgw.conversation import Answer, Conversation, Delta, Event, Output, Text, Usage
from chatgw.deadline import Deadline
from chatgw.errors import ChatgwError, UpstreamError


class ScriptedBackend:
    """Streams `words` with `delay_s` between them; fails with `fail` after `fail_after` words
    (0: before the first piece); `usage=False` sends no usage. Records whether it was closed.

    For tests that must not depend on how fast the machine is:
    - `hang_after=n`: after `n` words (buffered: before answering) it waits until it is cancelled
      or closed, so the only way such a call ends is the gateway ending it (deadline, client gone);
    - `endless=True`: words forever (` w0`, ` w1`, ...), so a stream ends only when it is closed;
    - `step`: awaited before word `i` is made, to hold the backend until the test saw something."""

    kind = "fake"

    def __init__(
        self,
        words: list[str] | None = None,
        *,
        delay_s: float = 0.0,
        fail: ChatgwError | None = None,
        fail_after: int = 0,
        usage: bool = True,
        hang_after: int | None = None,
        endless: bool = False,
        step: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.words = words if words is not None else ["one", " two", " three"]
        self.delay_s = delay_s
        self.fail = fail
        self.fail_after = fail_after
        self.send_usage = usage
        self.hang_after = hang_after
        self.endless = endless
        self.step = step
        self.calls = 0
        self.closed = threading.Event()
        self.cancelled = threading.Event()
        """Set when a buffered call was cancelled (the gateway gave up on it)."""
        self.hanging = threading.Event()
        """Set once the backend is waiting for the gateway to end the call."""
        self.sent = 0

    def check(self, request: Conversation) -> None:
        refuse_unsupported(request, {"max_output_tokens", "temperature"}, "fake")

    async def _hang(self) -> None:
        self.hanging.set()
        await asyncio.Event().wait()  # nothing sets it: only cancellation (or closing) ends this

    async def complete(self, request: Conversation, deadline: Deadline) -> Answer:
        self.calls += 1
        try:
            await asyncio.sleep(self.delay_s)
            if self.hang_after is not None:
                await self._hang()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        if self.fail is not None:
            raise self.fail
        usage = Usage(5, len(self.words)) if self.send_usage else None
        return Answer([Output([Text("".join(self.words))], "end")], usage)

    def _script(self) -> enumerate[str]:
        if self.endless:
            return enumerate(f" w{i}" for i in itertools.count())
        return enumerate(self.words)

    async def stream(self, request: Conversation, deadline: Deadline) -> AsyncIterator[Event]:
        self.calls += 1
        try:
            if self.fail is not None and self.fail_after == 0:
                raise self.fail
            yield Event([Delta()])
            for i, word in self._script():
                if i == self.hang_after:
                    await self._hang()
                if self.step is not None:
                    await self.step(i)
                await asyncio.sleep(self.delay_s)
                if self.fail is not None and i == self.fail_after:
                    raise self.fail
                self.sent += 1
                yield Event([Delta(text=word)])
            yield Event([Delta(stop="end")])
            if self.send_usage:
                yield Event(usage=Usage(5, len(self.words)))
        finally:
            self.closed.set()

    async def aclose(self) -> None:
        return None


def released_by(gate: threading.Event, from_word: int = 1) -> Callable[[int], Awaitable[None]]:
    """A `step` that holds word `from_word` and later until the test sets `gate` (at most 30 s:
    a bound against a hang, not a timing)."""

    async def step(i: int) -> None:
        if i >= from_word and not gate.is_set():
            await asyncio.to_thread(gate.wait, 30)

    return step


def failing(message: str = "upstream exploded") -> ChatgwError:
    return UpstreamError(message)
