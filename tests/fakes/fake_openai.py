"""An OpenAI-compatible chat-completions server on loopback, for tests.

By default it answers as the deterministic model of `model.py`, buffered (JSON) or streamed (SSE,
one word a chunk, then a usage chunk when asked, then `[DONE]`). Tests queue `Script`s to make the
next requests misbehave: errors before the first byte, errors after it, garbage, redirects, slow
answers, missing usage; and read `requests` to see exactly what the upstream received.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .model import Answer, arguments_json, think
from .server import HTTPFake


@dataclass
class Script:
    """How to answer one request (then it is used up)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    """Answer this instead of the model: a dict/list (JSON) or bytes, with `status`."""
    delay_s: float = 0.0
    """Wait before the response headers."""
    chunk_delay_s: float = 0.0
    send_usage: bool = True
    drop_after_chunks: int | None = None
    """Close the connection (no [DONE]) after this many chunks."""
    error_event_after_chunks: int | None = None
    """Send an in-band `{"error": ...}` event after this many chunks."""
    error_message: str = "The model crashed mid-stream."
    """The message of that in-band error event."""
    garbage_sse_after_chunks: int | None = None
    gate: threading.Event | None = None
    """Wait for it (at most `gate_wait_s`) before sending the last content chunk."""
    gate_wait_s: float = 10.0
    stall_before_headers: bool = False
    """Never answer (until the gateway gives up or the test ends): an upstream too slow to start."""
    stall_after_headers: bool = False
    """A buffered answer: send the headers and half the JSON body, then nothing more."""
    stall_after_chunks: int | None = None
    """A stream: send this many chunks, then nothing more (no [DONE], the connection kept open)."""
    end_after_chunks: int | None = None
    """A stream: send this many chunks, then end it cleanly, without usage or [DONE]."""
    cached_tokens: int = 0
    """Report this many of the prompt's tokens as read from the prompt cache."""
    reasoning_tokens: int = 0
    """Report this many more completion tokens, spent on reasoning (as o-series models do)."""
    every_tool: bool = False
    """Call every offered tool at once (parallel tool calls), not only the first."""


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    header_list: list[tuple[str, str]] = field(default_factory=list)
    """Every header line as sent, repeats included."""


class FakeOpenAI(HTTPFake[Script, Recorded]):
    backend = {"backend": "openai"}
    path_prefix = "/v1"

    def __init__(self) -> None:
        super().__init__([Route("/v1/chat/completions", self._chat, methods=["POST"])])
        self.last_chunk_sent_at: float | None = None
        self.gate_timed_out = False

    # ---- test-facing --------------------------------------------------------------------------

    def reset(self) -> None:
        super().reset()
        self.last_chunk_sent_at = None
        self.gate_timed_out = False

    # ---- the server ---------------------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = None
        header_list = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        self.requests.append(Recorded(request.url.path, dict(request.headers), body, header_list))
        script = self.scripts.popleft() if self.scripts else Script()
        if script.delay_s:
            await asyncio.sleep(script.delay_s)
        if script.stall_before_headers:
            await self.stall.wait()
            return JSONResponse({"error": {"message": "released at the end of the test"}}, status_code=503)
        if script.body is not None or script.status != 200:
            content = script.body if script.body is not None else {"error": {"message": "scripted"}}
            if isinstance(content, bytes):
                return Response(content, status_code=script.status, headers=script.headers)
            return JSONResponse(content, status_code=script.status, headers=script.headers)
        if not isinstance(body, dict):
            return JSONResponse({"error": {"message": "bad json"}}, status_code=400)
        answer = _think(body, every_tool=script.every_tool)
        if body.get("stream"):
            return StreamingResponse(
                self._sse(body, answer, script), media_type="text/event-stream", headers=script.headers
            )
        if script.stall_after_headers:
            whole = json.dumps(_completion(body, answer)).encode()
            return StreamingResponse(self._stalled(whole[: len(whole) // 2]), media_type="application/json")
        return JSONResponse({**_completion(body, answer), "usage": _usage(answer, script)}, headers=script.headers)

    async def _stalled(self, start: bytes) -> AsyncIterator[bytes]:
        yield start
        await self.stall.wait()

    async def _sse(self, body: dict[str, Any], answer: Answer, script: Script) -> AsyncIterator[bytes]:
        chunks = _chunks(body, answer)
        usage_wanted = (body.get("stream_options") or {}).get("include_usage") and script.send_usage
        completed = released = False
        try:
            for n, chunk in enumerate(chunks):
                if n == script.stall_after_chunks:
                    await self.stall.wait()
                    released = True
                    return
                if n == script.end_after_chunks:
                    return
                if n == script.drop_after_chunks:
                    raise ConnectionAbortedError("scripted drop")
                if n == script.error_event_after_chunks:
                    yield _event({"error": {"message": script.error_message, "type": "server_error"}})
                    return
                if n == script.garbage_sse_after_chunks:
                    yield b"data: {this is not json\n\n"
                    return
                at_gate = script.gate is not None and n == len(chunks) - 2
                if at_gate and not await asyncio.to_thread(script.gate.wait, script.gate_wait_s):
                    self.gate_timed_out = True
                if n and script.chunk_delay_s:
                    await asyncio.sleep(script.chunk_delay_s)
                yield _event(chunk)
                self.last_chunk_sent_at = time.monotonic()
            if script.end_after_chunks is not None:
                return
            if usage_wanted:
                yield _event({**_envelope(body), "choices": [], "usage": _usage(answer, script)})
            yield b"data: [DONE]\n\n"
            completed = True
        finally:
            if completed:
                self.stream_completed.set()
            elif not released:
                self.stream_aborted.set()


def _think(body: dict[str, Any], every_tool: bool = False) -> Answer:
    messages = body.get("messages") or []
    texts = [_text(m.get("content")) for m in messages]
    tools = [t["function"]["name"] for t in body.get("tools") or []]
    choice = body.get("tool_choice")
    stop = body.get("stop")
    return think(
        " ".join(texts),
        last_role=messages[-1].get("role", "user") if messages else "user",
        last_text=texts[-1] if texts else "",
        tools=tools,
        forced_tool=choice["function"]["name"] if isinstance(choice, dict) else None,
        tool_choice_none=choice == "none",
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        stops=[stop] if isinstance(stop, str) else list(stop or []),
        every_tool=every_tool,
    )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _envelope(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": body.get("model"),
        "system_fingerprint": "fp_fake",
    }


def _usage(answer: Answer, script: Script | None = None) -> dict[str, Any]:
    script = script or Script()
    completion = answer.completion_tokens + script.reasoning_tokens
    usage: dict[str, Any] = {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": answer.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": min(script.cached_tokens, answer.prompt_tokens)},
    }
    if script.reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": script.reasoning_tokens}
    return usage


def _tool_calls(answer: Answer) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": arguments_json(c)}}
        for c in answer.tool_calls
    ]


def _completion(body: dict[str, Any], answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None, "refusal": None}
    if answer.tool_calls:
        message["tool_calls"] = _tool_calls(answer)
    return {
        **_envelope(body),
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish}],
        "usage": _usage(answer),
    }


def _chunks(body: dict[str, Any], answer: Answer) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**_envelope(body), "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": piece}) for piece in answer.pieces]
    for i, call in enumerate(answer.tool_calls):
        head = {
            "index": i,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        out.append(chunk({"tool_calls": [head]}))
        arguments = arguments_json(call)
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
    out.append(chunk({}, answer.finish))
    return out


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()
