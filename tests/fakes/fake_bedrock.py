"""A Bedrock runtime server on loopback, for tests, reached by the real boto3 client via `endpoint_url`:
`POST /model/{modelId}/converse` (JSON) and `POST /model/{modelId}/converse-stream`
(`application/vnd.amazon.eventstream` frames); `POST /model/{modelId}/invoke` and
`.../invoke-with-response-stream` with Anthropic's Messages body (answered as the fake Anthropic server
answers, each stream event base64 JSON in a `chunk` frame); `POST /model/{modelId}/count-tokens`.
Errors come as HTTP error JSON with `x-amzn-ErrorType` before the first byte, or as
`:message-type: exception` frames after it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import eventstream, fake_anthropic
from .model import Answer, think
from .server import ScriptedFake

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


@dataclass
class Script:
    """How to answer one request (then it is used up)."""

    status: int = 200
    error_type: str = "InternalServerException"
    message: str = "scripted failure"
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    exception_after_events: int | None = None
    exception_type: str = "modelStreamErrorException"
    end_after_events: int | None = None
    """End the stream cleanly but early (no messageStop) after this many events."""
    stop_reason: str | None = None
    send_metadata: bool = True
    gate: threading.Event | None = None
    """Wait for it (at most `gate_wait_s`) before sending the last content event."""
    gate_wait_s: float = 10.0
    stall_before_headers: bool = False
    """Never answer (until the gateway gives up or the test ends): a model too slow to start."""
    stall_after_events: int | None = None
    """A stream: send this many events, then nothing more (the connection kept open)."""
    cache_read_tokens: int = 0
    """Report this many input tokens as read from the prompt cache (`cacheReadInputTokens`)."""
    cache_write_tokens: int = 0
    """Report this many input tokens as written to the prompt cache (`cacheWriteInputTokens`)."""


@dataclass
class Recorded:
    path: str
    model_id: str
    headers: dict[str, str]
    body: Any
    images: list[bytes] = field(default_factory=list)


class FakeBedrock(ScriptedFake[Script, Recorded]):
    AWS_ENV = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }

    def __init__(self) -> None:
        super().__init__(
            [
                Route("/model/{model_id:path}/converse", self._converse, methods=["POST"]),
                Route("/model/{model_id:path}/converse-stream", self._converse_stream, methods=["POST"]),
                Route("/model/{model_id:path}/invoke", self._invoke, methods=["POST"]),
                Route("/model/{model_id:path}/invoke-with-response-stream", self._invoke_stream, methods=["POST"]),
                Route("/model/{model_id:path}/count-tokens", self._count_tokens, methods=["POST"]),
            ]
        )
        self.gate_timed_out = False

    @property
    def url(self) -> str:
        return self._server.url

    def reset(self) -> None:
        super().reset()
        self.gate_timed_out = False

    def client(self, service: str = "bedrock-runtime", region: str | None = None) -> Any:
        """A real boto3 client pointed at this server (an `aws_client_factory` for `BackendDeps`)."""
        import boto3

        return boto3.session.Session().client(service, region_name=region or "us-east-1", endpoint_url=self.url)

    # ---- the server ---------------------------------------------------------------------------

    async def _begin(self, request: Request) -> tuple[dict[str, Any], Script, Response | None]:
        body = json.loads(await request.body())
        images = [
            base64.b64decode(block["image"]["source"]["bytes"])
            for message in body.get("messages", [])
            for block in message.get("content", [])
            if "image" in block
        ]
        model_id = request.path_params["model_id"]
        self.requests.append(Recorded(request.url.path, model_id, dict(request.headers), body, images))
        script = self.scripts.popleft() if self.scripts else Script()
        if script.delay_s:
            await asyncio.sleep(script.delay_s)
        if script.stall_before_headers:
            await self.stall.wait()
            return body, script, JSONResponse({"message": "released at the end of the test"}, status_code=503)
        if script.status != 200:
            error = JSONResponse(
                {"message": script.message},
                status_code=script.status,
                headers={"x-amzn-ErrorType": f"{script.error_type}:http://internal.amazon.com/coral/"},
            )
            return body, script, error
        return body, script, None

    async def _converse(self, request: Request) -> Response:
        body, script, error = await self._begin(request)
        if error is not None:
            return error
        answer = _think(body)
        content: list[dict[str, Any]] = [{"text": answer.text}] if answer.text else []
        content += [{"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.arguments}} for c in answer.tool_calls]
        return JSONResponse(
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": script.stop_reason or STOP_REASONS[answer.finish],
                "usage": _usage(answer, script),
                "metrics": {"latencyMs": 12},
            }
        )

    async def _converse_stream(self, request: Request) -> Response:
        body, script, error = await self._begin(request)
        if error is not None:
            return error
        events = _events(_think(body), script)
        return StreamingResponse(self._frames(events, script), media_type="application/vnd.amazon.eventstream")

    async def _frames(self, events: list[tuple[str, dict[str, Any]]], script: Script) -> AsyncIterator[bytes]:
        completed = released = False
        try:
            for n, (kind, payload) in enumerate(events):
                if n == script.stall_after_events:
                    await self.stall.wait()
                    released = True
                    return
                if n == script.end_after_events:
                    return
                if n == script.exception_after_events:
                    yield eventstream.exception(script.exception_type, script.message)
                    return
                at_gate = script.gate is not None and n == len(events) - 4
                if at_gate and not await asyncio.to_thread(script.gate.wait, script.gate_wait_s):
                    self.gate_timed_out = True
                if n and script.chunk_delay_s:
                    await asyncio.sleep(script.chunk_delay_s)
                yield eventstream.event(kind, payload)
            completed = True
        finally:
            if not released:
                (self.stream_completed if completed else self.stream_aborted).set()

    # ---- InvokeModel with Anthropic's body ----------------------------------------------------

    async def _invoke(self, request: Request) -> Response:
        body, script, error = await self._begin(request)
        if error is not None:
            return error
        message = fake_anthropic.message_body(body, _anthropic_script(script))
        return JSONResponse({**message, "model": request.path_params["model_id"]})

    async def _invoke_stream(self, request: Request) -> Response:
        body, script, error = await self._begin(request)
        if error is not None:
            return error
        events = [
            (
                "chunk",
                {"bytes": base64.b64encode(json.dumps(e).encode()).decode()},
            )
            for e in fake_anthropic.stream_events(body, _anthropic_script(script))
        ]
        return StreamingResponse(self._frames(events, script), media_type="application/vnd.amazon.eventstream")

    async def _count_tokens(self, request: Request) -> Response:
        body, _, error = await self._begin(request)
        if error is not None:
            return error
        given = body.get("input") or {}
        if "invokeModel" in given:
            counted = json.loads(base64.b64decode(given["invokeModel"]["body"]))
            return JSONResponse({"inputTokens": fake_anthropic.think_of(counted).prompt_tokens})
        return JSONResponse({"inputTokens": _think(given.get("converse") or {}).prompt_tokens})


def _anthropic_script(script: Script) -> fake_anthropic.Script:
    return fake_anthropic.Script(
        cache_read_tokens=script.cache_read_tokens, cache_write_tokens=script.cache_write_tokens
    )


def _think(body: dict[str, Any]) -> Answer:
    messages = body.get("messages", [])
    texts: list[str] = []
    for message in messages:
        for block in message.get("content", []):
            if "text" in block:
                texts.append(block["text"])
            elif "toolResult" in block:
                texts.append(" ".join(c.get("text", "") for c in block["toolResult"]["content"]))
    texts += [s.get("text", "") for s in body.get("system", [])]
    last = messages[-1]["content"][-1] if messages and messages[-1].get("content") else {}
    last_role = "tool" if "toolResult" in last else "user"
    last_text = (
        " ".join(c.get("text", "") for c in last["toolResult"]["content"])
        if "toolResult" in last
        else last.get("text", "")
    )
    tool_config = body.get("toolConfig") or {}
    tools = [t["toolSpec"]["name"] for t in tool_config.get("tools", [])]
    choice = tool_config.get("toolChoice") or {}
    config = body.get("inferenceConfig") or {}
    return think(
        " ".join(texts),
        last_role=last_role,
        last_text=last_text,
        tools=tools,
        forced_tool=choice["tool"]["name"] if "tool" in choice else (tools[0] if "any" in choice else None),
        tool_choice_none=False,
        max_tokens=config.get("maxTokens"),
        stops=config.get("stopSequences", []),
    )


def _usage(answer: Answer, script: Script | None = None) -> dict[str, int]:
    """Bedrock's convention: `inputTokens` leaves out the cache reads and writes."""
    script = script or Script()
    cached = script.cache_read_tokens + script.cache_write_tokens
    usage = {
        "inputTokens": answer.prompt_tokens,
        "outputTokens": answer.completion_tokens,
        "totalTokens": answer.prompt_tokens + cached + answer.completion_tokens,
    }
    if script.cache_read_tokens:
        usage["cacheReadInputTokens"] = script.cache_read_tokens
    if script.cache_write_tokens:
        usage["cacheWriteInputTokens"] = script.cache_write_tokens
    return usage


def _events(answer: Answer, script: Script) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    block = 0
    if answer.pieces:
        events += [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}}) for p in answer.pieces]
        events.append(("contentBlockStop", {"contentBlockIndex": 0}))
        block = 1
    for offset, call in enumerate(answer.tool_calls):
        index = block + offset
        start = {"toolUse": {"toolUseId": call.id, "name": call.name}}
        events.append(("contentBlockStart", {"contentBlockIndex": index, "start": start}))
        arguments = json.dumps(call.arguments)
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            events.append(("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": part}}}))
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
    events.append(("messageStop", {"stopReason": script.stop_reason or STOP_REASONS[answer.finish]}))
    if script.send_metadata:
        events.append(("metadata", {"usage": _usage(answer, script), "metrics": {"latencyMs": 12}}))
    return events
