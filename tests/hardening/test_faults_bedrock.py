"""Bedrock faults seen from the gateway: the bedrock backend (real boto3) against the fake Bedrock
runtime, through the app. Errors before the first byte keep the envelope and their statuses
(throttling 429, validation 400, access denied and failures 502, model timeout 504); errors after
it are in-band; a stream with no usage is estimated; a client that leaves closes the stream; and
each call leaves exactly one usage event."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from chatgw.backends.base import BackendDeps
from chatgw.compose import Container, build
from tests.conftest import add_key, eventually
from tests.fakes.fake_bedrock import FakeBedrock, Script
from tests.hardening.asgi import CHAT, Reply, assert_envelope, call
from tests.support.loops import close_loop

USER = [{"role": "user", "content": "Say something."}]
MODEL = {"backend": "bedrock", "model_id": "anthropic.claude-fake-v1:0", "region": "us-east-1"}


@pytest.fixture
def bedrock_gateway(
    make_container: Callable[..., Container], fake_bedrock: FakeBedrock
) -> Iterator[Callable[..., tuple[Container, str, Callable[..., Reply]]]]:
    loop = asyncio.new_event_loop()
    made: list[BackendDeps] = []

    def make(**options: Any) -> tuple[Container, str, Callable[..., Reply]]:
        base = make_container()
        deps = BackendDeps(aws_client_factory=fake_bedrock.client)
        made.append(deps)
        gw = build(
            replace(base.settings, models=json.dumps({"claude": {**MODEL, **options}})), store=base.store, deps=deps
        )
        key = add_key(base)

        def chat(stream: bool = False, leave: int | None = None) -> Reply:
            body = json.dumps({"model": "claude", "messages": USER, "stream": stream}).encode()
            headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
            return loop.run_until_complete(call(gw.app, "POST", CHAT, headers, body, leave_after_chunks=leave))

        return gw, key, chat

    try:
        yield make
    finally:
        for deps in made:
            loop.run_until_complete(deps.aclose())
        close_loop(loop)


def events_of(gw: Container, key: str) -> list[Any]:
    return list(eventually(lambda: gw.store.usage_events(key.split("_")[1])))


THROTTLED = Script(status=429, error_type="ThrottlingException", message="Too many requests")
BEFORE = [
    ("throttled", [THROTTLED] * 3, 429, "upstream_rate_limited"),
    ("validation", [Script(status=400, error_type="ValidationException", message="bad")], 400, "upstream_rejected"),
    ("access-denied", [Script(status=403, error_type="AccessDeniedException")], 502, "upstream_error"),
    ("model-timeout", [Script(status=408, error_type="ModelTimeoutException")], 504, "upstream_timeout"),
    ("internal", [Script(status=500, error_type="InternalServerException")] * 3, 502, "upstream_error"),
]


@pytest.mark.parametrize(("name", "scripts", "status", "code"), BEFORE, ids=[c[0] for c in BEFORE])
@pytest.mark.parametrize("stream", [False, True])
def test_bedrock_failing_before_the_first_byte(
    bedrock_gateway: Callable[..., Any],
    fake_bedrock: FakeBedrock,
    name: str,
    scripts: list[Script],
    status: int,
    code: str,
    stream: bool,
) -> None:
    gw, key, chat = bedrock_gateway()
    fake_bedrock.then(*scripts)
    reply = chat(stream)
    assert_envelope(reply, allowed_5xx=(502, 504))
    assert reply.status == status and reply.json()["error"]["code"] == code, reply.body
    assert "arn:aws" not in reply.body.decode()
    (event,) = events_of(gw, key)
    assert (event.request_id, event.status, event.streamed) == (reply.request_id, "error", stream)


@pytest.mark.parametrize(
    "script",
    [Script(exception_after_events=3, message="boom"), Script(end_after_events=3)],
    ids=["exception-mid-stream", "ends-without-messageStop"],
)
def test_bedrock_failing_after_the_first_byte(
    bedrock_gateway: Callable[..., Any], fake_bedrock: FakeBedrock, script: Script
) -> None:
    gw, key, chat = bedrock_gateway()
    fake_bedrock.then(script)
    reply = chat(True)
    assert reply.status == 200
    events = [e for e in reply.body.decode().split("\n\n") if e]
    assert "data: [DONE]" not in events and set(json.loads(events[-1].removeprefix("data: "))) == {"error"}
    (event,) = events_of(gw, key)
    assert event.status == "error" and event.completion_tokens > 0 and event.estimated
    assert len(fake_bedrock.requests) == 1


def test_bedrock_stream_without_usage_is_estimated(
    bedrock_gateway: Callable[..., Any], fake_bedrock: FakeBedrock
) -> None:
    gw, key, chat = bedrock_gateway()
    fake_bedrock.then(Script(send_metadata=False))
    reply = chat(True)
    assert reply.status == 200 and reply.body.decode().rstrip().endswith("data: [DONE]")
    (event,) = events_of(gw, key)
    assert event.status == "ok" and event.estimated and event.completion_tokens > 0


def test_bedrock_client_leaving_leaves_the_stream_read_for_its_usage(
    bedrock_gateway: Callable[..., Any], fake_bedrock: FakeBedrock
) -> None:
    gw, key, chat = bedrock_gateway()
    fake_bedrock.then(Script(chunk_delay_s=0.05))
    reply = chat(True, leave=2)
    assert reply.status == 200
    # read to its end after the client left (CHATGW_DRAIN_SECONDS), for Bedrock's own usage count
    assert fake_bedrock.stream_completed.wait(10), "the Bedrock stream was not read to its end"
    (event,) = events_of(gw, key)
    assert event.status == "client_closed" and event.streamed and not event.estimated
