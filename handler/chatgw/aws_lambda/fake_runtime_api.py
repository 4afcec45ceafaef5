"""A minimal fake of the Lambda Runtime API on 127.0.0.1, for `chatgw invoke --stream` and the tests.

It hands out the events it is given on `GET /invocation/next`, and records what the runtime sends
back: a streamed `/response` chunk by chunk with each chunk's arrival time (the prelude and the
8-NUL delimiter split off, the error trailers read), a buffered `/response`, an `/error` or an
`/init/error`. Standard library only; it runs its own threads, independent of the runtime's loop."""

from __future__ import annotations

import base64
import json
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from chatgw.aws_lambda.runtime_api import API_PREFIX, ERROR_BODY_TRAILER, ERROR_TYPE_TRAILER, PRELUDE_DELIMITER

PRELUDE_LIMIT = 16 * 1024
"""API Gateway reads the prelude and its delimiter from the first 16 KB of the stream."""


@dataclass
class FakeInvocation:
    event: Any
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    deadline_ms: int = 0
    trace_id: str | None = None
    deadline_in_s: float | None = None
    function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:chatgw"
    handed_out_at: float | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    raw_chunks: list[bytes] = field(default_factory=list)
    prelude: dict[str, Any] | None = None
    prelude_error: str | None = None
    body_chunks: list[tuple[float, bytes]] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)
    buffered_body: bytes | None = None
    error: dict[str, Any] | None = None
    error_type_header: str | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    on_update: Callable[[str], None] | None = None
    cut_after_chunks: int | None = None
    """Drop the response connection after this many body chunks, as when the client goes away."""
    cut: bool = False
    _raw: bytearray = field(default_factory=bytearray)

    @property
    def body(self) -> bytes:
        return b"".join(chunk for _, chunk in self.body_chunks)

    @property
    def stream_error(self) -> tuple[str, str] | None:
        """The error trailers: (type, decoded body), if the runtime sent them."""
        error_type = self.trailers.get(ERROR_TYPE_TRAILER.lower())
        if error_type is None:
            return None
        encoded = self.trailers.get(ERROR_BODY_TRAILER.lower(), "")
        return error_type, base64.b64decode(encoded).decode("utf-8", "replace")

    @property
    def succeeded(self) -> bool:
        return (
            self.finished.is_set()
            and not self.cut
            and self.error is None
            and self.stream_error is None
            and self.prelude_error is None
            and (self.prelude is not None or self.buffered_body is not None)
        )

    def wait(self, timeout: float = 30.0) -> bool:
        return self.finished.wait(timeout)

    def wait_for_chunks(self, count: int, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while len(self.body_chunks) < count and not self.finished.is_set():
            if time.monotonic() > end:
                return False
            time.sleep(0.005)
        return len(self.body_chunks) >= count

    def _elapsed_ms(self) -> float:
        return (time.monotonic() - (self.handed_out_at or time.monotonic())) * 1000

    def _say(self, line: str) -> None:
        if self.on_update is not None:
            self.on_update(line)

    def _add_chunk(self, data: bytes) -> None:
        at = self._elapsed_ms()
        self.raw_chunks.append(data)
        if self.prelude is None and self.prelude_error is None:
            self._raw += data
            cut = self._raw.find(PRELUDE_DELIMITER, 0, PRELUDE_LIMIT + len(PRELUDE_DELIMITER))
            if cut < 0:
                if len(self._raw) > PRELUDE_LIMIT:
                    self.prelude_error = "no 8-NUL delimiter in the first 16 KB"
                    self._say(f"prelude error: {self.prelude_error}")
                return
            try:
                self.prelude = json.loads(bytes(self._raw[:cut]))
            except ValueError as exc:
                self.prelude_error = f"the prelude is not JSON: {exc}"
                self._say(f"prelude error: {self.prelude_error}")
                return
            self._say(f"prelude (+{at:.1f} ms): {json.dumps(self.prelude)}")
            data = bytes(self._raw[cut + len(PRELUDE_DELIMITER) :])
            if not data:
                return
        elif self.prelude is None:
            return
        self.body_chunks.append((at, data))
        self._say(f"+{at:8.1f} ms  {data.decode('utf-8', 'replace')!r}")


def describe(invocation: FakeInvocation) -> str:
    """The one-line ending of an invocation, as `chatgw invoke --stream` prints it."""
    if invocation.error is not None:
        return f"error (/invocation/{invocation.request_id}/error): {json.dumps(invocation.error)}"
    if not invocation.finished.is_set():
        return "end: the runtime did not finish the invocation"
    if invocation.buffered_body is not None:
        return f"end: buffered response (not streamed): {invocation.buffered_body[:2000]!r}"
    stream_error = invocation.stream_error
    summary = f"{len(invocation.body_chunks)} chunks, {len(invocation.body)} bytes"
    if stream_error is not None:
        return f"end: error trailers after {summary}: {stream_error[0]}: {stream_error[1]}"
    if invocation.prelude_error is not None:
        return f"end: {invocation.prelude_error}"
    return f"end: complete, {summary}"


class FakeRuntimeAPI:
    """`snap_start=True` is an environment initialised for a snapshot: as Lambda's runtime interface
    emulator, it then also serves `GET restore/next` (answered once `restored` is set: at once
    unless `hold_restore`) and `POST restore/error`. `calls` lists every call in arrival order."""

    def __init__(self, *, snap_start: bool = False, hold_restore: bool = False) -> None:
        self._pending: queue.Queue[FakeInvocation | None] = queue.Queue()
        self.invocations: dict[str, FakeInvocation] = {}
        self.init_error: dict[str, Any] | None = None
        self.init_error_type: str | None = None
        self.init_failed = threading.Event()
        self.next_calls = 0
        self.snap_start = snap_start
        self.calls: list[str] = []
        self.restored = threading.Event()
        if not hold_restore:
            self.restored.set()
        self.restore_error: dict[str, Any] | None = None
        self.restore_error_type: str | None = None
        self._server = _FakeServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> FakeRuntimeAPI:
        self._thread.start()
        return self

    def close(self) -> None:
        self._pending.put(None)
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeRuntimeAPI:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def push(
        self,
        event: Any,
        *,
        deadline_ms: int | None = None,
        deadline_in_s: float | None = None,
        trace_id: str | None = None,
    ) -> FakeInvocation:
        """Queue an event. Its deadline: `deadline_ms` (epoch ms), or `deadline_in_s` counted from
        when the runtime takes the invocation (as Lambda's timeout starts at the invoke, not at
        whatever moment a test queued it), or 300 s from now."""
        deadline = deadline_ms if deadline_ms is not None else int((time.time() + 300) * 1000)
        invocation = FakeInvocation(event=event, deadline_ms=deadline, trace_id=trace_id, deadline_in_s=deadline_in_s)
        self.invocations[invocation.request_id] = invocation
        self._pending.put(invocation)
        return invocation

    def _next(self) -> FakeInvocation | None:
        self.next_calls += 1
        invocation = self._pending.get()
        if invocation is None:
            self._pending.put(None)  # wake every other waiter too
        return invocation


class _FakeServer(ThreadingHTTPServer):
    """The fake's HTTP server; its handlers reach the fake through it."""

    daemon_threads = True

    def __init__(self, fake: FakeRuntimeAPI) -> None:
        super().__init__(("127.0.0.1", 0), RuntimeAPIHandler)
        self.fake = fake


class RuntimeAPIHandler(BaseHTTPRequestHandler):
    """One connection of the runtime to the fake: answers its calls and records what it sent."""

    protocol_version = "HTTP/1.1"
    server: _FakeServer

    @property
    def fake(self) -> FakeRuntimeAPI:
        return self.server.fake

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes = b'{"status":"OK"}', **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        self.fake.calls.append(f"GET {self.path.removeprefix(API_PREFIX)}")
        if self.fake.snap_start and self.path == API_PREFIX + "restore/next":
            self.fake.restored.wait()
            self._answer(200, b"")
            return
        if self.path != API_PREFIX + "invocation/next":
            self._answer(404, b'{"errorMessage":"not found"}')
            return
        invocation = self.fake._next()
        if invocation is None:
            self._answer(500, b'{"errorMessage":"the fake Runtime API is shutting down"}')
            return
        if invocation.deadline_in_s is not None:
            invocation.deadline_ms = int((time.time() + invocation.deadline_in_s) * 1000)
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
        }
        if invocation.trace_id:
            headers["Lambda-Runtime-Trace-Id"] = invocation.trace_id
        invocation.handed_out_at = time.monotonic()
        self._answer(200, json.dumps(invocation.event).encode(), **headers)

    def do_POST(self) -> None:
        tail = self.path.removeprefix(API_PREFIX)
        self.fake.calls.append(f"POST {tail}")
        if self.fake.snap_start and tail == "restore/error":
            self.fake.restore_error = json.loads(self._read_body() or b"null")
            self.fake.restore_error_type = self.headers.get(ERROR_TYPE_TRAILER)
            self._answer(202)
            return
        if tail == "init/error":
            self.fake.init_error = json.loads(self._read_body() or b"null")
            self.fake.init_error_type = self.headers.get(ERROR_TYPE_TRAILER)
            self.fake.init_failed.set()
            self._answer(202)
            return
        parts = tail.split("/")
        invocation = self.fake.invocations.get(parts[1]) if len(parts) == 3 else None
        if invocation is None or parts[0] != "invocation" or parts[2] not in ("response", "error"):
            self._answer(404, b'{"errorMessage":"unknown invocation"}')
            return
        invocation.response_headers = {k.lower(): v for k, v in self.headers.items()}
        if parts[2] == "error":
            invocation.error = json.loads(self._read_body() or b"null")
            invocation.error_type_header = self.headers.get(ERROR_TYPE_TRAILER)
        elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            if not self._read_chunked(invocation):
                invocation.finished.set()
                return
        else:
            invocation.buffered_body = self._read_body()
        invocation.finished.set()
        self._answer(202)

    def _read_chunked(self, invocation: FakeInvocation) -> bool:
        """Reads the chunks and trailers; False when it cut the connection on purpose."""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            invocation._add_chunk(self.rfile.read(size))
            self.rfile.readline()
            if invocation.cut_after_chunks is not None and len(invocation.body_chunks) >= invocation.cut_after_chunks:
                invocation.cut = True
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return False
        while True:
            line = self.rfile.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            invocation.trailers[name.strip().lower()] = value.strip()
        return True
