"""What every door does alike with an answer request, in its own grammar around it: the key, the
body read under its limit and parsed by the door, the call's deadline and report, the prompt log;
then the answer, streamed through the door's grammar or buffered into its body with the usage
written after the response."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask

from chatgw.access.keys import KeyRecord
from chatgw.api.http import SSEResponse, deadline_for, read_body, report_of
from chatgw.conversation import Answer, Usage
from chatgw.deadline import Deadline
from chatgw.observability import logs
from chatgw.service import Call, Prepared, Service
from chatgw.settings import Settings
from chatgw.streaming import AnswerStream, Grammar

Authenticate = Callable[[Request, Deadline | None], Awaitable[KeyRecord]]
Endpoint = Callable[[Request], Awaitable[Response]]


class Asked(Protocol):
    """What every door's parsed request says: the model, and whether the answer streams."""

    @property
    def model(self) -> str: ...

    @property
    def stream(self) -> bool | None: ...


AskedT = TypeVar("AskedT", bound=Asked)


@dataclass(slots=True)
class Arrival(Generic[AskedT]):
    """A door's request, its key known and its body parsed."""

    record: KeyRecord
    body: bytes
    parsed: AskedT
    call: Call
    started: float

    def admitted(self, door: str) -> None:
        """The debug line once the service admitted the request (how long the key check took)."""
        logs.event(
            door,
            logging.DEBUG,
            request_id=self.call.request_id,
            key_id=self.record.key_id,
            model=self.parsed.model,
            stream=bool(self.parsed.stream),
            auth_ms=int((time.monotonic() - self.started) * 1000),
        )


async def arrive(
    request: Request,
    service: Service,
    settings: Settings,
    authenticate: Authenticate,
    parse: Callable[[bytes], AskedT],
) -> Arrival[AskedT]:
    started = time.monotonic()
    deadline = deadline_for(request.scope, settings)  # counted from the request's arrival
    report = report_of(request.scope)
    record = await authenticate(request, deadline)
    report.key_id = record.key_id
    body = await read_body(request, settings.max_body_bytes)
    parsed = parse(body)
    report.asked(parsed.model, bool(parsed.stream))
    call = Call(report.request_id, deadline, report=report, now=service.wall_clock())
    if settings.log_prompts:
        logs.event("prompt", request_id=call.request_id, key_id=record.key_id, body=body.decode("utf-8", "replace"))
    return Arrival(record, body, parsed, call, started)


async def answer(
    service: Service,
    settings: Settings,
    prepared: Prepared,
    call: Call,
    *,
    grammar: Grammar | None,
    body_of: Callable[[Answer, Usage], dict[str, Any]],
    headers: dict[str, str],
) -> Response:
    """Streamed through `grammar` when there is one; else buffered, `body_of` the answer, and the
    usage written once the response is sent."""
    if grammar is not None:
        stream = AnswerStream(service, prepared, call, grammar)
        await stream.start(first_byte_wait=settings.keepalive_s)
        return SSEResponse(stream, settings.keepalive_s, headers)
    answered, usage, event = await service.complete(prepared, call)
    settle = BackgroundTask(service.record, event, call.deadline)
    return JSONResponse(body_of(answered, usage), headers=headers, background=settle)
