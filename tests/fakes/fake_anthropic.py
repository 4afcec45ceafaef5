"""An Anthropic Messages server on loopback, for tests: `POST /v1/messages` (buffered JSON, or SSE in
Anthropic's event grammar) and `POST /v1/messages/count_tokens`.

By default it answers as the deterministic model of `model.py` (text one word a delta, a tool call when
tools are offered, thinking with a signature when the request asks for thinking). Tests queue `Script`s
to make the next requests misbehave (errors in Anthropic's envelope before the first byte, an `error`
event after it, a stream cut or stalled mid-way) or report cache tokens; and read `requests` to see
exactly what the upstream received (the raw bytes too). The same answers, as one dict per event,
serve the Bedrock fake's InvokeModel (`message_body`, `stream_events`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .model import Answer, arguments_json, think
from .server import HTTPFake

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
THINKING = "Let me think about this."
SIGNATURE = "EqQBCkYIBxgCKkAfakeSignature+/=="


@dataclass
class Script:
    """How to answer one request (then it is used up)."""

    status: int = 200
    message: str = "scripted failure"
    """The `error.message` of a scripted error status or error event."""
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    """Answer this (JSON, with `status`) instead of the model."""
    delay_s: float = 0.0
    stall_before_headers: bool = False
    """Never answer (until the gateway gives up or the test ends): an upstream too slow to start."""
    stall_after_events: int | None = None
    """A stream: send this many events, then nothing more (the connection kept open)."""
    drop_after_events: int | None = None
    """A stream: close the connection after this many events (no message_stop)."""
    end_after_events: int | None = None
    """A stream: end it cleanly but early (no message_stop) after this many events."""
    error_event_after_events: int | None = None
    """A stream: send an `error` event of `error_type` after this many events."""
    error_type: str = "overloaded_error"
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    thinking: bool = False
    """Think (with a signature) even when the request did not ask for it."""


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes = b""


def error_body(status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": kind or ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": "req_fake",
    }


class FakeAnthropic(HTTPFake[Script, Recorded]):
    backend = {"backend": "anthropic"}

    def __init__(self) -> None:
        super().__init__(
            [
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self._count, methods=["POST"]),
            ]
        )

    # ---- the server ---------------------------------------------------------------------------

    async def _record(self, request: Request) -> tuple[Any, Script]:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = None
        self.requests.append(Recorded(request.url.path, dict(request.headers), body, raw))
        script = self.scripts.popleft() if self.scripts else Script()
        if script.delay_s:
            await asyncio.sleep(script.delay_s)
        if script.stall_before_headers:
            await self.stall.wait()
        return body, script

    async def _count(self, request: Request) -> Response:
        body, script = await self._record(request)
        if script.status != 200:
            return JSONResponse(error_body(script.status, script.message), status_code=script.status)
        if not isinstance(body, dict) or "max_tokens" in body or "stream" in body:
            return JSONResponse(error_body(400, "count_tokens takes no max_tokens or stream"), status_code=400)
        return JSONResponse({"input_tokens": _think(body).prompt_tokens})

    async def _messages(self, request: Request) -> Response:
        body, script = await self._record(request)
        if script.body is not None or script.status != 200:
            content = script.body if script.body is not None else error_body(script.status, script.message)
            return JSONResponse(content, status_code=script.status, headers=script.headers)
        if not isinstance(body, dict) or not {"model", "messages", "max_tokens"} <= set(body):
            return JSONResponse(error_body(400, "model, messages and max_tokens: Field required"), status_code=400)
        if body.get("stream"):
            events = stream_events(body, script)
            return StreamingResponse(self._sse(events, script), media_type="text/event-stream", headers=script.headers)
        return JSONResponse(message_body(body, script), headers=script.headers)

    async def _sse(self, events: list[dict[str, Any]], script: Script) -> AsyncIterator[bytes]:
        completed = released = False
        try:
            for n, event in enumerate(events):
                if n == script.stall_after_events:
                    await self.stall.wait()
                    released = True
                    return
                if n == script.drop_after_events:
                    raise ConnectionAbortedError("scripted drop")
                if n == script.end_after_events:
                    return
                if n == script.error_event_after_events:
                    yield sse(error_body(500, script.message, script.error_type))
                    return
                yield sse(event)
            completed = True
        finally:
            if not released:
                (self.stream_completed if completed else self.stream_aborted).set()


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


# ---- the model's answer, in Anthropic's shapes ----------------------------------------------


def _text(content: Any) -> tuple[str, bool]:
    """The text of a message's content, and whether it ends in a tool result."""
    if isinstance(content, str):
        return content, False
    texts, tool = [], False
    for block in content if isinstance(content, list) else ():
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
            tool = False
        elif block.get("type") == "tool_result":
            inner = block.get("content")
            texts.append(inner if isinstance(inner, str) else _text(inner)[0])
            tool = True
    return " ".join(texts), tool


