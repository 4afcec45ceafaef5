"""The FastAPI app: routes, authentication, the one error envelope, request ids.
The only module that knows HTTP; it turns `errors.py` exceptions into statuses."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatgw import __version__
from chatgw.access.keys import KeyRecord
from chatgw.api.openai_chat.validation import parse_chat_request
from chatgw.backends.base import Deadline
from chatgw.errors import (
    AuthenticationFailed,
    ChatgwError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RequestTooLarge,
)
from chatgw.observability import logs
from chatgw.observability.observer import Observer, Report
from chatgw.service import Call, Service
from chatgw.settings import Settings
from chatgw.streaming import ChatStream

REQUEST_ID = "chatgw.request_id"
LAMBDA_MARGIN_S = 1.0


def request_id_of(scope: Scope) -> str:
    rid = scope.get(REQUEST_ID)
    if rid is None:
        rid = scope[REQUEST_ID] = uuid.uuid4().hex
    return str(rid)


def report_of(scope: Scope) -> Report:
    return Report.of_scope(scope, request_id_of(scope))


def error_response(exc: ChatgwError, request_id: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.envelope(request_id), status_code=exc.status, headers={**exc.headers, **(headers or {})})


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
                response = error_response(InternalError("The gateway failed to handle this request."), request_id)
                await response(scope, receive, send_with_id)
        finally:
            self.observer.finish(report)


class SSEResponse(StreamingResponse):
    """Streams a `ChatStream`: frames as they come, keep-alives, and the usage write after the
    last byte. A client that disconnects stops the backend at once."""

    media_type = "text/event-stream"

    def __init__(self, stream: ChatStream, keepalive_s: float, headers: dict[str, str]) -> None:
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


def create_app(service: Service, settings: Settings) -> FastAPI:
    app = FastAPI(
        title="chatgw",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.router.redirect_slashes = False  # a redirect would drop API Gateway's stage prefix and a POST body

    async def authenticate(request: Request, deadline: Deadline | None = None) -> KeyRecord:
        presented = presented_key(request)
        report_of(request.scope).claimed(presented)  # the public key id, for the logs of a refusal
        return await service.authenticate(presented, deadline=deadline or deadline_for(request.scope, settings))

    @app.get("/health", include_in_schema=True, response_model=None)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def chat(request: Request) -> Response:
        started = time.monotonic()
        deadline = deadline_for(request.scope, settings)  # counted from the request's arrival
        report = report_of(request.scope)
        record = await authenticate(request, deadline)
        report.key_id = record.key_id
        body = await read_body(request, settings.max_body_bytes)
        chat_request = parse_chat_request(body)
        report.asked(chat_request.model, bool(chat_request.stream))
        call = Call(report.request_id, deadline, report=report, now=service.wall_clock())
        if settings.log_prompts:
            logs.event(
                "prompt",
                request_id=call.request_id,
                key_id=record.key_id,
                body=body.decode("utf-8", "replace"),
            )
        prepared = await service.prepare(record, chat_request, call)
        logs.event(
            "chat",
            logging.DEBUG,
            request_id=call.request_id,
            key_id=record.key_id,
            model=chat_request.model,
            stream=bool(chat_request.stream),
            auth_ms=int((time.monotonic() - started) * 1000),
        )
        if chat_request.stream:
            stream = ChatStream(service, prepared, call)
            await stream.start(first_byte_wait=settings.keepalive_s)
            return SSEResponse(stream, settings.keepalive_s, prepared.headers)
        answer, event = await service.complete(prepared, call)
        settle = BackgroundTask(service.record, event, call.deadline)
        return JSONResponse(answer, headers=prepared.headers, background=settle)

    chat_openapi = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
        }
    }
    app.add_api_route("/v2/llms/chat/completions", chat, methods=["POST"], openapi_extra=chat_openapi)
    app.add_api_route("/v1/chat/completions", chat, methods=["POST"], openapi_extra=chat_openapi)

    @app.get("/v2/llms", response_model=None)
    async def list_llms(request: Request) -> dict[str, Any]:
        record = await authenticate(request)
        models = service.models_for(record)
        default = models[0].name if models else None
        return {
            "llms": [
                {
                    "id": m.name,
                    "name": m.name,
                    "description": m.description,
                    "enabled": True,
                    "default": m.name == default,
                }
                for m in models
            ],
            "metadata": {"page_key": None},
        }

    def model_object(name: str, development: bool) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "chatgw-development" if development else "chatgw",
        }

    @app.get("/v2/llms/models", response_model=None)
    @app.get("/v1/models", response_model=None)
    async def list_models(request: Request) -> dict[str, Any]:
        record = await authenticate(request)
        return {
            "object": "list",
            "data": [model_object(m.name, m.development) for m in service.models_for(record)],
        }

    model_parameter = {"parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]}

    @app.get("/v2/llms/models/{model:path}", response_model=None, openapi_extra=model_parameter)
    @app.get("/v1/models/{model:path}", response_model=None, openapi_extra=model_parameter)
    async def get_model(request: Request) -> dict[str, Any]:
        model = str(request.path_params["model"])
        record = await authenticate(request)
        for m in service.models_for(record):
            if m.name == model:
                return model_object(m.name, m.development)
        raise NotFound(f"The model `{model}` does not exist.", param="model", code="model_not_found")

    install_error_handlers(app, service.observer)
    app.add_middleware(Envelope, observer=service.observer)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def install_error_handlers(app: FastAPI, observer: Observer) -> None:
    def handler(
        convert: Callable[[Any], ChatgwError],
    ) -> Callable[[Request, Any], Awaitable[JSONResponse]]:
        async def handle(request: Request, exc: Any) -> JSONResponse:
            error = convert(exc)
            observer.refused(report_of(request.scope), error, request.url.path)
            return error_response(error, request_id_of(request.scope))

        return handle

    def from_http(exc: StarletteHTTPException) -> ChatgwError:
        if exc.status_code == 404:
            return NotFound("Unknown route. The API is `POST /v2/llms/chat/completions`.")
        if exc.status_code == 405:  # keeps Starlette's `Allow` header (RFC 9110)
            return MethodNotAllowed("This method is not allowed on this route.", headers=dict(exc.headers or {}))
        error = ChatgwError(str(exc.detail))
        error.status = exc.status_code
        return error

    def from_validation(exc: RequestValidationError) -> ChatgwError:
        return InvalidRequest(
            "The request is invalid.",
            field_errors={".".join(map(str, e["loc"])): e["msg"] for e in exc.errors()},
        )

    app.add_exception_handler(ChatgwError, handler(lambda e: e))
    app.add_exception_handler(StarletteHTTPException, handler(from_http))
    app.add_exception_handler(RequestValidationError, handler(from_validation))


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, corrected by `openapi.correct` to what the app really does."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        from chatgw.api.openai_chat import openapi

        app.openapi_schema = openapi.correct(get_openapi(title=app.title, version=app.version, routes=app.routes))
    return app.openapi_schema
