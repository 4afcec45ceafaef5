"""Odd events through the streaming Lambda runtime (the Runtime API loop, against the in-process
fake Runtime API on loopback) in front of the real gateway: each invocation succeeds at the Lambda
level, its prelude carries a status below 500 and an `x-request-id`, and every error body is the
envelope. (A stream Lambda drops is metered `client_closed`: tests/integration/test_streaming_gateway.py.)"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

from chatgw.aws_lambda.fake_runtime_api import FakeRuntimeAPI
from chatgw.aws_lambda.stream_runtime import serve
from chatgw.cli.invoke import load_event
from tests.support.asgi import ENVELOPE_KEYS
from tests.support.fuzz import BODY_LIMIT, Fuzzed

EVENTS = Path(__file__).resolve().parents[2] / "events"
VALID = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "hello there"}]})


def mutate(event: dict[str, Any], path: str | None = None, body: str | None = None, **headers: str) -> dict[str, Any]:
    if path is not None:
        if "httpMethod" in event:
            event["path"] = event["requestContext"]["path"] = path
        else:
            event["rawPath"] = event["requestContext"]["http"]["path"] = path
    if body is not None:
        event["body"], event["isBase64Encoded"] = body, False
    for name, value in headers.items():
        event["headers"][name.replace("_", "-")] = value
        if "multiValueHeaders" in event:
            event["multiValueHeaders"][name.replace("_", "-")] = [value]
    return event


CASES: list[tuple[str, str, dict[str, Any], int]] = [
    ("rest-v1-chat.json", "ok", {}, 200),
    ("http-v2-chat.json", "deep-nesting", {"body": "[" * 20_000}, 400),
    ("function-url-chat.json", "over-the-limit", {"body": "x" * (BODY_LIMIT + 10)}, 413),
    ("rest-v1-chat.json", "not-json", {"body": "\u00ff\u00fe garbage"}, 400),
    ("http-v2-chat.json", "empty-body", {"body": ""}, 400),
    ("rest-v1-chat.json", "double-slash", {"path": "//v2/llms/chat/completions"}, 404),
    ("http-v2-chat.json", "dot-dot", {"path": "/v2/llms/../llms/chat/completions"}, 404),
    ("function-url-chat.json", "trailing-slash", {"path": "/v2/llms/chat/completions/"}, 404),
    ("rest-v1-chat.json", "keys-disagree", {"x_api_key": "cgw_aaaaaaaa_" + "A" * 40}, 401),
    ("http-v2-chat.json", "non-ascii-key", {"authorization": "Bearer \u043a\u043b\u044e\u0447"}, 401),
    ("rest-v1-missing-key.json", "missing-key", {}, 401),
    ("rest-v1-malformed-body.json", "malformed", {}, 400),
    ("function-url-chat-stream.json", "stream", {}, 200),
    ("rest-v1-chat-stream.json", "stream-unknown-field", {"body": json.dumps({**json.loads(VALID), "x": 1})}, 400),
]  # fmt: skip


def test_odd_events_through_the_streaming_runtime(fuzzed: Fuzzed) -> None:
    with FakeRuntimeAPI() as fake:
        invocations = [
            (name, expected, fake.push(mutate(load_event(str(EVENTS / shape), fuzzed.key), **changes)))
            for shape, name, changes, expected in CASES
        ]
        code = asyncio.run(serve(fake.address, lambda: fuzzed.container.app, max_invocations=len(CASES)))
        assert code == 0
        for name, expected, invocation in invocations:
            assert invocation.wait(30) and invocation.succeeded, (name, invocation.error)
            prelude = invocation.prelude
            assert prelude is not None, name
            status, headers = prelude["statusCode"], {k.lower(): v for k, v in prelude["headers"].items()}
            assert status == expected, (name, invocation.body[:300])
            assert headers.get("x-request-id"), (name, headers)
            assert fuzzed.key.encode() not in invocation.body
            if status >= 400:
                assert set(json.loads(invocation.body)) == ENVELOPE_KEYS, name
            if name == "stream":
                assert invocation.body.endswith(b"data: [DONE]\n\n")


def test_base64_bodies_through_the_runtime(fuzzed: Fuzzed) -> None:
    event = load_event(str(EVENTS / "http-v2-chat.json"), fuzzed.key)
    event["body"], event["isBase64Encoded"] = base64.b64encode(VALID.encode()).decode(), True
    with FakeRuntimeAPI() as fake:
        invocation = fake.push(event)
        assert asyncio.run(serve(fake.address, lambda: fuzzed.container.app, max_invocations=1)) == 0
        assert invocation.wait(30) and invocation.succeeded
    assert invocation.prelude is not None and invocation.prelude["statusCode"] == 200
