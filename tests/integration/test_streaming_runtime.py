"""The streaming runtime against a fake Runtime API on loopback, with small ASGI apps of our own."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mangum.types import ASGI, Receive, Scope, Send
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chatgw.aws_lambda.fake_runtime_api import PRELUDE_LIMIT, FakeRuntimeAPI
from chatgw.aws_lambda.runtime_api import PRELUDE_DELIMITER, STREAM_CONTENT_TYPE
from chatgw.aws_lambda.stream_runtime import run_local
from tests.support.lambda_events import RuntimeThread, function_url_event, http_v2_event, rest_v1_event


class ProbeApp:
    """A Starlette app plus two raw ASGI failure routes that Starlette's middleware would mask."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.stopped = threading.Event()
        self.counter = itertools.count(1)
        self.loops: list[int] = []
        self.builds = 0
        self.starlette = Starlette(
            routes=[
                Route("/json", self.json, methods=["GET", "POST"]),
                Route("/echo", self.echo, methods=["POST"]),
                Route("/sse", self.sse),
                Route("/hang", self.hang),
                Route("/endless", self.endless),
            ]
        )

    def factory(self) -> ASGI:
        self.builds += 1
        return self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/boom-before":
            raise RuntimeError("failed before the first byte")
        if scope["path"] == "/boom-after":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise RuntimeError("failed after the first byte")
        if scope["path"] == "/silent":
            return
        if scope["path"] == "/never-starts":  # never sends a byte: only the deadline ends it
            await asyncio.Event().wait()
        if scope["path"] == "/plain-hang":  # starts a non-SSE body, then never ends it
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            await asyncio.Event().wait()
        await self.starlette(scope, receive, send)

    async def json(self, request: Request) -> Response:
        context = request.scope["aws.context"]
        self.loops.append(id(asyncio.get_running_loop()))
        response = JSONResponse(
            {
                "count": next(self.counter),
                "request_id": context.aws_request_id,
                "remaining_ms": context.get_remaining_time_in_millis(),
                "function_arn": context.invoked_function_arn,
                "trace": os.environ.get("_X_AMZN_TRACE_ID"),
                "event_path": request.scope["aws.event"].get("path") or request.scope["aws.event"].get("rawPath"),
                "method": request.method,
                "path": request.url.path,
                "x_api_key": request.headers.get("x-api-key"),
            },
            headers={"x-multi": "a"},
        )
        response.headers.append("x-multi", "b")
        response.set_cookie("one", "1")
        response.set_cookie("two", "2")
        return response

    async def echo(self, request: Request) -> Response:
        self.loops.append(id(asyncio.get_running_loop()))
        return Response(await request.body(), media_type="application/octet-stream")

    async def sse(self, request: Request) -> Response:
        self.loops.append(id(asyncio.get_running_loop()))

        async def events() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            await asyncio.to_thread(self.gate.wait, 30)
            yield b"data: second\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def endless(self, request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            try:
                for i in range(10_000):
                    yield f"data: {i}\n\n".encode()
                    await asyncio.sleep(0.01)
            finally:
                self.stopped.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def hang(self, request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            await asyncio.sleep(3600)
            yield b"never"

        return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture
def app() -> ProbeApp:
    return ProbeApp()


@pytest.fixture
def fake() -> Any:
    with FakeRuntimeAPI() as runtime_api:
        yield runtime_api


def test_streams_with_the_documented_headers_prelude_and_delimiter(fake: FakeRuntimeAPI, app: ProbeApp) -> None:
    app.gate.set()
    invocation = fake.push(rest_v1_event("GET", "/json"))
    RuntimeThread(fake.address, app.factory).join()

    assert invocation.succeeded
    headers = invocation.response_headers
    assert headers["lambda-runtime-function-response-mode"] == "streaming"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == STREAM_CONTENT_TYPE
    assert headers["trailer"] == "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body"
    raw = b"".join(invocation.raw_chunks)
    assert 0 < raw.find(PRELUDE_DELIMITER) < PRELUDE_LIMIT
    assert invocation.prelude is not None
    assert invocation.prelude["statusCode"] == 200
    assert invocation.prelude["headers"]["content-type"] == "application/json"
    assert invocation.prelude["headers"]["x-multi"] == "a,b"
    assert sorted(c.split(";")[0] for c in invocation.prelude["cookies"]) == ["one=1", "two=2"]
    body = json.loads(invocation.body)
    assert body["request_id"] == invocation.request_id
    assert body["function_arn"] == invocation.function_arn
    assert body["path"] == "/json"


def test_each_chunk_reaches_lambda_before_the_stream_ends(fake: FakeRuntimeAPI, app: ProbeApp) -> None:
    invocation = fake.push(http_v2_event("GET", "/sse"))
    runtime = RuntimeThread(fake.address, app.factory)

    # The app is blocked on the gate after its first event: that event must already be at Lambda.
    assert invocation.wait_for_chunks(1)
    assert not invocation.finished.is_set()
    assert invocation.body == b"data: first\n\n"
    assert invocation.prelude is not None
    assert invocation.prelude["headers"]["content-type"].startswith("text/event-stream")

    app.gate.set()
    runtime.join()
    assert invocation.succeeded
    assert [chunk for _, chunk in invocation.body_chunks] == [
        b"data: first\n\n",
        b"data: second\n\n",
        b"data: [DONE]\n\n",
    ]


@pytest.mark.parametrize(
    "make_event",
    [rest_v1_event, http_v2_event, function_url_event],
    ids=["rest-v1", "http-v2", "function-url"],
)
def test_every_event_version_reaches_the_app(fake: FakeRuntimeAPI, app: ProbeApp, make_event: Any) -> None:
    invocation = fake.push(make_event("POST", "/json", {"hello": "world"}, headers={"x-api-key": "k"}))
    RuntimeThread(fake.address, app.factory).join()

    assert invocation.succeeded
    body = json.loads(invocation.body)
    assert (body["method"], body["path"], body["event_path"], body["x_api_key"]) == (
        "POST",
        "/json",
        "/json",
        "k",
    )


def test_base64_request_bodies_are_decoded(fake: FakeRuntimeAPI, app: ProbeApp) -> None:
    invocation = fake.push(http_v2_event("POST", "/echo", "héllo bytes", base64_body=True))
    RuntimeThread(fake.address, app.factory).join()
    assert invocation.body == "héllo bytes".encode()


def test_a_warm_container_serves_many_invocations_on_one_loop_with_one_build(
    fake: FakeRuntimeAPI, app: ProbeApp
) -> None:
    app.gate.set()
    invocations = [
        fake.push(rest_v1_event("GET", "/json")),
        fake.push(http_v2_event("GET", "/sse")),
        fake.push(function_url_event("POST", "/echo", "x")),
        fake.push(rest_v1_event("GET", "/json")),
    ]
    RuntimeThread(fake.address, app.factory, max_invocations=4).join()

    assert all(invocation.succeeded for invocation in invocations)
    assert app.builds == 1
    assert len(app.loops) == 4 and len(set(app.loops)) == 1
    assert json.loads(invocations[3].body)["count"] == 2  # state kept between invocations
    assert fake.next_calls == 4


def test_an_error_before_the_first_byte_goes_to_the_invocation_error(fake: FakeRuntimeAPI, app: ProbeApp) -> None:
    failed = fake.push(rest_v1_event("GET", "/boom-before"))
    silent = fake.push(rest_v1_event("GET", "/silent"))
    after = fake.push(rest_v1_event("GET", "/json"))
    app.gate.set()
    RuntimeThread(fake.address, app.factory, max_invocations=3).join()

    assert failed.error == {
        "errorMessage": "failed before the first byte",
        "errorType": "RuntimeError",
        "stackTrace": [],
    }
    assert failed.error_type_header == "RuntimeError"
    assert failed.prelude is None and failed.raw_chunks == []
    assert silent.error is not None and "without sending a response" in silent.error["errorMessage"]
    assert after.succeeded  # the container goes on


def test_an_error_after_the_first_byte_ends_the_stream_with_error_trailers(fake: FakeRuntimeAPI, app: ProbeApp) -> None:
    invocation = fake.push(http_v2_event("GET", "/boom-after"))
    RuntimeThread(fake.address, app.factory).join()

    assert invocation.error is None
    assert invocation.body == b"partial"
    assert invocation.stream_error == ("RuntimeError", "RuntimeError: failed after the first byte")


def test_an_unknown_event_shape_is_an_invocation_error(fake: FakeRuntimeAPI, app: ProbeApp) -> None:
    invocation = fake.push({"hello": "direct invoke"})
    RuntimeThread(fake.address, app.factory).join()
    assert invocation.error is not None and invocation.error["errorType"] == "UnsupportedEvent"


def test_an_event_that_cannot_be_read_is_an_invocation_error_and_the_container_goes_on(
    fake: FakeRuntimeAPI, app: ProbeApp
) -> None:
    broken = fake.push({"version": "2.0", "requestContext": {"http": {"method": "GET"}}})  # no path, no source
    after = fake.push(rest_v1_event("GET", "/json"))
    RuntimeThread(fake.address, app.factory, max_invocations=2).join()
    assert broken.error is not None and broken.error["errorType"] == "InvalidEvent"
    assert broken.error_type_header == "InvalidEvent" and broken.prelude is None
    assert after.succeeded


# The deadlines below are real (they are the point): counted from when the runtime takes the
# invocation; the app never answers, so nothing but the deadline can end it, however slow the machine.


def test_a_deadline_before_the_response_started_is_an_invocation_error(fake: FakeRuntimeAPI, app: ProbeApp) -> None:
    hung = fake.push(function_url_event("GET", "/never-starts"), deadline_in_s=1.0)
    after = fake.push(rest_v1_event("GET", "/json"))
    RuntimeThread(fake.address, app.factory, max_invocations=2).join(timeout=60)
    assert hung.error is not None and hung.error["errorType"] == "DeadlineExceeded"
    assert "deadline" in hung.error["errorMessage"] and hung.prelude is None and hung.raw_chunks == []
    assert after.succeeded


def test_a_deadline_on_a_non_sse_response_ends_it_with_error_trailers_only(fake: FakeRuntimeAPI, app: ProbeApp) -> None:
    hung = fake.push(http_v2_event("GET", "/plain-hang"), deadline_in_s=1.0)
    RuntimeThread(fake.address, app.factory).join(timeout=60)
    assert hung.prelude is not None and hung.prelude["statusCode"] == 200
    assert hung.body == b"partial"  # no `data:` error frame written into a body that is not SSE
    assert hung.stream_error is not None and hung.stream_error[0] == "DeadlineExceeded"


def test_main_needs_the_runtime_api_and_fails_when_it_cannot_reach_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CHATGW_"))}
    command = [sys.executable, "-m", "chatgw.aws_lambda.stream_runtime"]
    outside = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert outside.returncode == 2 and "AWS_LAMBDA_RUNTIME_API is not set" in outside.stderr
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    factory = {"CHATGW_ASGI_FACTORY": "tests.support.lambda_events:probe_app"}
    unreachable = subprocess.run(
        command, env={**env, **factory, "AWS_LAMBDA_RUNTIME_API": closed}, capture_output=True, text=True, timeout=60
    )
    assert unreachable.returncode == 1 and "Runtime API failure" in unreachable.stderr


def test_an_app_that_cannot_be_built_reports_an_init_error(fake: FakeRuntimeAPI) -> None:
    def broken() -> ASGI:
        raise ValueError("CHATGW_MODELS is not valid JSON")

    runtime = RuntimeThread(fake.address, broken)
    runtime.join()
    assert runtime.exit_code == 1
    assert fake.init_error is not None
    assert fake.init_error["errorMessage"] == "ValueError: CHATGW_MODELS is not valid JSON"
    assert fake.init_error_type == "Runtime.InitError"
    assert fake.next_calls == 0


def test_the_app_gets_the_deadline_and_the_trace_id(fake: FakeRuntimeAPI, app: ProbeApp) -> None:
    deadline_ms = int((time.time() + 120) * 1000)
    invocation = fake.push(rest_v1_event("GET", "/json"), deadline_ms=deadline_ms, trace_id="Root=1-abc;Sampled=1")
    RuntimeThread(fake.address, app.factory).join()

    body = json.loads(invocation.body)
    assert 0 < body["remaining_ms"] <= 120_000
    assert body["trace"] == "Root=1-abc;Sampled=1"


def test_the_runtime_does_not_hang_past_the_deadline(fake: FakeRuntimeAPI, app: ProbeApp) -> None:
    # A real deadline is the point here. It is counted from when the runtime takes the invocation,
    # so a slow start of the test thread does not eat it; the app's first event (a few ms) then has
    # 1.5 s (the 2 s less the runtime's 0.5 s margin) to go out: a margin of 100x or more.
    hung = fake.push(function_url_event("GET", "/hang"), deadline_in_s=2.0)
    after = fake.push(rest_v1_event("GET", "/json"))
    app.gate.set()
    RuntimeThread(fake.address, app.factory, max_invocations=2).join(timeout=60)

    assert hung.body.startswith(b"data: first\n\n")
    last_event = hung.body.split(b"\n\n")[-2]
    assert json.loads(last_event.removeprefix(b"data: "))["error"]["code"] == "upstream_timeout"
    assert hung.stream_error is not None and hung.stream_error[0] == "DeadlineExceeded"
    assert after.succeeded


def test_run_local_prints_the_prelude_the_timed_chunks_and_the_end(app: ProbeApp) -> None:
    app.gate.set()
    lines: list[str] = []
    code = run_local(http_v2_event("GET", "/sse"), lines.append, app.factory)
    assert all(line.endswith("\n") for line in lines)
    lines = [line.rstrip("\n") for line in lines]

    assert code == 0
    assert lines[0].startswith("prelude (+") and '"statusCode": 200' in lines[0]
    assert [line.split("ms", 1)[1].strip() for line in lines[1:4]] == [
        repr("data: first\n\n"),
        repr("data: second\n\n"),
        repr("data: [DONE]\n\n"),
    ]
    assert lines[-1] == "end: complete, 3 chunks, 41 bytes"


def test_run_local_exits_non_zero_on_a_function_error(app: ProbeApp) -> None:
    lines: list[str] = []
    assert run_local(rest_v1_event("GET", "/boom-before"), lines.append, app.factory) == 1
    assert lines[-1].startswith("error (/invocation/")


def test_run_local_reports_an_init_error() -> None:
    def broken() -> ASGI:
        raise ValueError("bad catalog")

    lines: list[str] = []
    assert run_local(rest_v1_event("GET", "/json"), lines.append, broken) == 1
    assert lines == [
        'init error (/init/error): {"errorMessage": "ValueError: bad catalog", '
        '"errorType": "Runtime.InitError", "stackTrace": []}\n'
    ]


def test_when_lambda_drops_the_stream_the_app_sees_a_disconnect_and_the_container_goes_on(
    fake: FakeRuntimeAPI, app: ProbeApp
) -> None:
    dropped = fake.push(http_v2_event("GET", "/endless"))
    dropped.cut_after_chunks = 3
    after = fake.push(rest_v1_event("GET", "/json"))
    RuntimeThread(fake.address, app.factory, max_invocations=2).join(timeout=60)

    assert dropped.cut and not dropped.succeeded
    assert app.stopped.is_set()  # the app stopped streaming: it was told the client is gone
    assert after.succeeded
