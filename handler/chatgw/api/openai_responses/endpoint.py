"""The Responses door's endpoint, stateless: each request carries its whole history, and the answer
says `store: false`. Loaded by the door's first request (`routes.py`, `api/lazy.py`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask

from chatgw.access.keys import KeyRecord
from chatgw.api.http import SSEResponse, deadline_for, read_body, report_of
from chatgw.api.openai_responses.grammar import ResponsesGrammar
from chatgw.api.openai_responses.inbound import hosted_rule, to_conversation
from chatgw.api.openai_responses.outbound import response_body, stamp_for
from chatgw.api.openai_responses.validation import parse_responses_request
from chatgw.api.openai_responses.wire import ResponsesRequest
from chatgw.deadline import Deadline
from chatgw.errors import ChatgwError, UnsupportedParameter
from chatgw.observability import logs
from chatgw.service import Call, Service
from chatgw.settings import Settings
from chatgw.streaming import AnswerStream

Authenticate = Callable[[Request, Deadline | None], Awaitable[KeyRecord]]
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


def responses_route(
    service: Service, settings: Settings, authenticate: Authenticate
) -> Callable[[Request], Awaitable[Response]]:
    async def responses(request: Request) -> Response:
        started = time.monotonic()
        deadline = deadline_for(request.scope, settings)
        report = report_of(request.scope)
        record = await authenticate(request, deadline)
        report.key_id = record.key_id
        body = await read_body(request, settings.max_body_bytes)
        parsed = parse_responses_request(body)
        report.asked(parsed.model, bool(parsed.stream))
        call = Call(report.request_id, deadline, report=report, now=service.wall_clock())
        if settings.log_prompts:
            logs.event("prompt", request_id=call.request_id, key_id=record.key_id, body=body.decode("utf-8", "replace"))
        check_hosted_tools(service, parsed, call.request_id)
        conversation = to_conversation(parsed, body)
        prepared = await service.prepare(record, conversation, call)
        logs.event(
            "responses",
            logging.DEBUG,
            request_id=call.request_id,
            key_id=record.key_id,
            model=parsed.model,
            stream=bool(parsed.stream),
            auth_ms=int((time.monotonic() - started) * 1000),
        )
        assert conversation.original is not None
        stamp = stamp_for(
            parsed,
            conversation.original.body(),
            response_id=f"resp_{call.request_id}",
            created_at=int(call.now.timestamp()),
        )
        if parsed.stream:
            stream = AnswerStream(service, prepared, call, ResponsesGrammar(stamp))
            await stream.start(first_byte_wait=settings.keepalive_s)
            return SSEResponse(stream, settings.keepalive_s, prepared.headers)
        answer, usage, event = await service.complete(prepared, call)
        settle = BackgroundTask(service.record, event, call.deadline)
        return JSONResponse(response_body(answer, stamp, usage), headers=prepared.headers, background=settle)

    return responses
