"""The chat door's routes: `POST /v2/llms/chat/completions` (and `/v1/chat/completions`), and the
model lists in OpenAI's shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from chatgw.api import door
from chatgw.api.door import Authenticate, Endpoint, arrive
from chatgw.api.openai_chat.completion import ChunkGrammar, completion_body
from chatgw.api.openai_chat.inbound import to_conversation
from chatgw.api.openai_chat.validation import parse_chat_request
from chatgw.conversation import Answer, Usage
from chatgw.errors import NotFound
from chatgw.service import Service
from chatgw.settings import Settings

CHAT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
    }
}
MODEL_PARAMETER = {"parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]}


def model_object(name: str, development: bool) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "chatgw-development" if development else "chatgw"}


def chat_route(service: Service, settings: Settings, authenticate: Authenticate) -> Endpoint:
    async def chat(request: Request) -> Response:
        arrival = await arrive(request, service, settings, authenticate, parse_chat_request)
        chat_request, call = arrival.parsed, arrival.call
        prepared = await service.prepare(arrival.record, to_conversation(chat_request, arrival.body), call)
        arrival.admitted("chat")
        completion_id, created = f"chatcmpl-{call.request_id}", int(call.now.timestamp())
        grammar = None
        if chat_request.stream:
            grammar = ChunkGrammar(
                completion_id=completion_id,
                created=created,
                model=chat_request.model,
                include_usage=chat_request.include_usage,
            )

        def body_of(answer: Answer, usage: Usage) -> dict[str, Any]:
            return completion_body(
                answer, completion_id=completion_id, created=created, model=chat_request.model, usage=usage
            )

        return await door.answer(
            service, settings, prepared, call, grammar=grammar, body_of=body_of, headers=prepared.headers
        )

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
