"""The Responses door's endpoint, stateless: each request carries its whole history, and the answer
says `store: false`. Loaded by the door's first request (`routes.py`, `api/lazy.py`)."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import Response

from chatgw.api import door
from chatgw.api.door import Authenticate, Endpoint, arrive
from chatgw.api.openai_responses.grammar import ResponsesGrammar
from chatgw.api.openai_responses.inbound import hosted_rule, to_conversation
from chatgw.api.openai_responses.outbound import response_body, stamp_for
from chatgw.api.openai_responses.validation import parse_responses_request
from chatgw.api.openai_responses.wire import ResponsesRequest
from chatgw.errors import ChatgwError, UnsupportedParameter
from chatgw.observability import logs
from chatgw.service import Service
from chatgw.settings import Settings

DIALECT = "openai_responses"


def speaks_responses(service: Service, model: str) -> bool:
    """Whether the model's backend is an upstream of this dialect (it then gets the client's body,
    hosted tools included). A backend says so with `native_dialect = "openai_responses"`."""
    try:
        entry = service.catalog.get(model)
    except ChatgwError:
        return False  # the service's own lookup says what is wrong with the model
    return entry.native_dialect == DIALECT


def check_hosted_tools(service: Service, request: ResponsesRequest, request_id: str) -> None:
    """Hosted tools go whole to an upstream of this dialect. Any other backend cannot run them: they
    are dropped when the model may answer without them, and refused when `tool_choice` requires one."""
    hosted, required = hosted_rule(request)
    if not hosted and not required:
        return
    if speaks_responses(service, request.model):
        return
    if required:
        raise UnsupportedParameter(
            f"`tool_choice` requires a tool the provider runs ({', '.join(hosted) or 'a hosted tool'}), which the "
            f"backend of model '{request.model}' does not have: it takes `function` and `custom` tools only.",
            param="tool_choice",
        )
    logs.event("hosted_tools_dropped", logging.INFO, request_id=request_id, model=request.model, tools=hosted)


def responses_route(service: Service, settings: Settings, authenticate: Authenticate) -> Endpoint:
    async def responses(request: Request) -> Response:
        arrival = await arrive(request, service, settings, authenticate, parse_responses_request)
        parsed, call = arrival.parsed, arrival.call
        check_hosted_tools(service, parsed, call.request_id)
        conversation = to_conversation(parsed, arrival.body)
        prepared = await service.prepare(arrival.record, conversation, call)
        arrival.admitted("responses")
        assert conversation.original is not None
        stamp = stamp_for(
            parsed,
            conversation.original.body(),
            response_id=f"resp_{call.request_id}",
            created_at=int(call.now.timestamp()),
        )
        return await door.answer(
            service,
            settings,
            prepared,
            call,
            grammar=ResponsesGrammar(stamp) if parsed.stream else None,
            body_of=lambda answer, usage: response_body(answer, stamp, usage),
            headers=prepared.headers,
        )

    return responses
