"""The same invariants through the buffered Lambda entry point (Mangum over the app), for API
Gateway REST v1, HTTP API v2 and function-URL events with mutated paths, methods, headers
(multi-value ones disagreeing), query strings and bodies (base64 or not): never a 5xx, always
the envelope for errors, always one `x-request-id`."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as event_note
from hypothesis import strategies as st
from mangum import Mangum

from chatgw.aws_lambda.context import LambdaContext
from chatgw.cli.invoke import load_event
from tests.support.asgi import ENVELOPE_KEYS
from tests.support.fuzz import Fuzzed
from tests.support.loops import close_loop

EVENTS = Path(__file__).resolve().parents[2] / "events"
SHAPES = ["rest-v1-chat.json", "http-v2-chat.json", "function-url-chat.json"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

paths = st.sampled_from(
    [
        "/v2/llms/chat/completions", "/v1/chat/completions", "/v2/llms", "/v1/models", "/v1/models/echo",
        "/health", "//v2/llms/chat/completions", "/v2/llms/chat/completions/", "/v2/llms/../health",
        "/v1/models/%2e%2e", "/v1/models/caf\u00e9", "/", "", "/v2/llms/chat/completions%00",
    ]
)  # fmt: skip
NO_ROUTE = {"//v2/llms/chat/completions", "/v2/llms/chat/completions/", "/v2/llms/chat/completions%00"}
"""(`/` is a route: Claude Code probes the base URL with `HEAD /`.)"""
methods = st.just("POST") | st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"])
header_values = st.text(max_size=40) | st.sampled_from(
    ["Bearer ", "Bearer cgw_x_y", "Basic Zm9v", "\u043a\u043b\u044e\u0447"]
)
bodies = (
    st.none()
    | st.text(max_size=200)
    | st.sampled_from(['{"model": "echo", "messages": [{"role": "user", "content": "hi"}]}', "[" * 5000, "{}", ""])
)


@pytest.fixture
def lambda_loop() -> Iterator[None]:
    """One event loop for Mangum, as a Lambda container has, closed at the end (Mangum would make
    its own and never close it)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    close_loop(loop)


def set_path(event: dict[str, Any], path: str, method: str) -> None:
    if "httpMethod" in event:
        event["path"] = event["requestContext"]["path"] = path
        event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    else:
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["requestContext"]["http"]["method"] = method


def set_header(event: dict[str, Any], name: str, values: list[str]) -> None:
    event["headers"][name] = values[-1] if "multiValueHeaders" in event else ",".join(values)
    if "multiValueHeaders" in event:
        event["multiValueHeaders"][name] = values


@FUZZ
@given(
    shape=st.sampled_from(SHAPES),
    path=st.just("/v2/llms/chat/completions") | paths,
    method=methods,
    extra=st.lists(
        st.tuples(st.sampled_from(["x-api-key", "authorization", "content-type", "x-other"]), header_values), max_size=3
    ),
    body=bodies,
    as_base64=st.booleans(),
    query=st.booleans(),
)
def test_lambda_events(
    fuzzed: Fuzzed,
    lambda_loop: None,
    shape: str,
    path: str,
    method: str,
    extra: list[tuple[str, str]],
    body: str | None,
    as_base64: bool,
    query: bool,
) -> None:
    handler = Mangum(fuzzed.app, lifespan="off")
    event = load_event(str(EVENTS / shape), fuzzed.key)
    set_path(event, path, method)
    for name, value in extra:
        set_header(event, name, [value, fuzzed.key])
    if body is not None:
        event["body"] = base64.b64encode(body.encode()).decode() if as_base64 else body
        event["isBase64Encoded"] = as_base64
    if query:
        if "httpMethod" in event:
            event["queryStringParameters"] = {"api_key": fuzzed.key}
            event["multiValueQueryStringParameters"] = {"api_key": [fuzzed.key]}
        else:
            event["rawQueryString"] = f"api_key={fuzzed.key}&x=%ff"
    response = handler(event, LambdaContext.local())
    status = response["statusCode"]
    event_note(f"status {status}")
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    multi = {k.lower(): v for k, v in (response.get("multiValueHeaders") or {}).items()}
    assert status < 500, response
    assert "x-request-id" in headers or len(multi.get("x-request-id", [])) == 1, response
    text = base64.b64decode(response["body"]).decode() if response.get("isBase64Encoded") else response["body"]
    assert fuzzed.key not in text and "Traceback" not in text
    if status >= 400:
        envelope = json.loads(text)
        assert set(envelope) == ENVELOPE_KEYS
    if path in NO_ROUTE:
        assert status == 404, response  # whatever the method, headers and body: there is no such route
