"""The HTTP plumbing every door shares: request ids, the outermost error envelope, the SSE response
that streams an `AnswerStream`, keys from headers, the deadline, and the body read under its limit."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pydantic
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatgw.deadline import Deadline
from chatgw.errors import (
    AuthenticationFailed,
    ChatgwError,
    InternalError,
    InvalidRequest,
    RequestTooLarge,
)
from chatgw.observability import logs
from chatgw.observability.observer import Observer, Report
from chatgw.settings import Settings
from chatgw.streaming import AnswerStream

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)
REQUEST_ID = "chatgw.request_id"
LAMBDA_MARGIN_S = 1.0


def request_id_of(scope: Scope) -> str:
    rid = scope.get(REQUEST_ID)
    if rid is None:
        rid = scope[REQUEST_ID] = uuid.uuid4().hex
    return str(rid)


def report_of(scope: Scope) -> Report:
    return Report.of_scope(scope, request_id_of(scope))


class ErrorStyle(Protocol):
    """How a door writes an error before the first byte: its envelope, status and headers."""

    def response(self, exc: ChatgwError, request_id: str, headers: dict[str, str]) -> Response: ...


class OpenAIErrors:
    """The chat door's (and the Responses door's) envelope: OpenAI's `error` plus the seed's fields."""

    def response(self, exc: ChatgwError, request_id: str, headers: dict[str, str]) -> Response:
        return JSONResponse(exc.envelope(request_id), status_code=exc.status, headers={**exc.headers, **headers})


OPENAI_ERRORS = OpenAIErrors()
STYLES: list[tuple[Callable[[str], bool], ErrorStyle]] = []
"""(path test, style) of the doors whose envelope is not OpenAI's, registered by each door's package."""


def register_error_style(matches: Callable[[str], bool], style: ErrorStyle) -> None:
    STYLES.append((matches, style))


def style_for(path: str) -> ErrorStyle:
    for matches, style in STYLES:
        if matches(path):
            return style
    return OPENAI_ERRORS


def error_response(
    exc: ChatgwError, request_id: str, headers: dict[str, str] | None = None, path: str = ""
) -> Response:
    """The error in the envelope of the door `path` belongs to (OpenAI's for every other path)."""
    return style_for(path).response(exc, request_id, headers or {})


class Envelope:
    """Outermost ASGI layer: a request id on every response, and no exception ever escapes
    without becoming the spec's error envelope; and the request's `completion` line once it is over."""

    def __init__(self, app: ASGIApp, observer: Observer) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        report = report_of(scope)
        started = False
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                report.status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", raw_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            logs.event("unhandled", logging.ERROR, request_id=request_id, error_type=type(exc).__name__)
            if not started:
                report.code = InternalError.code
                error = InternalError("The gateway failed to handle this request.")
                response = error_response(error, request_id, path=str(scope.get("path", "")))
                await response(scope, receive, send_with_id)
        finally:
            self.observer.finish(report)


class SSEResponse(StreamingResponse):
    """Streams an `AnswerStream`: frames as they come, keep-alives, and the usage write after the
    last byte. A client that disconnects stops the backend at once."""

    media_type = "text/event-stream"

    def __init__(self, stream: AnswerStream, keepalive_s: float, headers: dict[str, str]) -> None:
        super().__init__(
            content=iter(()),
            status_code=200,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **headers},
            media_type=self.media_type,
        )
        self.stream = stream
        self.keepalive_s = keepalive_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                task.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
            await asyncio.shield(self.stream.finish())

    async def _pump(self, send: Send) -> None:
        frames = self.stream.frames(self.keepalive_s)
        try:
            async for data in frames:
                await send({"type": "http.response.body", "body": data, "more_body": True})
        finally:
            await frames.aclose()  # type: ignore[attr-defined]
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        await self.stream.close()


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def presented_key(request: Request) -> str | None:
    """The key from `x-api-key` or `Authorization: Bearer`; both may be sent, but must agree."""
    api_keys = request.headers.getlist("x-api-key")
    bearers = [v[7:].strip() for v in request.headers.getlist("authorization") if v[:7].lower() == "bearer "]
    if request.headers.getlist("authorization") and not bearers:
        raise AuthenticationFailed("The Authorization header must be `Bearer KEY`.")
    found = {k.strip() for k in api_keys + bearers if k.strip()}
    if len(found) > 1:
        raise AuthenticationFailed("Different API keys were sent in `x-api-key` and `Authorization`.")
    return found.pop() if found else None


def deadline_for(scope: Scope, settings: Settings) -> Deadline:
    seconds = settings.request_timeout_s
    context = scope.get("aws.context")
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        seconds = min(seconds, max(0.1, remaining() / 1000 - LAMBDA_MARGIN_S))
    return Deadline.in_seconds(seconds)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"The request body is larger than the limit of {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"The request body is larger than the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_body(
    model: type[ModelT], body: bytes, kind: str, to_invalid: Callable[[list[Any], Any], ChatgwError]
) -> ModelT:
    """`body` validated as the door's `model`. An empty body, or what pydantic found wrong, is the
    door's 400: `to_invalid(errors, data)` words it, `data` being the parsed input (to name fields by
    their paths in it), or None when the body is not JSON at all."""
    if not body.strip():
        raise InvalidRequest(f"The request body is empty: send a JSON {kind} request.", param="body")
    try:
        return model.model_validate_json(body)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        data = None
        if not any(e["type"] == "json_invalid" for e in errors):  # never re-parse what pydantic could not
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):  # deep nesting must not be a 500
                data = None
        raise to_invalid(errors, data) from None
