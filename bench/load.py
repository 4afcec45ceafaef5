"""A loopback load generator: raw asyncio HTTP/1.1 over keep-alive connections (one per worker), so
that the client costs little of the machine's two cores. Bounded in requests and in seconds.

For each run: requests/s, latency p50/p95/p99 and, for streams, time to the first `data:` event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")
GRACE_S = 10.0
DOOR_PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
STREAM_ENDS = {
    "chat": b"data: [DONE]",
    "responses": b"event: response.completed\n",
    "messages": b"event: message_stop\n",
}
"""What the last event of a complete stream holds, by door: a stream cut short or ended by an error
event (Responses' `response.failed`, Messages' `error`) does not count as answered."""
DOOR_HEADERS = {"messages": "anthropic-version: 2023-06-01\r\n"}


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    key: str
    door: str = "chat"

    def __post_init__(self) -> None:
        if self.host not in LOOPBACK and not self.host.startswith("127."):
            raise ValueError("the load generator sends to loopback addresses only")


def door_body(door: str, model: str, stream: bool, words: int = 8) -> bytes:
    """What a client of `door` sends: one user message of `words` words, a cap of 256 tokens."""
    if door == "chat":
        return chat_body(model, stream, words)
    text = " ".join(["hello"] * words)
    body: dict[str, Any]
    if door == "responses":
        body = {"model": model, "input": text, "max_output_tokens": 256}
    else:
        body = {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def chat_body(model: str, stream: bool, words: int = 8) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": " ".join(["hello"] * words)}],
        "max_tokens": 256,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def request_bytes(target: Target, body: bytes) -> bytes:
    return (
        f"POST {target.path} HTTP/1.1\r\nhost: {target.host}:{target.port}\r\n"
        f"authorization: Bearer {target.key}\r\ncontent-type: application/json\r\n{DOOR_HEADERS.get(target.door, '')}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class Answer:
    status: int
    body: bytes
    latency_s: float
    ttfb_s: float | None


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def send(self, payload: bytes) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        started = time.perf_counter()
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        ttfb = None
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                if ttfb is None and b"data:" in data:
                    ttfb = time.perf_counter() - started
                parts.append(data[:-2])
            body = b"".join(parts)
        else:
            body = await self.reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Answer(status, body, time.perf_counter() - started, ttfb)


def ok(answer: Answer, stream: bool, door: str = "chat") -> bool:
    if answer.status != 200:
        return False
    if not stream:
        return answer.body.startswith(b"{")
    last_event = answer.body.rstrip().rsplit(b"\n\n", 1)[-1]
    return STREAM_ENDS[door] in last_event


@dataclass
class RunResult:
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ttfb_p50_ms: float | None
    ttfb_p95_ms: float | None
    first_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run_load(
    target: Target, body: bytes, *, stream: bool, concurrency: int, requests: int, seconds: float
) -> RunResult:
    """Send up to `requests` requests from `concurrency` workers, stopping after `seconds` at most."""
    payload = request_bytes(target, body)
    latencies: list[float] = []
    ttfbs: list[float] = []
    errors = 0
    first_error: str | None = None
    issued = 0
    started = time.perf_counter()
    stop_at = started + seconds

    async def worker() -> None:
        nonlocal issued, errors, first_error
        conn = Connection(target.host, target.port)
        try:
            while issued < requests and time.perf_counter() < stop_at:
                issued += 1
                try:
                    # a request in flight at the time bound may finish, within a grace period
                    answer = await asyncio.wait_for(conn.send(payload), timeout=stop_at - time.perf_counter() + GRACE_S)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"
                    await conn.close()
                    continue
                if not ok(answer, stream, target.door):
                    errors += 1
                    first_error = first_error or f"{answer.status}: {answer.body[:300]!r}"
                    continue
                latencies.append(answer.latency_s)
                if answer.ttfb_s is not None:
                    ttfbs.append(answer.ttfb_s)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return RunResult(
        requests=len(latencies),
        errors=errors,
        seconds=round(elapsed, 3),
        rps=round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        p50_ms=round(percentile(latencies, 0.50) * 1000, 2),
        p95_ms=round(percentile(latencies, 0.95) * 1000, 2),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
        ttfb_p50_ms=round(statistics.median(ttfbs) * 1000, 2) if ttfbs else None,
        ttfb_p95_ms=round(percentile(ttfbs, 0.95) * 1000, 2) if ttfbs else None,
        first_error=first_error,
    )


async def first_answer(target: Target, body: bytes, *, stream: bool, timeout_s: float) -> float | None:
    """Poll until one request is answered 200 (for start-to-first-answer); the moment it was, or None."""
    payload = request_bytes(target, body)
    stop_at = time.perf_counter() + timeout_s
    while time.perf_counter() < stop_at:
        conn = Connection(target.host, target.port)
        try:
            answer = await asyncio.wait_for(conn.send(payload), timeout=max(0.1, stop_at - time.perf_counter()))
            if ok(answer, stream, target.door):
                return time.perf_counter()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            await conn.close()
        await asyncio.sleep(0.005)
    return None
