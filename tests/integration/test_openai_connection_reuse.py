"""The openai backend reuses its upstream connection after a stream: after `[DONE]` it reads the
body to its end (bounded), so httpx puts the connection back in its pool. An upstream that keeps
the body open after `[DONE]`, or sends a flood after it, costs a new connection, never a hang.

The upstream is a raw asyncio HTTP/1.1 server (chunked SSE) that counts the connections it accepts
and can hold the last chunk back until the test releases it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from chatgw.backends import _drain, build_backend
from chatgw.backends.base import BackendDeps
from chatgw.backends.openai_chat import OpenAIBackend
from chatgw.conversation import Event
from chatgw.deadline import Deadline
from tests.support.backend_calls import chat, streamed_text

STREAMS = 120
"""More than httpx's default pool (100 connections): a leaked pool slot per stream would hang."""


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(payload: Any) -> bytes:
    return _chunk(b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode()) + b"\n\n")


@dataclass
class Upstream:
    mode: str = "good"
    """good: the last chunk right after [DONE]; hold: after [DONE] nothing until released; flood:
    100 KB of comments after [DONE], then the end."""
    connections: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                await self.answer(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up"}
        writer.write(_event({**base, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}))
        writer.write(_event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        writer.write(_event({**base, "choices": [], "usage": usage}))
        writer.write(_event(b"[DONE]"))
        await writer.drain()
        if self.mode == "hold":
            await self.release.wait()
        if self.mode == "flood":
            writer.write(_chunk(b": " + b"x" * 100_000 + b"\n\n"))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: Any) -> None:
        self.release.set()
        self.server.close()


async def _streams(upstream: Upstream, count: int) -> list[list[Event]]:
    deps = BackendDeps()
    backend = build_backend("openai", "public", {"base_url": f"http://127.0.0.1:{upstream.port}/v1"}, deps)
    assert isinstance(backend, OpenAIBackend)
    request = chat("public", "x", stream=True)
    results = []
    try:
        for _ in range(count):
            events: AsyncIterator[Event] = backend.stream(request, Deadline.in_seconds(30))
            results.append([e async for e in events])
    finally:
        await deps.aclose()
    return results


def _run(mode: str, count: int) -> tuple[Upstream, list[list[Event]]]:
    async def main() -> tuple[Upstream, list[list[Event]]]:
        async with Upstream(mode) as upstream:
            return upstream, await _streams(upstream, count)

    return asyncio.run(main())


def _whole(events: list[Event]) -> bool:
    usage = events[-1].usage
    return streamed_text(events) == "hi" and usage is not None and usage.total == 4


def test_streams_reuse_one_connection() -> None:
    upstream, results = _run("good", STREAMS)
    assert all(_whole(r) for r in results)
    assert upstream.connections == 1


def test_without_the_drain_every_stream_opens_a_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_drain, "MAX_READS", 0)
    upstream, results = _run("good", 5)
    assert all(_whole(r) for r in results)
    assert upstream.connections == 5


def test_an_upstream_holding_the_body_open_costs_a_connection_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_drain, "MAX_SECONDS", 0.005)  # the bound is the point, not its length
    upstream, results = _run("hold", STREAMS)
    assert all(_whole(r) for r in results)
    assert upstream.connections == STREAMS  # each held connection was closed, none reused, none stuck


def test_a_flood_after_done_is_not_read_without_bound() -> None:
    upstream, results = _run("flood", 5)
    assert all(_whole(r) for r in results)
    assert upstream.connections == 5
