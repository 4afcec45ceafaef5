"""A loopback HTTP proxy that stands between a real client and a real (fake) server and breaks
chosen requests: it delays them, answers 503 or one of DynamoDB's refusals (throttling, transaction
conflicts, a failed condition with the item of the test's choosing), rewrites the request (e.g. a
small page `Limit`), or drops the connection. Rules match on the request (for DynamoDB: the
`X-Amz-Target` operation and the body) and apply to every match, to the first `times`, at a seeded
rate, or in bursts (`at_rate`, `in_bursts`)."""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Match = Callable[[str, bytes], bool]
"""(operation, body) -> does this rule apply."""

THROTTLED = (
    400,
    {"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "Rate of requests exceeds the limit"},
)
TABLE_MISSING = (
    400,
    {"__type": "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException", "message": "Requested resource not found"},
)
"""Not retried by botocore: the write fails at once."""
UNAVAILABLE = (503, {"__type": "com.amazon.coral.availability#ServiceUnavailableException", "message": "unavailable"})
Answer = tuple[int, dict[str, Any]]


def dynamo_error(code: str, message: str, **fields: Any) -> Answer:
    """A DynamoDB error answer as the service sends it (HTTP 400, JSON `__type`)."""
    return 400, {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message, **fields}


CONFLICT = dynamo_error("TransactionConflictException", "Transaction is ongoing for the item")
PROVISIONED = dynamo_error(
    "ProvisionedThroughputExceededException",
    "The level of configured provisioned throughput for the table was exceeded.",
)
REQUEST_LIMIT = dynamo_error(
    "RequestLimitExceeded", "Throughput exceeds the current throughput limit for your account."
)
TX_CONFLICT = dynamo_error(
    "TransactionCanceledException",
    "Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]",
    CancellationReasons=[{"Code": "None"}, {"Code": "TransactionConflict", "Message": "Transaction is ongoing"}],
)
"""A transaction cancelled because another one held one of its items."""
REFUSALS = {
    "conflict": CONFLICT,
    "provisioned": PROVISIONED,
    "throttling": THROTTLED,
    "request-limit": REQUEST_LIMIT,
}
"""The four answers DynamoDB gives without applying a write, by a short name for test ids."""


def condition_failed(item: dict[str, Any]) -> Answer:
    """A failed condition returning `item` as the old item (ReturnValuesOnConditionCheckFailure)."""
    return dynamo_error("ConditionalCheckFailedException", "The conditional request failed", Item=item)


def at_rate(rate: float, seed: int = 0) -> Callable[[int], bool]:
    """Each matching request is hit with probability `rate` (seeded: the same run every time)."""
    rng = random.Random(seed)
    return lambda _n: rng.random() < rate


def in_bursts(length: int, gap: int) -> Callable[[int], bool]:
    """`length` matching requests hit in a row, then `gap` let through, and again."""
    return lambda n: n % (length + gap) < length


def page_limit(limit: int) -> Callable[[bytes], bytes]:
    """Rewrite a Scan/Query to ask for pages of `limit` items: pagination on small data."""

    def rewrite(body: bytes) -> bytes:
        return json.dumps({**json.loads(body), "Limit": limit}).encode()

    return rewrite


@dataclass
class Fault:
    match: Match
    delay_s: float = 0.0
    answer: Answer | Callable[[int], Answer] | None = None
    """The answer instead of the server's; a callable gets the number of earlier hits (0, 1, ...)."""
    rewrite: Callable[[bytes], bytes] | None = None
    """Forward this body instead of the client's."""
    drop: bool = False
    drop_after_forward: bool = False
    """The request reaches the server (and takes effect), but the answer is lost on the way back."""
    times: int | None = None
    """Apply to this many matching requests only (None: all)."""
    pattern: Callable[[int], bool] | None = None
    """Which matching requests (numbered from 0) are hit; None: every one."""
    matched: int = 0
    hits: int = 0


def operation(*names: str, containing: bytes | None = None) -> Match:
    def match(op: str, body: bytes) -> bool:
        return (not names or op in names) and (containing is None or containing in body)

    return match


@dataclass
class FaultyProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextmanager
    def injecting(self, *faults: Fault) -> Iterator[None]:
        self.faults[:0] = faults
        try:
            yield
        finally:
            for fault in faults:
                self.faults.remove(fault)

    def fault_for(self, op: str, body: bytes) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.match(op, body) and (fault.times is None or fault.times > 0):
                    fault.matched += 1
                    if fault.pattern is not None and not fault.pattern(fault.matched - 1):
                        continue
                    if fault.times is not None:
                        fault.times -= 1
                    fault.hits += 1
                    return fault
        return None


def _handler(proxy: FaultyProxy) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(proxy.upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            return None

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            op = str(self.headers.get("x-amz-target", "")).rpartition(".")[2]
            proxy.seen.append(op)
            fault = proxy.fault_for(op, body)
            if fault is not None:
                time.sleep(fault.delay_s)
                if fault.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault.answer is not None:
                    status, payload = fault.answer(fault.hits - 1) if callable(fault.answer) else fault.answer
                    self._reply(status, [("content-type", "application/x-amz-json-1.0")], json.dumps(payload).encode())
                    return
            upstream = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=30)
            try:
                if fault is not None and fault.rewrite is not None:
                    body = fault.rewrite(body)
                hop = ("host", "connection", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                upstream.request("POST", self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                if fault is not None and fault.drop_after_forward:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                hop = ("transfer-encoding", "connection")
                kept = [(k, v) for k, v in response.getheaders() if k.lower() not in hop]
                self._reply(response.status, kept, data)
            finally:
                upstream.close()

        def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
            self.send_response(status)
            for k, v in headers:
                if k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def faulty_proxy(upstream: str) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    proxy.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
