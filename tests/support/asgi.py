"""Raw ASGI calls, byte for byte: every path, header and body a client could send reaches the app
as the server would pass it (uvicorn unquotes `raw_path` the same way), with no client library
normalising anything on the way. Also: the error-envelope assertion and a chatgw log capture."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from chatgw.observability import logs

ENVELOPE_KEYS = {"error", "messages", "field_errors", "request_id"}
CHAT = "/v2/llms/chat/completions"


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunks: list[bytes] = field(default_factory=list)

    def header(self, name: str) -> list[str]:
        raw = name.lower().encode()
        return [v.decode("latin-1") for k, v in self.headers if k.lower() == raw]

    @property
    def request_id(self) -> str:
        (rid,) = self.header("x-request-id")
        return rid

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: Any,
    method: str = "POST",
    path: bytes | str = CHAT,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | list[bytes] = b"",
    *,
    leave_after_chunks: int | None = None,
    timeout: float = 20.0,
) -> Reply:
    """One request through the ASGI app. `body` as a list is sent in several `http.request`
    messages (a chunked upload). `leave_after_chunks`: the client disconnects once it has
    received that many body chunks (0: right after the response starts)."""
    raw_path = path if isinstance(path, bytes) else path.encode()
    raw_path, _, query = raw_path.partition(b"?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": headers or [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    parts = body if isinstance(body, list) else [body]
    pending = [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)]
    left = asyncio.Event()
    status, out_headers, chunks = 0, [], []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, out_headers
        if left.is_set():
            raise OSError("the client is gone")
        if message["type"] == "http.response.start":
            status, out_headers = message["status"], list(message.get("headers", []))
            if leave_after_chunks == 0:
                left.set()
        elif message["type"] == "http.response.body":
            if message.get("body"):
                chunks.append(message["body"])
            if leave_after_chunks is not None and len(chunks) >= leave_after_chunks:
                left.set()
            if not message.get("more_body", False):
                left.set()

    await asyncio.wait_for(app(scope, receive, send), timeout)
    return Reply(status, out_headers, b"".join(chunks), chunks)


def run(app: Any, *args: Any, **kwargs: Any) -> Reply:
    return asyncio.run(call(app, *args, **kwargs))


def assert_envelope(reply: Reply, allowed_5xx: tuple[int, ...] = ()) -> None:
    """The invariants of every response: one `x-request-id`; no 5xx unless injected on purpose;
    every error is the one envelope (never `{"detail": ...}`, never a traceback)."""
    assert len(reply.header("x-request-id")) == 1, reply.headers
    assert reply.status < 500 or reply.status in allowed_5xx, (reply.status, reply.body[:500])
    assert b"Traceback" not in reply.body
    if reply.status >= 400:
        assert reply.header("content-type") == ["application/json"], reply.headers
        body = reply.json()
        assert set(body) == ENVELOPE_KEYS, body
        assert body["request_id"] == reply.request_id
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
        assert body["messages"] == [error["message"]]
        assert isinstance(body["field_errors"], dict)


class LogLines(logging.Handler):
    """Every record of the `chatgw` logger, formatted exactly as it goes out (JSON lines)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def parsed(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def named(self, msg: str) -> list[dict[str, Any]]:
        return [line for line in self.parsed() if line["msg"] == msg]


@contextmanager
def captured_logs(level: int = logging.DEBUG) -> Iterator[LogLines]:
    handler = LogLines()
    previous = logs.log.level
    logs.log.addHandler(handler)
    logs.log.setLevel(level)
    try:
        yield handler
    finally:
        logs.log.removeHandler(handler)
        logs.log.setLevel(previous)
