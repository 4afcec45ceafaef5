"""An OpenAI Responses server on loopback, for tests.

By default it answers as the deterministic model of `model.py`, buffered (a Response object) or
streamed (OpenAI's event grammar, every event with a rising `sequence_number`, one word a delta, then
`response.completed`). Tests queue `Script`s for the next requests: reasoning items with encrypted
content, parallel function calls, cached and reasoning tokens, errors before the first byte,
`response.failed`, an `error` event, a stream cut before `response.completed`, a stall; and read
`requests` to see exactly what the upstream received."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .fake_openai import Recorded
from .model import Answer, ToolCallOut, arguments_json, think
from .server import HTTPFake

ENCRYPTED = "gAAAAB-fake-encrypted-reasoning=="
SUMMARY = "Thinking about the question."
WEB_SEARCH = {
    "id": "ws_fake1",
    "type": "web_search_call",
    "status": "completed",
    "action": {"type": "search", "query": "the question"},
}


@dataclass
class Script:
    """How to answer one request (then it is used up)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    """Answer this instead of the model: a dict (JSON) or bytes, with `status`."""
    reasoning: bool = False
    """Begin the output with a reasoning item: a summary and `encrypted_content` (ENCRYPTED)."""
    web_search: bool = False
    """Put a hosted tool's item (`web_search_call`) before the answer, as a model that searched does."""
    parallel_calls: int = 1
    """When the model calls a tool: this many calls, to the offered tools in turn."""
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    incomplete: str | None = None
    """End as `incomplete` with this reason (`content_filter`), whatever the text."""
    failed: tuple[str, str] | None = None
    """(code, message): after the first text delta, `response.failed` (buffered: a failed response)."""
    error_event: tuple[str, str] | None = None
    """(code, message): after the first text delta, an `error` event."""
    end_after_events: int | None = None
    """A stream: send this many events, then end it cleanly, without `response.completed`."""
    stall_after_events: int | None = None
    """A stream: send this many events, then nothing more (the connection kept open)."""


