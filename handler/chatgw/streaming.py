"""A streamed chat completion: the backend pieces pumped through a queue by a producer task,
turned into `chat.completion.chunk` frames, with keep-alives, the deadline, fallbacks before the
first piece, in-band errors after it, and exact (or estimated) usage whatever way it ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Literal

from chatgw.api.openai_chat.completion import Piece, Usage, chunk_body
from chatgw.api.sse import DONE, KEEPALIVE, frame
from chatgw.catalog import ModelEntry
from chatgw.errors import RETRYABLE_UPSTREAM, ChatgwError, UpstreamError, UpstreamTimeout
from chatgw.fallbacks import ChainLog
from chatgw.metering.estimate import count_tokens, estimate_prompt_tokens
from chatgw.observability import logs
from chatgw.service import Call, Prepared, Service
from chatgw.store.base import UsageStatus

End = Literal["end"]
END: End = "end"
QUEUE_SIZE = 64
DRAIN_MAX_CHARS = 1_000_000
"""After the client left: at most this much answer text (about 1 MB) is read for the usage."""


class ChatStream:
    def __init__(self, service: Service, prepared: Prepared, call: Call) -> None:
        self.service = service
        self.prepared = prepared
        self.call = call
        self.entry: ModelEntry = prepared.chain[0]
        self.status: UsageStatus = "client_closed"
        self._queue: asyncio.Queue[Piece | ChatgwError | End] = asyncio.Queue(QUEUE_SIZE)
        self._producer: asyncio.Task[None] | None = None
        self._first: Piece | End | None = None
        self._usage: Usage | None = None
        self._text: list[str] = []
        self._ttft_ms: int | None = None
        self._recorded = False
        self._ended = False
        """The end or an error was taken from the queue: the backend has nothing more to give."""
        self._first_chunk = True

    # producer ------------------------------------------------------------------------

    async def _produce(self) -> None:
        request, deadline = self.prepared.request, self.call.deadline
        chain = ChainLog(self.call.request_id, request.model)
        try:
            async with asyncio.timeout(max(0.0, deadline.remaining())):
                for entry in self.prepared.chain:
                    self.entry = entry
                    produced = False
                    pieces = entry.backend.stream(request, deadline)
                    try:
                        async for piece in pieces:
                            produced = True
                            await self._queue.put(piece)
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
                    finally:
                        await pieces.aclose()  # type: ignore[attr-defined]
        except TimeoutError:
            timeout = UpstreamTimeout(f"The model `{request.model}` did not finish before the deadline.")
            chain.failed(self.entry, timeout)
            self.service.upstream_failed(self.call, self.entry, timeout, falling_back=False)
            await self._queue.put(timeout)
        except ChatgwError as exc:
            self.service.upstream_failed(self.call, self.entry, exc, falling_back=False)
            await self._queue.put(exc)
        except Exception as exc:
            logs.event(
                "backend_failed",
                logging.ERROR,
                request_id=self.call.request_id,
                error_type=type(exc).__name__,
            )
            self.service.upstream_failed(self.call, self.entry, exc, falling_back=False)
            await self._queue.put(UpstreamError("The model backend failed."))
        finally:
            chain.flush()

    async def start(self, first_byte_wait: float) -> None:
        """Start the backend; wait (up to `first_byte_wait`) for its first piece, so that an error
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

    async def _next(self, keepalive_s: float) -> Piece | ChatgwError | End | None:
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
        """The SSE body. Ends with `[DONE]`, or with an in-band error and no `[DONE]`.
        A write is sent as soon as a piece arrives; pieces the backend has already produced
        by then (queued) go out in that same write, one SSE event each: nothing waits."""
        request = self.prepared.request
        cid, created, model = f"chatcmpl-{self.call.request_id}", int(self.call.now.timestamp()), request.model
        while True:
            item = await self._next(keepalive_s)
            if item is None:
                yield KEEPALIVE
                continue
            out: list[bytes] = []
            while True:
                if item == END:  # the last pieces, the usage chunk and [DONE]: one write
                    self._ended = True
                    if request.include_usage:
                        usage, _ = self.usage()
                        out.append(
                            frame(chunk_body(Piece(), completion_id=cid, created=created, model=model, usage=usage))
                        )
                    out.append(DONE)
                    yield b"".join(out)
                    self.status = "ok"  # the client took [DONE]: a client gone by then left early
                    return
                if isinstance(item, ChatgwError):
                    self._ended = True
                    self.status = "error"
                    self.call.seen.code = item.code  # the in-band error's code, for the completion line
                    out.append(frame({"error": item.envelope(self.call.request_id)["error"]}))
                    yield b"".join(out)
                    return
                assert isinstance(item, Piece)
                if item.usage is not None:
                    self._usage = item.usage
                if item.choices:
                    if self._first_chunk:
                        self._first_chunk = False
                        item.choices[0].delta.setdefault("role", "assistant")
                    self._observe(item)
                    out.append(frame(chunk_body(item, completion_id=cid, created=created, model=model)))
                if self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if out:
                yield b"".join(out)

    def _observe(self, piece: Piece) -> None:
        for choice in piece.choices:
            content = choice.delta.get("content")
            if content:
                if self._ttft_ms is None:
                    self._ttft_ms = self.call.elapsed_ms()
                self._text.append(content)
            for call in choice.delta.get("tool_calls") or ():
                if self._ttft_ms is None:
                    self._ttft_ms = self.call.elapsed_ms()
                self._text.append(str((call.get("function") or {}).get("arguments") or ""))

    def usage(self) -> tuple[Usage, bool]:
        if self._usage is not None:
            return self._usage, False
        return Usage(estimate_prompt_tokens(self.prepared.request), count_tokens("".join(self._text))), True

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
                    if not isinstance(item, Piece):  # the end, or an error: nothing more will come
                        return
                    if item.usage is not None:
                        self._usage = item.usage
                    for choice in item.choices:
                        text = str(choice.delta.get("content") or "")
                        text += "".join(
                            str((c.get("function") or {}).get("arguments") or "")
                            for c in choice.delta.get("tool_calls") or ()
                        )
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
        usage, estimated = self.usage() if reached else (Usage(0, 0), False)
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
