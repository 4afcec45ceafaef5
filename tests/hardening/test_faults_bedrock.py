"""Bedrock faults seen from the gateway: the bedrock backend (real boto3) against the fake Bedrock
runtime, through the app. Errors before the first byte keep the envelope and their statuses
(throttling 429, validation 400, access denied and failures 502, model timeout 504); errors after
it are in-band; a stream with no usage is estimated; a client that leaves closes the stream; and
each call leaves exactly one usage event."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from chatgw.compose import Container
from tests.fakes.fake_bedrock import FakeBedrock, Script
from tests.support.asgi import assert_envelope
from tests.support.bedrock_gateway import bedrock_gateway as bedrock_gateway
from tests.support.polling import eventually


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
