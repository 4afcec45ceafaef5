"""A streamed answer: the backend's events pumped through a queue by a producer task, turned into
the door's frames by its `Grammar`, with keep-alives, the deadline, fallbacks before the first event,
in-band errors after it, and exact (or estimated) usage whatever way it ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Literal, Protocol

from chatgw.catalog import ModelEntry
from chatgw.conversation import Event, Usage
from chatgw.errors import RETRYABLE_UPSTREAM, ChatgwError, UpstreamError, UpstreamTimeout
from chatgw.fallbacks import ChainLog
from chatgw.metering.estimate import event_text
from chatgw.metering.usage import NONE, estimated_usage, failed_call_usage, plus
from chatgw.observability import logs
from chatgw.service import Call, Prepared, Service
from chatgw.store.base import UsageStatus

End = Literal["end"]
END: End = "end"
QUEUE_SIZE = 64
DRAIN_MAX_CHARS = 1_000_000
"""After the client left: at most this much answer text (about 1 MB) is read for the usage."""


class Grammar(Protocol):
    """A door's stream format: the frames of each event, of the end, and of an error after the
    first byte (an HTTP error before it is the door's ordinary error response)."""

    keepalive: bytes

    def event(self, event: Event) -> bytes: ...

    def end(self, usage: Callable[[], Usage]) -> bytes: ...

    def error(self, error: ChatgwError, request_id: str) -> bytes: ...


class AnswerStream:
    def __init__(self, service: Service, prepared: Prepared, call: Call, grammar: Grammar) -> None:
        self.service = service
        self.prepared = prepared
        self.call = call
        self.grammar = grammar
        self.entry: ModelEntry = prepared.chain[0]
        self.status: UsageStatus = "client_closed"
        self._queue: asyncio.Queue[Event | ChatgwError | End] = asyncio.Queue(QUEUE_SIZE)
        self._producer: asyncio.Task[None] | None = None
        self._first: Event | End | None = None
        self._usage: Usage | None = None
        self._text: list[str] = []
        self._ttft_ms: int | None = None
        self._recorded = False
        self._spent: Usage = NONE
        """What the models of the chain that failed before the one streaming are booked as."""
        self._failure: ChatgwError | None = None
        """The error that ended the stream, if one did."""
        self._ended = False
        """The end or an error was taken from the queue: the backend has nothing more to give."""

    # producer ------------------------------------------------------------------------

    async def _produce(self) -> None:
        request, deadline = self.prepared.conversation, self.call.deadline
        chain = ChainLog(self.call.request_id, request.model)
        try:
            async with asyncio.timeout(max(0.0, deadline.remaining())):
                for entry in self.prepared.chain:
                    self.entry = entry
                    produced = False
                    events = entry.backend.stream(request, deadline)
                    try:
                        async for event in events:
                            produced = True
                            await self._queue.put(event)
                        await self._queue.put(END)
                        chain.served(entry)
                        return
                    except RETRYABLE_UPSTREAM as exc:
                        chain.failed(entry, exc)
                        if produced:
                            raise
                        if entry is self.prepared.chain[-1]:
                            raise chain.whole_chain_failed(exc) from None
                        self.service.upstream_failed(self.call, entry, exc, falling_back=True)
                        self._spent = plus(self._spent, failed_call_usage(request, exc, buffered=False, reserved=0))
                    finally:
                        await events.aclose()  # type: ignore[attr-defined]
        except TimeoutError:
            timeout = UpstreamTimeout(f"The model `{request.model}` did not finish before the deadline.")
            chain.failed(self.entry, timeout)
            self.service.upstream_failed(self.call, self.entry, timeout, falling_back=False)
            self._failure = timeout
            await self._queue.put(timeout)
        except ChatgwError as exc:
            self.service.upstream_failed(self.call, self.entry, exc, falling_back=False)
            self._failure = exc
            await self._queue.put(exc)
        except Exception as exc:
            logs.event(
                "backend_failed",
                logging.ERROR,
                request_id=self.call.request_id,
                error_type=type(exc).__name__,
            )
            self.service.upstream_failed(self.call, self.entry, exc, falling_back=False)
            self._failure = UpstreamError("The model backend failed.")
            await self._queue.put(self._failure)
        finally:
            chain.flush()

    async def start(self, first_byte_wait: float) -> None:
        """Start the backend; wait (up to `first_byte_wait`) for its first event, so that an error
        before anything was produced becomes an ordinary HTTP error (raised here)."""
        self._producer = asyncio.create_task(self._produce())
        try:
            item = await asyncio.wait_for(self._queue.get(), first_byte_wait)
        except TimeoutError:
            return
        if isinstance(item, ChatgwError):
            self.status = "error"
            await self.finish()
            raise item
        self._first = item

    # consumer ------------------------------------------------------------------------

    async def _next(self, keepalive_s: float) -> Event | ChatgwError | End | None:
        """The next item, at once if one is ready; None after `keepalive_s` of silence."""
        if self._first is not None:
            item, self._first = self._first, None
            return item
        if not self._queue.empty():
            return self._queue.get_nowait()
        try:
            async with asyncio.timeout(keepalive_s):  # wakes as soon as a piece is put (no extra task)
                return await self._queue.get()
        except TimeoutError:
            return None

    async def frames(self, keepalive_s: float) -> AsyncIterator[bytes]:
        """The body, in the door's grammar. Ends with the grammar's end, or with an in-band error.
        A write is sent as soon as an event arrives; events the backend has already produced
        by then (queued) go out in that same write: nothing waits."""
        grammar = self.grammar
        while True:
            item = await self._next(keepalive_s)
            if item is None:
                yield grammar.keepalive
                continue
            out: list[bytes] = []
            while True:
                if item == END:  # the last events, the end (usage, [DONE], ...): one write
                    self._ended = True
                    out.append(grammar.end(self._usage_now))
                    yield b"".join(out)
                    self.status = "ok"  # the client took the end: a client gone by then left early
                    return
                if isinstance(item, ChatgwError):
                    self._ended = True
                    self.status = "error"
                    self.call.seen.code = item.code  # the in-band error's code, for the completion line
                    out.append(grammar.error(item, self.call.request_id))
                    yield b"".join(out)
                    return
                assert isinstance(item, Event)
                self._observe(item)
                out.append(grammar.event(item))
                if self._queue.empty():
                    break
                item = self._queue.get_nowait()
            data = b"".join(out)
            if data:
                yield data

    def _observe(self, event: Event) -> None:
        if event.usage is not None:
            self._usage = event.usage
        if event.deltas:
            text = event_text(event)
            if text:
                if self._ttft_ms is None:
                    self._ttft_ms = self.call.elapsed_ms()
                self._text.append(text)

    def _usage_now(self) -> Usage:
        return self.usage()[0]

    def usage(self) -> tuple[Usage, bool]:
        if self._usage is not None:
            return self._usage, False
        return estimated_usage(self.prepared.conversation, "".join(self._text)), True

    # the end -------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the backend (the client left, or the stream is over)."""
        if self._producer is not None and not self._producer.done():
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer

    async def drain(self) -> None:
        """The client left before the end: keep reading the backend, its pieces dropped, until its
        usage comes (the real count, which a budget relies on), bounded by CHATGW_DRAIN_SECONDS,
        the deadline and DRAIN_MAX_CHARS. Runs after the client is gone, so nobody waits on it."""
        budget = min(self.service.settings.drain_seconds, self.call.deadline.remaining())
        if self._producer is None or self._ended or self._usage is not None or budget <= 0:
            return
        read = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(budget):
                while read <= DRAIN_MAX_CHARS:
                    item = self._first if self._first is not None else await self._queue.get()
                    self._first = None
                    if not isinstance(item, Event):  # the end, or an error: nothing more will come
                        return
                    if item.usage is not None:
                        self._usage = item.usage
                    text = event_text(item)
                    self._text.append(text)
                    read += len(text)

    async def finish(self) -> None:
        """Close the backend and write the usage event, once."""
        if self._recorded:
            return
        self._recorded = True
        if self.status == "client_closed":
            await self.drain()
        await self.close()
        reached = self._usage is not None or self._text or self.status != "error"
        if reached:
            usage, estimated = self.usage()
        else:  # failed before any event: booked as far as the upstream may have worked
            failure = self._failure
            failed = (
                NONE
                if failure is None
                else failed_call_usage(self.prepared.conversation, failure, buffered=False, reserved=0)
            )
            usage, estimated = failed, failed != NONE
        if self._spent != NONE:  # models of the chain that failed before this one
            usage, estimated = plus(usage, self._spent), True
        event = self.service.event(
            self.prepared,
            self.call,
            self.entry,
            status=self.status,
            usage=usage,
            estimated=estimated,
            ttft_ms=self._ttft_ms,
        )
        await self.service.record(event, self.call.deadline)
