"""A small asyncio client of the Lambda Runtime API (version 2018-06-01): next invocation, streamed
response with error trailers, invocation error and init error. Standard library only: it is the
one piece of the streaming runtime that talks to Lambda, and it must not buffer."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

API_VERSION = "2018-06-01"
API_PREFIX = f"/{API_VERSION}/runtime/"
STREAM_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
PRELUDE_DELIMITER = b"\x00" * 8
ERROR_TYPE_TRAILER = "Lambda-Runtime-Function-Error-Type"
"""The error type: a header of `/error` and `/init/error`, a trailer of a streamed `/response`."""
ERROR_BODY_TRAILER = "Lambda-Runtime-Function-Error-Body"


class RuntimeAPIError(Exception):
    """The Runtime API answered with an unexpected status, or the connection failed."""


@dataclass(frozen=True, slots=True)
class Invocation:
    request_id: str
    deadline_ms: int
    invoked_function_arn: str
    trace_id: str | None
    client_context: str | None
    cognito_identity: str | None
    event: Any


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: dict[str, str]
    body: bytes


def error_payload(error_type: str, message: str, stack: list[str] | None = None) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": error_type, "stackTrace": stack or []}).encode()


async def _read_response(reader: asyncio.StreamReader) -> _Response:
    status_line = await reader.readline()
    if not status_line:
        raise RuntimeAPIError("the Runtime API closed the connection without answering")
    parts = status_line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise RuntimeAPIError(f"malformed status line from the Runtime API: {status_line!r}")
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readline()
        return _Response(int(parts[1]), headers, bytes(body))
    length = int(headers.get("content-length", "0") or 0)
    body_bytes = await reader.readexactly(length) if length else b""
    return _Response(int(parts[1]), headers, body_bytes)


def _head(method: str, host: str, path: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class RuntimeClient:
    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"AWS_LAMBDA_RUNTIME_API must be host:port, got {address!r}")
        self.address = address
        self._host = host.strip("[]")
        self._port = int(port)

    def _path(self, tail: str) -> str:
        return API_PREFIX + tail

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(self._host, self._port)
        except OSError as exc:
            raise RuntimeAPIError(f"cannot reach the Runtime API at {self.address}: {exc}") from exc

    async def _request(self, method: str, tail: str, body: bytes = b"", **headers: str) -> _Response:
        reader, writer = await self._connect()
        try:
            sent = {**headers, "Content-Length": str(len(body))} if method == "POST" else headers
            writer.write(_head(method, self.address, self._path(tail), sent) + body)
            await writer.drain()
            return await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise RuntimeAPIError(f"{method} {tail} failed: {exc}") from exc
        finally:
            writer.close()

    async def next_invocation(self) -> Invocation:
        """Blocks (with no timeout, as the Runtime API asks) until Lambda has an event."""
        response = await self._request("GET", "invocation/next")
        if response.status != 200:
            raise RuntimeAPIError(f"invocation/next answered {response.status}: {response.body[:200]!r}")
        h = response.headers
        return Invocation(
            request_id=h["lambda-runtime-aws-request-id"],
            deadline_ms=int(h.get("lambda-runtime-deadline-ms") or 0),
            invoked_function_arn=h.get("lambda-runtime-invoked-function-arn", ""),
            trace_id=h.get("lambda-runtime-trace-id"),
            client_context=h.get("lambda-runtime-client-context"),
            cognito_identity=h.get("lambda-runtime-cognito-identity"),
            event=json.loads(response.body or b"null"),
        )

    async def invocation_error(self, request_id: str, error_type: str, message: str) -> None:
        await self._post_error(f"invocation/{request_id}/error", error_type, message)

    async def init_error(self, error_type: str, message: str) -> None:
        await self._post_error("init/error", error_type, message)

    async def _post_error(self, tail: str, error_type: str, message: str) -> None:
        response = await self._request(
            "POST",
            tail,
            error_payload(error_type, message),
            **{"Content-Type": "application/json", ERROR_TYPE_TRAILER: error_type},
        )
        if response.status >= 300:
            raise RuntimeAPIError(f"{tail} answered {response.status}: {response.body[:200]!r}")

    async def open_stream(self, request_id: str) -> ResponseStream:
        reader, writer = await self._connect()
        headers = {
            "Lambda-Runtime-Function-Response-Mode": "streaming",
            "Transfer-Encoding": "chunked",
            "Content-Type": STREAM_CONTENT_TYPE,
            "Trailer": f"{ERROR_TYPE_TRAILER}, {ERROR_BODY_TRAILER}",
        }
        writer.write(_head("POST", self.address, self._path(f"invocation/{request_id}/response"), headers))
        return ResponseStream(reader, writer)


class ResponseStream:
    """One streamed `/response` POST: HTTP/1.1 chunked, each `write` one chunk on the wire, drained
    before it returns (TCP_NODELAY is asyncio's default), so nothing is held back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.closed = False

    async def write(self, data: bytes) -> None:
        if not data:
            return  # a zero-length chunk would end the stream
        self._writer.write(b"%x\r\n%b\r\n" % (len(data), data))
        await self._writer.drain()

    async def finish(self, error_type: str | None = None, error_message: str = "") -> int:
        """Ends the stream, with the error trailers when `error_type` is given; returns the Runtime
        API's status (202 when accepted)."""
        if self.closed:
            return 0
        self.closed = True
        try:
            end = b"0\r\n"
            if error_type is not None:
                encoded = base64.b64encode(error_message.encode()).decode()
                end += f"{ERROR_TYPE_TRAILER}: {error_type}\r\n{ERROR_BODY_TRAILER}: {encoded}\r\n".encode()
            self._writer.write(end + b"\r\n")
            await self._writer.drain()
            response = await _read_response(self._reader)
            return response.status
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise RuntimeAPIError(f"finishing the response stream failed: {exc}") from exc
        finally:
            self._writer.close()

    def abort(self) -> None:
        self.closed = True
        self._writer.close()
