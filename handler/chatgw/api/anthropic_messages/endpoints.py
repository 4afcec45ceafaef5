"""The Messages door's endpoints, `POST /v1/messages` (Claude Code adds `?beta=true`) and
`POST /v1/messages/count_tokens`. Loaded by the door's first request (`routes.py`, `api/lazy.py`)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from chatgw.access.keys import KeyRecord, model_allowed
from chatgw.api import door
from chatgw.api.anthropic_messages import fields
from chatgw.api.anthropic_messages.errors import anthropic_headers
from chatgw.api.anthropic_messages.inbound import to_conversation
from chatgw.api.anthropic_messages.outbound import message_body
from chatgw.api.anthropic_messages.stream import MessagesGrammar
from chatgw.api.anthropic_messages.validation import parse_messages_request
from chatgw.api.door import Authenticate, Endpoint, arrive
from chatgw.api.http import deadline_for, read_body, report_of
from chatgw.backends.base import CountsTokens
from chatgw.catalog import ModelEntry
from chatgw.conversation import Answer, Conversation, Usage
from chatgw.errors import ModelNotFound, NotFound
from chatgw.metering.estimate import estimate_prompt_tokens
from chatgw.service import Service
from chatgw.settings import Settings


def speaks_anthropic(entry: ModelEntry) -> bool:
    """A backend that sends the client's Messages body on: the `anthropic` backend, or one that
    declares `native_dialect = "anthropic"` (Bedrock's InvokeModel too)."""
    return entry.native_dialect == "anthropic"


def beta_flags(request: Request) -> list[str]:
    """The `anthropic-beta` header's flags, in the client's order (one header or several)."""
    return [f.strip() for value in request.headers.getlist("anthropic-beta") for f in value.split(",") if f.strip()]


def _entry(service: Service, record: KeyRecord, model: str) -> ModelEntry:
    try:
        entry = service.catalog.get(model)
    except ModelNotFound:
        entry = None
    if entry is None or not model_allowed(record, entry.name):  # as if missing: a key cannot map the catalog
        raise ModelNotFound(f"The model `{model}` does not exist.", param="model")
    return entry


def check_fields(service: Service, record: KeyRecord, conversation: Conversation, request_id: str) -> None:
    """The unknown-field rule (fields.py) for each model of the chain that does not speak Anthropic's
    dialect; before admission, so that a refused request costs no rate limit."""
    entry = _entry(service, record, conversation.model)
    for candidate in [entry, *(service.catalog.get(f) for f in entry.fallbacks)]:
        if not speaks_anthropic(candidate):
            fields.enforce(conversation.params, conversation.model, request_id)
            return


def messages_route(service: Service, settings: Settings, authenticate: Authenticate) -> Endpoint:
    async def messages(request: Request) -> Response:
        arrival = await arrive(request, service, settings, authenticate, parse_messages_request)
        parsed, call = arrival.parsed, arrival.call
        conversation = to_conversation(parsed, arrival.body, beta_flags(request))
        check_fields(service, arrival.record, conversation, call.request_id)
        prepared = await service.prepare(arrival.record, conversation, call)
        arrival.admitted("messages")
        message_id = f"msg_{call.request_id}"
        grammar = None
        if parsed.stream:
            grammar = MessagesGrammar(
                message_id=message_id,
                model=parsed.model,
                input_tokens=estimate_prompt_tokens(prepared.conversation),
                stop=prepared.conversation.stop,
            )

        def body_of(answer: Answer, usage: Usage) -> dict[str, Any]:
            stop = prepared.conversation.stop
            return message_body(answer, message_id=message_id, model=parsed.model, usage=usage, stop=stop)

        headers = anthropic_headers(prepared.headers, call.request_id, call.now)
        return await door.answer(service, settings, prepared, call, grammar=grammar, body_of=body_of, headers=headers)

    return messages


def count_tokens_route(service: Service, settings: Settings, authenticate: Authenticate) -> Endpoint:
    """The backend's own count, or a 404: never an estimate (Claude Code decides when to compact a
    conversation by it). Outside the key's rate limits: editors call it many times at start."""

    async def count_tokens(request: Request) -> Response:
        deadline = deadline_for(request.scope, settings)
        report = report_of(request.scope)
        record = await authenticate(request, deadline)
        report.key_id = record.key_id
        body = await read_body(request, settings.max_body_bytes)
        parsed = parse_messages_request(body, counting=True)
        entry = _entry(service, record, parsed.model)
        if not isinstance(entry.backend, CountsTokens):
            raise NotFound(
                f"The backend of model '{parsed.model}' cannot count tokens: this gateway answers only an "
                "upstream's own count, never an estimate."
            )
        tokens = await entry.backend.count_tokens(to_conversation(parsed, body, beta_flags(request)), deadline)
        return JSONResponse({"input_tokens": int(tokens)}, headers={"request-id": report.request_id})

    return count_tokens
