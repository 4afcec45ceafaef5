"""The FastAPI app: one router per door, the error handlers, the OpenAPI document.
The only module that builds the app; errors of `errors.py` become statuses here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatgw import __version__
from chatgw.access.keys import KeyRecord
from chatgw.api.anthropic_messages import routes as anthropic_messages
from chatgw.api.http import Envelope, deadline_for, error_response, presented_key, report_of, request_id_of
from chatgw.api.openai_chat import routes as openai_chat
from chatgw.api.openai_responses import routes as openai_responses
from chatgw.deadline import Deadline
from chatgw.errors import ChatgwError, InvalidRequest, MethodNotAllowed, NotFound
from chatgw.observability.observer import Observer
from chatgw.service import Service
from chatgw.settings import Settings


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

    # Every request walks the routes in order: the answer routes first, the chat door's the most used.
    # Anthropic's model lists come before OpenAI's of the same paths (without `anthropic-version`
    # they answer in OpenAI's shape).
    for door_routes in (
        openai_chat.router(service, settings, authenticate),
        openai_responses.router(service, settings, authenticate),
        anthropic_messages.router(service, settings, authenticate),
        anthropic_messages.models_router(service, authenticate),
        openai_chat.lists_router(service, authenticate),
    ):
        # The routes themselves, not `include_router`: FastAPI 0.165 puts an included router behind
        # a dispatch layer of its own, measured at ~0.2 ms of CPU per request.
        app.router.routes.extend(door_routes.routes)
    install_error_handlers(app, service.observer)
    app.add_middleware(Envelope, observer=service.observer)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def install_error_handlers(app: FastAPI, observer: Observer) -> None:
    def handler(
        convert: Callable[[Any], ChatgwError],
    ) -> Callable[[Request, Any], Awaitable[Response]]:
        async def handle(request: Request, exc: Any) -> Response:
            error = convert(exc)
            observer.refused(report_of(request.scope), error, request.url.path)
            return error_response(error, request_id_of(request.scope), path=request.url.path)

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
