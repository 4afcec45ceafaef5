"""The real chatgw app (echo model, SQLite store) through the streaming runtime: in-process against
the fake Runtime API, through `handler/bootstrap` as Lambda starts it, and via `chatgw invoke --stream`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatgw.access.keys import new_key
from chatgw.aws_lambda.fake_runtime_api import FakeInvocation, FakeRuntimeAPI
from chatgw.compose import Container
from chatgw.store.sqlite import SqliteStore
from tests.fakes.backends import ScriptedBackend, released_by
from tests.support.events import EXPECTED, stream_end
from tests.support.keys import add_key
from tests.support.lambda_events import RuntimeThread, function_url_event, http_v2_event, rest_v1_event
from tests.support.polling import eventually
from tests.support.tools import ROOT

CHAT = "/v2/llms/chat/completions"
QUESTION = "What is the capital of France?"


def chat(stream: bool, model: str = "echo", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": QUESTION}], "stream": stream, **extra}


def sse_events(invocation: FakeInvocation) -> list[str]:
    return [frame.removeprefix("data: ") for frame in invocation.body.decode().split("\n\n") if frame]


@pytest.fixture
def fake() -> Iterator[FakeRuntimeAPI]:
    with FakeRuntimeAPI() as runtime_api:
        yield runtime_api


def test_streamed_and_buffered_completions_from_one_warm_container(
    fake: FakeRuntimeAPI, make_container: Callable[..., Container]
) -> None:
    streamed: FakeInvocation | None = None

    async def after_the_previous_chunk(i: int) -> None:
        # word i is made only once Lambda has the chunk before it (the role chunk, then word i-1):
        # so each word is its own write by causality, not by pacing (pieces already queued share one)
        assert streamed is not None
        await asyncio.to_thread(streamed.wait_for_chunks, i + 1)

    words = ["What", " is", " the", " capital", " of", " France?"]
    container = make_container({"echo": ScriptedBackend(words, step=after_the_previous_chunk)})
    key = add_key(container)
    auth = {"Authorization": f"Bearer {key}"}
    streamed = fake.push(rest_v1_event("POST", CHAT, chat(True, stream_options={"include_usage": True}), auth))
    buffered = fake.push(http_v2_event("POST", "/v1/chat/completions", chat(False), {"x-api-key": key}))
    listed = fake.push(function_url_event("GET", "/v1/models", headers=auth))
    RuntimeThread(fake.address, lambda: container.app, max_invocations=3).join(timeout=60)

    assert streamed.succeeded and streamed.prelude is not None
    assert streamed.prelude["statusCode"] == 200
    assert streamed.prelude["headers"]["content-type"].startswith("text/event-stream")
    assert streamed.prelude["headers"]["x-request-id"]
    events = sse_events(streamed)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == QUESTION
    assert chunks[-1]["usage"]["total_tokens"] > 0
    assert len(streamed.body_chunks) > len(words)  # word by word, not one buffered body

    assert buffered.succeeded and buffered.prelude is not None and buffered.prelude["statusCode"] == 200
    assert json.loads(buffered.body)["choices"][0]["message"]["content"] == QUESTION
    assert json.loads(listed.body)["object"] == "list"

    key_id = key.split("_")[1]
    events_recorded = eventually(
        lambda: len(container.store.usage_events(key_id)) == 2 and container.store.usage_events(key_id)
    )
    assert sorted(e.streamed for e in events_recorded) == [False, True]


def test_each_completion_chunk_leaves_before_the_next_is_made(
    fake: FakeRuntimeAPI, make_container: Callable[..., Container]
) -> None:
    # The backend holds its second word until the test lets it go: a chunk reaching Lambda before
    # that can only have left while the backend was still answering (a buffering gateway would
    # send nothing, and `wait_for_chunks` would give up after 30 s: a bound, not a timing).
    gate = threading.Event()
    backend = ScriptedBackend(["one", " slow", " word", " at", " a time"], step=released_by(gate))
    container = make_container(backends={"slow": backend})
    key = add_key(container)
    invocation = fake.push(http_v2_event("POST", CHAT, chat(True, "slow"), {"x-api-key": key}))
    runtime = RuntimeThread(fake.address, lambda: container.app)

    try:
        assert invocation.wait_for_chunks(1)
        assert backend.sent <= 1 and not invocation.finished.is_set()
    finally:
        gate.set()
    runtime.join(timeout=60)
    assert sse_events(invocation)[-1] == "[DONE]"


def test_errors_keep_the_gateway_envelope(fake: FakeRuntimeAPI, make_container: Callable[..., Container]) -> None:
    container = make_container()
    key = add_key(container)
    no_key = fake.push(rest_v1_event("POST", CHAT, chat(True)))
    unknown_route = fake.push(rest_v1_event("GET", "/v2/nothing-here", headers={"x-api-key": key}))
    bad_body = fake.push(http_v2_event("POST", CHAT, "{not json", {"x-api-key": key}))
    RuntimeThread(fake.address, lambda: container.app, max_invocations=3).join(timeout=60)

    for invocation, status in ((no_key, 401), (unknown_route, 404), (bad_body, 400)):
        assert invocation.succeeded and invocation.prelude is not None  # an HTTP error is not a Lambda error
        assert invocation.prelude["statusCode"] == status
        envelope = json.loads(invocation.body)
        assert "detail" not in envelope
        assert envelope["request_id"] == invocation.prelude["headers"]["x-request-id"]


def test_a_stream_near_the_deadline_ends_in_band_and_is_metered(
    fake: FakeRuntimeAPI, make_container: Callable[..., Container]
) -> None:
    # Two words, then the backend waits to be cancelled: only a deadline can end this stream. The
    # deadline is real (it is the point): 2 s from when the runtime takes the invocation, so the app
    # stops at 1 s (its 1 s margin) and the runtime would at 1.5 s (its 0.5 s margin); the app's
    # in-band ending takes milliseconds, so the 0.5 s between the two is a margin of 50x or more.
    backend = ScriptedBackend([f" w{i}" for i in range(200)], hang_after=2)
    container = make_container(backends={"slow": backend})
    key = add_key(container)
    invocation = fake.push(http_v2_event("POST", CHAT, chat(True, "slow"), {"x-api-key": key}), deadline_in_s=2.0)
    RuntimeThread(fake.address, lambda: container.app).join(timeout=60)

    events = sse_events(invocation)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "upstream_timeout"
    assert invocation.stream_error is None  # the app ended it, before the runtime had to
    assert backend.sent == 2 and backend.closed.is_set()
    key_id = key.split("_")[1]
    (usage,) = eventually(lambda: container.store.usage_events(key_id))
    assert usage.streamed and usage.completion_tokens > 0


def test_a_stream_lambda_drops_is_metered_as_client_closed(
    fake: FakeRuntimeAPI, make_container: Callable[..., Container]
) -> None:
    backend = ScriptedBackend([f" w{i}" for i in range(500)], delay_s=0.002)
    container = make_container(backends={"slow": backend})
    key = add_key(container)
    invocation = fake.push(http_v2_event("POST", CHAT, chat(True, "slow"), {"x-api-key": key}))
    invocation.cut_after_chunks = 3
    RuntimeThread(fake.address, lambda: container.app).join(timeout=60)

    assert invocation.cut
    # the backend is read to its end after Lambda dropped the stream, for its own usage count
    assert backend.closed.wait(10) and backend.sent == len(backend.words)
    key_id = key.split("_")[1]
    (usage,) = eventually(lambda: container.store.usage_events(key_id))
    assert usage.status == "client_closed" and usage.streamed
    assert not usage.estimated and usage.completion_tokens == len(backend.words)


@pytest.mark.parametrize("event", sorted((ROOT / "events").glob("*.json")), ids=lambda p: p.name)
def test_every_sample_event_through_the_streaming_runtime(
    event: Path, fake: FakeRuntimeAPI, make_container: Callable[..., Container]
) -> None:
    from chatgw.cli.invoke import PLACEHOLDER

    container = make_container()
    key = add_key(container)
    invocation = fake.push(json.loads(event.read_text().replace(PLACEHOLDER, key)))
    RuntimeThread(fake.address, lambda: container.app).join(timeout=60)

    assert invocation.succeeded and invocation.prelude is not None
    assert invocation.prelude["statusCode"] == EXPECTED[event.name]
    if "responses-stream" in event.name:  # the Responses door ends with its completed event
        assert invocation.body.rsplit(b"\n\n", 2)[-2].startswith(b"event: response.completed\n")
    elif "stream" in event.name:
        assert invocation.body.endswith(stream_end(event.name).encode())


def test_chatgw_invoke_stream_prints_the_prelude_timed_chunks_and_end(tmp_path: Path) -> None:
    env = {**os.environ, "CHATGW_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "chatgw.cli.main", "invoke", str(ROOT / "events" / "rest-v1-chat-stream.json")]
    result = subprocess.run(
        [*command, "--stream", "--state-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("prelude (+") and '"statusCode": 200' in lines[0]
    assert lines[-2].startswith("+") and lines[-2].endswith("data: [DONE]\\n\\n'")  # the last write ends the stream
    assert lines[-1].startswith("end: complete,")


def test_bootstrap_serves_the_echo_model_streamed_and_buffered(fake: FakeRuntimeAPI, tmp_path: Path) -> None:
    """`handler/bootstrap` as Lambda starts it: real app from the environment, SQLite state dir."""
    state = tmp_path / "state"
    state.mkdir()
    store = SqliteStore(state / "chatgw.db")
    key, record = new_key("bootstrap")
    store.create_key(record)
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CHATGW_"))}
    env.update(AWS_LAMBDA_RUNTIME_API=fake.address, CHATGW_STATE_DIR=str(state), CHATGW_LOG_LEVEL="WARNING")
    streamed = fake.push(rest_v1_event("POST", CHAT, chat(True), {"x-api-key": key}))
    buffered = fake.push(function_url_event("POST", CHAT, chat(False), headers={"x-api-key": key}))
    with (tmp_path / "container.log").open("wb") as log:
        process = subprocess.Popen(
            [str(ROOT / "handler" / "bootstrap"), sys.executable, "/var/runtime/bootstrap.py"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            assert streamed.wait(60) and buffered.wait(60), (tmp_path / "container.log").read_text()
        finally:
            process.kill()
            process.wait(timeout=10)

    assert streamed.succeeded and sse_events(streamed)[-1] == "[DONE]"
    text = "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or ""
        for e in sse_events(streamed)[:-1]
        if json.loads(e)["choices"]
    )
    assert text == QUESTION
    assert buffered.succeeded
    assert json.loads(buffered.body)["choices"][0]["message"]["content"] == QUESTION
