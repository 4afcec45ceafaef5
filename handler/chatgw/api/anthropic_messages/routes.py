"""The Messages door's routes: `POST /v1/messages` (Claude Code adds `?beta=true`),
`POST /v1/messages/count_tokens`, the model list in Anthropic's shape (for a request that carries
`anthropic-version`), and `HEAD /` and `GET /` (Claude Code probes the base URL). The endpoints'
module (`endpoints.py`, with the door's request models) is imported by the door's first request;
its error envelope is registered here, for every request of its paths."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from chatgw.api import lazy
from chatgw.api.anthropic_messages.errors import ANTHROPIC_ERRORS
from chatgw.api.door import Authenticate
from chatgw.api.http import register_error_style
from chatgw.api.openai_chat.routes import model_object
from chatgw.catalog import ModelEntry
from chatgw.errors import NotFound
from chatgw.service import Service
from chatgw.settings import Settings

PATHS = ("/v1/messages",)
EPOCH = "1970-01-01T00:00:00Z"
ENDPOINTS = "chatgw.api.anthropic_messages.endpoints"


def is_messages_path(path: str) -> bool:
    return path.rstrip("/") in PATHS or path.startswith("/v1/messages/")


register_error_style(is_messages_path, ANTHROPIC_ERRORS)


def router(service: Service, settings: Settings, authenticate: Authenticate) -> APIRouter:
    routes = APIRouter()
    # Not in the OpenAPI document yet (it describes the chat door; Anthropic publishes its own).
    messages = lazy.endpoint(ENDPOINTS, "messages_route", service, settings, authenticate)
    routes.add_api_route("/v1/messages", messages, methods=["POST"], include_in_schema=False)
    count = lazy.endpoint(ENDPOINTS, "count_tokens_route", service, settings, authenticate)
    routes.add_api_route("/v1/messages/count_tokens", count, methods=["POST"], include_in_schema=False)
    return routes


def anthropic_model(entry: ModelEntry) -> dict[str, Any]:
    return {"type": "model", "id": entry.name, "display_name": entry.name, "created_at": EPOCH}


def models_router(service: Service, authenticate: Authenticate) -> APIRouter:
    """`GET /` (Claude Code probes its base URL) and the model lists in Anthropic's shape."""
    routes = APIRouter()

    @routes.api_route("/", methods=["GET", "HEAD"], response_model=None, include_in_schema=False)
    async def root() -> dict[str, str]:
        return {"status": "ok"}

    # Registered before the chat door's routes of the same paths: a request without
    # `anthropic-version` gets OpenAI's shape, as there.
    @routes.get("/v1/models", response_model=None, include_in_schema=False)
    async def list_models(request: Request) -> dict[str, Any]:
        record = await authenticate(request, None)
        entries = service.models_for(record)
        if "anthropic-version" not in request.headers:
            return {"object": "list", "data": [model_object(e.name, e.development) for e in entries]}
        data = [anthropic_model(e) for e in entries]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"data": data, "has_more": False, "first_id": first, "last_id": last}

    @routes.get("/v1/models/{model:path}", response_model=None, include_in_schema=False)
    async def get_model(request: Request) -> dict[str, Any]:
        record = await authenticate(request, None)
        model = str(request.path_params["model"])
        for entry in service.models_for(record):
            if entry.name == model:
                if "anthropic-version" not in request.headers:
                    return model_object(entry.name, entry.development)
                return anthropic_model(entry)
        raise NotFound(f"The model `{model}` does not exist.", param="model", code="model_not_found")

    return routes
