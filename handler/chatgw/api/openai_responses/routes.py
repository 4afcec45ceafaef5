"""The Responses door's routes: `POST /v1/responses` (and `/v2/llms/responses`). The endpoint's
module (`endpoint.py`, with the door's request models) is imported by the door's first request."""

from __future__ import annotations

from fastapi import APIRouter

from chatgw.api import lazy
from chatgw.api.door import Authenticate
from chatgw.service import Service
from chatgw.settings import Settings

ENDPOINT = "chatgw.api.openai_responses.endpoint"


def router(service: Service, settings: Settings, authenticate: Authenticate) -> APIRouter:
    routes = APIRouter()
    responses = lazy.endpoint(ENDPOINT, "responses_route", service, settings, authenticate)
    # Not in the OpenAPI document yet (it documents the chat door's shapes, which it checks by fuzzing).
    routes.add_api_route("/v2/llms/responses", responses, methods=["POST"], include_in_schema=False)
    routes.add_api_route("/v1/responses", responses, methods=["POST"], include_in_schema=False)
    return routes
