"""The chat door's routes: `POST /v2/llms/chat/completions` (and `/v1/chat/completions`), and the
model lists in OpenAI's shape."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask

from chatgw.access.keys import KeyRecord
from chatgw.api.http import SSEResponse, deadline_for, read_body, report_of
from chatgw.api.openai_chat.completion import ChunkGrammar, completion_body
from chatgw.api.openai_chat.inbound import to_conversation
from chatgw.api.openai_chat.validation import parse_chat_request
from chatgw.deadline import Deadline
from chatgw.errors import NotFound
from chatgw.observability import logs
from chatgw.service import Call, Service
from chatgw.settings import Settings
from chatgw.streaming import AnswerStream

Authenticate = Callable[[Request, Deadline | None], Awaitable[KeyRecord]]
Route = Callable[[Request], Awaitable[Response]]
CHAT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
    }
}
MODEL_PARAMETER = {"parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]}


def model_object(name: str, development: bool) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "chatgw-development" if development else "chatgw"}


def chat_route(
    service: Service, settings: Settings, authenticate: Authenticate
) -> Callable[[Request], Awaitable[Response]]:
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
            logs.event("prompt", request_id=call.request_id, key_id=record.key_id, body=body.decode("utf-8", "replace"))
        prepared = await service.prepare(record, to_conversation(chat_request, body), call)
        logs.event(
            "chat",
            logging.DEBUG,
            request_id=call.request_id,
            key_id=record.key_id,
            model=chat_request.model,
            stream=bool(chat_request.stream),
            auth_ms=int((time.monotonic() - started) * 1000),
        )
        completion_id, created = f"chatcmpl-{call.request_id}", int(call.now.timestamp())
        if chat_request.stream:
            grammar = ChunkGrammar(
                completion_id=completion_id,
                created=created,
                model=chat_request.model,
                include_usage=chat_request.include_usage,
            )
            stream = AnswerStream(service, prepared, call, grammar)
            await stream.start(first_byte_wait=settings.keepalive_s)
            return SSEResponse(stream, settings.keepalive_s, prepared.headers)
        answer, usage, event = await service.complete(prepared, call)
        answer_body = completion_body(
            answer, completion_id=completion_id, created=created, model=chat_request.model, usage=usage
        )
        settle = BackgroundTask(service.record, event, call.deadline)
        return JSONResponse(answer_body, headers=prepared.headers, background=settle)

    return chat


def router(service: Service, settings: Settings, authenticate: Authenticate) -> APIRouter:
    routes = APIRouter()
    chat = chat_route(service, settings, authenticate)
    routes.add_api_route("/v2/llms/chat/completions", chat, methods=["POST"], openapi_extra=CHAT_OPENAPI)
    routes.add_api_route("/v1/chat/completions", chat, methods=["POST"], openapi_extra=CHAT_OPENAPI)
    return routes


def lists_router(service: Service, authenticate: Authenticate) -> APIRouter:
    """The model lists in OpenAI's shape (after the answer routes of every door: every request
    walks the routes in order, and the answers are most of them)."""
    routes = APIRouter()

    @routes.get("/v2/llms", response_model=None)
    async def list_llms(request: Request) -> dict[str, Any]:
        record = await authenticate(request, None)
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

    @routes.get("/v2/llms/models", response_model=None)
    @routes.get("/v1/models", response_model=None)
    async def list_models(request: Request) -> dict[str, Any]:
        record = await authenticate(request, None)
        return {"object": "list", "data": [model_object(m.name, m.development) for m in service.models_for(record)]}

    @routes.get("/v2/llms/models/{model:path}", response_model=None, openapi_extra=MODEL_PARAMETER)
    @routes.get("/v1/models/{model:path}", response_model=None, openapi_extra=MODEL_PARAMETER)
    async def get_model(request: Request) -> dict[str, Any]:
        model = str(request.path_params["model"])
        record = await authenticate(request, None)
        for m in service.models_for(record):
            if m.name == model:
                return model_object(m.name, m.development)
        raise NotFound(f"The model `{model}` does not exist.", param="model", code="model_not_found")

    return routes