class FakeResponses(HTTPFake[Script, Recorded]):
    """Catalog entries: the openai backend with `api: responses`."""

    backend = {"backend": "openai", "api": "responses"}
    path_prefix = "/v1"

    def __init__(self) -> None:
        super().__init__([Route("/v1/responses", self._responses, methods=["POST"])])

    # ---- the server ---------------------------------------------------------------------------

    async def _responses(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = None
        header_list = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        self.requests.append(Recorded(request.url.path, dict(request.headers), body, header_list))
        script = self.scripts.popleft() if self.scripts else Script()
        if script.body is not None or script.status != 200:
            content = script.body if script.body is not None else {"error": {"message": "scripted", "code": None}}
            if isinstance(content, bytes):
                return Response(content, status_code=script.status, headers=script.headers)
            return JSONResponse(content, status_code=script.status, headers=script.headers)
        if not isinstance(body, dict):
            return JSONResponse({"error": {"message": "bad json", "type": "invalid_request_error"}}, status_code=400)
        turn = Turn(body, script)
        if body.get("stream"):
            return StreamingResponse(self._sse(turn), media_type="text/event-stream", headers=script.headers)
        if script.failed is not None:
            return JSONResponse(turn.response("failed", []))
        return JSONResponse(turn.response(turn.status, turn.items()), headers=script.headers)

    async def _sse(self, turn: Turn) -> AsyncIterator[bytes]:
        script = turn.script
        completed = released = False
        try:
            for n, event in enumerate(turn.events()):
                if n == script.stall_after_events:
                    await self.stall.wait()
                    released = True
                    return
                if n == script.end_after_events:
                    return
                yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            completed = script.failed is None and script.error_event is None
        finally:
            if completed:
                self.stream_completed.set()
            elif not released:
                self.stream_aborted.set()


class Turn:
    """One answer of the model, as a Response object or as its event stream."""

    def __init__(self, body: dict[str, Any], script: Script) -> None:
        self.body = body
        self.script = script
        self.answer = _think(body)
        self.created = int(time.time())
        self.id = "resp_fake0001"
        self.status = "incomplete" if script.incomplete or self.answer.finish == "length" else "completed"

    def usage(self) -> dict[str, Any]:
        inputs = self.answer.prompt_tokens
        output = self.answer.completion_tokens + self.script.reasoning_tokens
        return {
            "input_tokens": inputs,
            "input_tokens_details": {"cached_tokens": min(self.script.cached_tokens, inputs), "cache_write_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": self.script.reasoning_tokens},
            "total_tokens": inputs + output,
        }

    def response(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        body, script = self.body, self.script
        incomplete = script.incomplete or ("max_output_tokens" if status == "incomplete" else None)
        error = (
            {"code": script.failed[0], "message": script.failed[1]} if status == "failed" and script.failed else None
        )
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": error,
            "incomplete_details": {"reason": incomplete} if status == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body.get("model"),
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "top_p": body.get("top_p", 1.0),
            "usage": self.usage() if status in ("completed", "incomplete") else None,
            "metadata": body.get("metadata") or {},
        }

    def calls(self) -> list[ToolCallOut]:
        if not self.answer.tool_calls:
            return []
        first = self.answer.tool_calls[0]
        names = _tools(self.body) if first.name in _tools(self.body) else [first.name]
        start = names.index(first.name)
        return [
            ToolCallOut(f"call_fake_{i + 1}", names[(start + i) % len(names)], first.arguments)
            for i in range(self.script.parallel_calls)
        ]

    def items(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.script.reasoning:
            out.append(_reasoning(SUMMARY))
        if self.script.web_search:
            out.append(WEB_SEARCH)
        if self.answer.tool_calls:
            out += [_call(i, call, arguments_json(call)) for i, call in enumerate(self.calls())]
        else:
            out.append(_message(self.answer.text))
        return out

    def events(self) -> Iterator[dict[str, Any]]:
        counter = itertools.count()

        def ev(kind: str, **fields: Any) -> dict[str, Any]:
            return {"type": kind, "sequence_number": next(counter), **fields}

        yield ev("response.created", response=self.response("in_progress", []))
        yield ev("response.in_progress", response=self.response("in_progress", []))
        done = self.items()
        for index, item in enumerate(done):
            yield from self._item_events(ev, index, item)
            if item["type"] == "message" and (self.script.failed or self.script.error_event):
                if self.script.failed:
                    yield ev("response.failed", response=self.response("failed", []))
                else:
                    code, message = self.script.error_event or ("", "")
                    yield ev("error", code=code, message=message, param=None)
                return
        kind = "response.completed" if self.status == "completed" else "response.incomplete"
        yield ev(kind, response=self.response(self.status, done))

    def _item_events(self, ev: Any, index: int, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
        kind, item_id = item["type"], item["id"]
        if kind == "message":
            yield ev(
                "response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []}
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield ev("response.content_part.added", item_id=item_id, output_index=index, content_index=0, part=part)
            for piece in self.answer.pieces:
                yield ev(
                    "response.output_text.delta",
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
                if self.script.failed or self.script.error_event:
                    return
            text = self.answer.text
            yield ev(
                "response.output_text.done",
                item_id=item_id,
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            )
            yield ev(
                "response.content_part.done",
                item_id=item_id,
                output_index=index,
                content_index=0,
                part=item["content"][0],
            )
        elif kind == "web_search_call":
            yield ev("response.output_item.added", output_index=index, item={**item, "status": "in_progress"})
            for step in ("in_progress", "searching", "completed"):
                yield ev(f"response.web_search_call.{step}", item_id=item_id, output_index=index)
        elif kind == "function_call":
            yield ev(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            arguments = item["arguments"]
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                yield ev("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=piece)
            yield ev("response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=arguments)
        else:
            yield ev(
                "response.output_item.added",
                output_index=index,
                item={**item, "summary": [], "encrypted_content": None},
            )
            part = {"type": "summary_text", "text": ""}
            yield ev(
                "response.reasoning_summary_part.added", item_id=item_id, output_index=index, summary_index=0, part=part
            )
            yield ev(
                "response.reasoning_summary_text.delta",
                item_id=item_id,
                output_index=index,
                summary_index=0,
                delta=SUMMARY,
            )
            yield ev(
                "response.reasoning_summary_text.done",
                item_id=item_id,
                output_index=index,
                summary_index=0,
                text=SUMMARY,
            )
            yield ev(
                "response.reasoning_summary_part.done",
                item_id=item_id,
                output_index=index,
                summary_index=0,
                part={**part, "text": SUMMARY},
            )
        yield ev("response.output_item.done", output_index=index, item=item)


def _reasoning(summary: str) -> dict[str, Any]:
    return {
        "id": "rs_fake1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": summary}],
        "encrypted_content": ENCRYPTED,
    }


def _message(text: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"id": "msg_fake1", "type": "message", "status": "completed", "role": "assistant", "content": content}


def _call(index: int, call: ToolCallOut, arguments: str) -> dict[str, Any]:
    item = {"id": f"fc_fake{index + 1}", "type": "function_call", "status": "completed", "call_id": call.id}
    return {**item, "name": call.name, "arguments": arguments}


def _tools(body: dict[str, Any]) -> list[str]:
    return [t["name"] for t in body.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p)
    return ""


def _think(body: dict[str, Any]) -> Answer:
    items = body.get("input") or []
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    texts: list[str] = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    last_role, last_text = "user", ""
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("type", "message") == "message":
            last_role, last_text = str(item.get("role", "user")), _text(item.get("content"))
        elif item.get("type") == "function_call_output":
            last_role, last_text = "tool", _text(item.get("output"))
        else:
            continue
        texts.append(last_text)
    choice = body.get("tool_choice")
    return think(
        " ".join(texts),
        last_role=last_role,
        last_text=last_text,
        tools=_tools(body),
        forced_tool=choice.get("name") if isinstance(choice, dict) else None,
        tool_choice_none=choice == "none",
        max_tokens=body.get("max_output_tokens"),
        stops=[],
    )