def _system(body: dict[str, Any]) -> str:
    system = body.get("system")
    return system if isinstance(system, str) else " ".join(b.get("text", "") for b in system or ())


def _think(body: dict[str, Any], *, cut: bool = True) -> Answer:
    messages = body.get("messages") or []
    texts = [_text(m.get("content"))[0] for m in messages]
    last_text, last_is_tool = _text(messages[-1].get("content")) if messages else ("", False)
    tools = [t["name"] for t in body.get("tools") or () if "name" in t]
    choice = body.get("tool_choice") or {}
    forced = choice.get("name") if choice.get("type") == "tool" else (tools[0] if choice.get("type") == "any" else None)
    return think(
        " ".join([_system(body), *texts]).strip(),
        last_role="tool" if last_is_tool else "user",
        last_text=last_text,
        tools=tools,
        forced_tool=forced,
        tool_choice_none=choice.get("type") == "none",
        max_tokens=body.get("max_tokens"),
        stops=list(body.get("stop_sequences") or []) if cut else [],
    )


def think_of(body: dict[str, Any]) -> Answer:
    """What the fake model answers to this Messages body."""
    return _think(body)


def _thinks(body: dict[str, Any], script: Script) -> bool:
    return script.thinking or (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")


def _stop(body: dict[str, Any], answer: Answer) -> tuple[str, str | None]:
    if answer.finish == "stop":
        whole = _think(body, cut=False).text
        for stop in body.get("stop_sequences") or ():
            if stop in whole:
                return "stop_sequence", stop
    return STOP_REASONS[answer.finish], None


def _usage(answer: Answer, script: Script, *, output: int) -> dict[str, int]:
    """Anthropic's convention: `input_tokens` leaves out the cache reads and writes."""
    return {
        "input_tokens": answer.prompt_tokens,
        "cache_creation_input_tokens": script.cache_write_tokens,
        "cache_read_input_tokens": script.cache_read_tokens,
        "output_tokens": output,
    }


def message_body(body: dict[str, Any], script: Script | None = None) -> dict[str, Any]:
    script = script or Script()
    answer = _think(body)
    content: list[dict[str, Any]] = []
    if _thinks(body, script):
        content.append({"type": "thinking", "thinking": THINKING, "signature": SIGNATURE})
    if answer.text:
        content.append({"type": "text", "text": answer.text})
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in answer.tool_calls]
    stop, sequence = _stop(body, answer)
    return {
        "id": "msg_fake_1",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": sequence,
        "usage": _usage(answer, script, output=answer.completion_tokens),
    }


def stream_events(body: dict[str, Any], script: Script | None = None) -> list[dict[str, Any]]:
    script = script or Script()
    answer = _think(body)
    start = {**message_body(body, script), "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = _usage(answer, script, output=1)
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    index = 0

    def block(first: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        nonlocal index
        events.append({"type": "content_block_start", "index": index, "content_block": first})
        events.extend({"type": "content_block_delta", "index": index, "delta": d} for d in deltas)
        events.append({"type": "content_block_stop", "index": index})
        index += 1

    if _thinks(body, script):
        thinking = [
            {"type": "thinking_delta", "thinking": THINKING},
            {"type": "signature_delta", "signature": SIGNATURE},
        ]
        block({"type": "thinking", "thinking": "", "signature": ""}, thinking)
    if answer.pieces:
        block({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in answer.pieces])
    for call in answer.tool_calls:
        arguments = arguments_json(call)
        half = len(arguments) // 2
        parts = [{"type": "input_json_delta", "partial_json": p} for p in (arguments[:half], arguments[half:])]
        block({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}, parts)
    stop, sequence = _stop(body, answer)
    final = _usage(answer, script, output=answer.completion_tokens)
    events.append({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": sequence}, "usage": final})
    events.append({"type": "message_stop"})
    return events
