"""The bedrock backend against the fake Bedrock runtime, through the real boto3 client: request
mapping as Bedrock receives it, tool-call round trips, throttling, error mapping, retries,
timeouts, mid-stream exceptions and pacing."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from chatgw.backends import CatalogError, build_backend
from chatgw.backends.base import BackendDeps
from chatgw.backends.bedrock_converse import BedrockBackend
from chatgw.conversation import Conversation, Delta, Event
from chatgw.deadline import Deadline
from chatgw.errors import (
    ChatgwError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from tests.fakes.fake_bedrock import FakeBedrock, Script
from tests.support.backend_calls import (
    answer_text,
    chat,
    collect,
    finish_reasons,
    rendered_answer,
    rendered_chunks,
    stops,
    tool_call_chunks,
)

T = TypeVar("T")
MODEL_ID = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-fake-v1:0"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look something up",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]
PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"


def ask(stream: bool = False, **params: Any) -> Conversation:
    return chat("claude", "say something", stream=stream, **params)


def run(server: FakeBedrock, scenario: Callable[[BedrockBackend], Coroutine[Any, Any, T]], **options: Any) -> T:
    async def main() -> T:
        deps = BackendDeps(aws_client_factory=server.client)
        backend = build_backend("bedrock", "claude", {"model_id": MODEL_ID, **options}, deps)
        assert isinstance(backend, BedrockBackend)
        try:
            return await scenario(backend)
        finally:
            await backend.aclose()
            await deps.aclose()

    return asyncio.run(main())


def buffered(server: FakeBedrock, request: Conversation | None = None, seconds: float = 20, **options: Any) -> Any:
    async def scenario(backend: BedrockBackend) -> Any:
        request_ = request or ask()
        backend.check(request_)
        return await backend.complete(request_, Deadline.in_seconds(seconds))

    return run(server, scenario, **options)


def streamed(server: FakeBedrock, request: Conversation | None = None) -> tuple[list[Event], ChatgwError | None]:
    """The events that arrived, and the error the generator raised after them (if any)."""

    async def scenario(backend: BedrockBackend) -> tuple[list[Event], ChatgwError | None]:
        return await collect(backend.stream(request or ask(stream=True), Deadline.in_seconds(20)))

    return run(server, scenario)


# ---- what Bedrock receives ------------------------------------------------------------------


def test_the_request_is_mapped_to_converse(fake_bedrock: FakeBedrock) -> None:
    image = "data:image/png;base64," + base64.b64encode(PNG).decode()
    request = ask(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": "first"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": image}},
                ],
            },
        ],
        temperature=0.2,
        top_p=0.5,
        max_completion_tokens=50,
        stop=["END"],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "lookup"}},
    )
    buffered(fake_bedrock, request)
    (seen,) = fake_bedrock.requests
    assert seen.path.endswith("/converse") and seen.model_id == MODEL_ID
    body = seen.body
    assert body["system"] == [{"text": "Be brief."}, {"text": "Answer in English."}]
    assert [m["role"] for m in body["messages"]] == ["user"]  # consecutive user turns merged
    content = body["messages"][0]["content"]
    assert content[:2] == [{"text": "first"}, {"text": "what is this?"}]
    assert content[2]["image"]["format"] == "png" and seen.images == [PNG]
    assert body["inferenceConfig"] == {
        "maxTokens": 50,
        "temperature": 0.2,
        "topP": 0.5,
        "stopSequences": ["END"],
    }
    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "lookup",
                    "description": "Look something up",
                    "inputSchema": {"json": TOOLS[0]["function"]["parameters"]},
                }
            }
        ],
        "toolChoice": {"tool": {"name": "lookup"}},
    }


def test_a_tool_call_round_trip(fake_bedrock: FakeBedrock) -> None:
    """As a chat client makes it: the answer rendered by the chat door, its tool call sent back."""
    first = buffered(fake_bedrock, ask(tools=TOOLS, tool_choice="required"))
    choice = rendered_answer(first)["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "call_fake_1" and call["type"] == "function"
    assert call["function"]["name"] == "lookup"
    assert json.loads(call["function"]["arguments"]) == {"query": "say something"}
    assert fake_bedrock.requests[0].body["toolConfig"]["toolChoice"] == {"any": {}}

    follow_up = ask(
        stream=True,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "say something"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"},
            {"role": "user", "content": "and so?"},
        ],
    )
    fake_bedrock.then(Script())
    events, error = streamed(fake_bedrock, follow_up)
    assert error is None
    messages = fake_bedrock.requests[1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"toolUse": {"toolUseId": "call_fake_1", "name": "lookup", "input": {"query": "say something"}}}
    ]
    assert messages[2]["content"] == [
        {"toolResult": {"toolUseId": "call_fake_1", "content": [{"text": "sunny, 21 C"}]}},
        {"text": "and so?"},
    ]
    assert finish_reasons(rendered_chunks(events)) == ["tool_calls"]


def test_streamed_tool_calls_become_openai_deltas(fake_bedrock: FakeBedrock) -> None:
    """Rendered by the chat door, as a chat client gets them."""
    events, error = streamed(fake_bedrock, ask(stream=True, tools=TOOLS))
    assert error is None
    calls = tool_call_chunks(rendered_chunks(events))
    assert calls[0] == {
        "index": 0,
        "id": "call_fake_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": ""},
    }
    assert all(c["index"] == 0 for c in calls)
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"query": "say something"}
    assert events[-1].usage is not None and events[-1].usage.output == 5


@pytest.mark.parametrize(
    ("stop_reason", "stop", "finish"),
    [
        ("guardrail_intervened", "content_filter", "content_filter"),
        ("content_filtered", "content_filter", "content_filter"),
        ("max_tokens", "length", "length"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(
    fake_bedrock: FakeBedrock, stop_reason: str, stop: str, finish: str
) -> None:
    """Bedrock's stop reason as the conversation's, and as the finish reason a chat client sees."""
    fake_bedrock.then(Script(stop_reason=stop_reason), Script(stop_reason=stop_reason))
    answer = buffered(fake_bedrock)
    assert answer.outputs[0].stop == stop
    assert rendered_answer(answer)["choices"][0]["finish_reason"] == finish
    events, error = streamed(fake_bedrock)
    assert error is None  # a stream cut by an error could still carry a finish reason
    assert stops(events) == [stop]
    assert finish_reasons(rendered_chunks(events)) == [finish]


def test_endpoint_from_the_environment_is_honoured(fake_bedrock: FakeBedrock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake_bedrock.url)

    async def scenario() -> Any:
        deps = BackendDeps()  # the default factory: boto3 as it is configured
        backend = build_backend("bedrock", "claude", {"model_id": "m1", "region": "us-east-1"}, deps)
        try:
            return await backend.complete(ask(), Deadline.in_seconds(20))
        finally:
            await backend.aclose()

    assert answer_text(asyncio.run(scenario()))
    assert fake_bedrock.requests[0].model_id == "m1"


# ---- errors and retries ---------------------------------------------------------------------


def test_throttling_is_retried_then_a_429(fake_bedrock: FakeBedrock) -> None:
    throttled = Script(status=429, error_type="ThrottlingException", message="Too many requests")
    fake_bedrock.then(throttled, throttled, throttled, throttled)
    with pytest.raises(UpstreamRateLimited, match="Too many requests") as caught:
        buffered(fake_bedrock)
    assert caught.value.status == 429 and caught.value.retry_after >= 1
    assert len(fake_bedrock.requests) == 3  # botocore's own retries are off: ours are the only ones


def test_a_transient_failure_is_retried(fake_bedrock: FakeBedrock) -> None:
    fake_bedrock.then(Script(status=503, error_type="ServiceUnavailableException"))
    events, error = streamed(fake_bedrock)
    assert error is None and events[-1].usage is not None
    assert len(fake_bedrock.requests) == 2


def test_validation_errors_pass_through_as_400(fake_bedrock: FakeBedrock) -> None:
    fake_bedrock.then(Script(status=400, error_type="ValidationException", message="temperature: must be <= 1"))
    with pytest.raises(UpstreamRejected) as caught:
        buffered(fake_bedrock)
    assert caught.value.status == 400 and caught.value.message == "temperature: must be <= 1"
    assert len(fake_bedrock.requests) == 1


def test_access_denied_is_a_502_for_the_operator(fake_bedrock: FakeBedrock) -> None:
    fake_bedrock.then(Script(status=403, error_type="AccessDeniedException", message="arn:aws:iam::1:role/x"))
    with pytest.raises(UpstreamError) as caught:
        buffered(fake_bedrock)
    assert caught.value.status == 502 and "arn:aws:iam" not in caught.value.message
    assert len(fake_bedrock.requests) == 1


def test_model_timeout_is_a_504(fake_bedrock: FakeBedrock) -> None:
    fake_bedrock.then(Script(status=408, error_type="ModelTimeoutException"))
    with pytest.raises(UpstreamTimeout):
        buffered(fake_bedrock)


def test_the_deadline_bounds_the_call(fake_bedrock: FakeBedrock) -> None:
    # The second answer never comes (a stall), so only the deadline can end the call, however slow
    # the machine; the 1 s only has to cover sending the request over loopback.
    fake_bedrock.then(Script(), Script(stall_before_headers=True))

    async def scenario(backend: BedrockBackend) -> None:
        await backend.complete(ask(), Deadline.in_seconds(20))  # the client is made and warm
        with pytest.raises(UpstreamTimeout):
            await backend.complete(ask(), Deadline.in_seconds(1))

    run(fake_bedrock, scenario)
    # The call has returned, so any retry would have been made: the stalled request, and no other.
    assert len(fake_bedrock.requests) == 2 and fake_bedrock.stall.reached.is_set()


@pytest.mark.parametrize(
    ("exception_type", "error"),
    [
        ("modelStreamErrorException", UpstreamError),
        ("internalServerException", UpstreamError),
        ("throttlingException", UpstreamRateLimited),
        ("validationException", UpstreamRejected),
    ],
)
def test_an_exception_mid_stream_is_raised_after_the_events(
    fake_bedrock: FakeBedrock, exception_type: str, error: type[ChatgwError]
) -> None:
    fake_bedrock.then(Script(exception_after_events=3, exception_type=exception_type, message="boom"))
    events, raised = streamed(fake_bedrock)
    assert isinstance(raised, error) and "boom" in raised.message
    assert len(events) == 3 and events[0].deltas == [Delta()]  # the stream's opening came first
    assert len(fake_bedrock.requests) == 1


def test_a_stream_that_ends_without_message_stop_is_a_502(fake_bedrock: FakeBedrock) -> None:
    fake_bedrock.then(Script(end_after_events=3))
    events, error = streamed(fake_bedrock)
    assert isinstance(error, UpstreamError) and "messageStop" in error.message
    assert len(events) == 3


def test_a_stream_without_metadata_has_no_usage_event(fake_bedrock: FakeBedrock) -> None:
    fake_bedrock.then(Script(send_metadata=False))
    events, error = streamed(fake_bedrock)
    assert error is None
    assert all(e.usage is None for e in events)


def test_a_client_gone_before_the_first_byte_closes_the_stream_bedrock_opens_later(
    fake_bedrock: FakeBedrock,
) -> None:
    fake_bedrock.then(Script(delay_s=0.5, chunk_delay_s=0.2))

    async def scenario(backend: BedrockBackend) -> None:
        async def consume() -> None:
            async for _ in backend.stream(ask(stream=True), Deadline.in_seconds(20)):
                raise AssertionError("no event should arrive")

        task = asyncio.create_task(consume())
        assert await asyncio.to_thread(fake_bedrock.wait_for_requests, 1) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(fake_bedrock.stream_aborted.wait, 10)

    run(fake_bedrock, scenario)
    assert not fake_bedrock.stream_completed.is_set()


def test_connection_errors_are_retried_then_a_502(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import boto3

    for name, value in FakeBedrock.AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    made: list[Any] = []

    def factory(service: str, region: str | None) -> Any:
        client = boto3.session.Session().client(
            service, region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}"
        )
        attempts: list[str] = []
        client.meta.events.register("before-send.bedrock-runtime", lambda **kw: attempts.append("try"))
        made.append(attempts)
        return client

    async def scenario() -> None:
        deps = BackendDeps(aws_client_factory=factory)
        backend = build_backend("bedrock", "claude", {"model_id": "m"}, deps)
        try:
            with pytest.raises(UpstreamError, match="connection"):
                await backend.complete(ask(), Deadline.in_seconds(20))
        finally:
            await backend.aclose()

    asyncio.run(scenario())
    assert made == [["try"] * 3]


# ---- pacing ---------------------------------------------------------------------------------


def test_each_event_is_yielded_as_soon_as_bedrock_sends_it(fake_bedrock: FakeBedrock) -> None:
    gate = threading.Event()
    fake_bedrock.then(Script(gate=gate))

    async def scenario(backend: BedrockBackend) -> list[Event]:
        events: list[Event] = []
        async for event in backend.stream(ask(stream=True), Deadline.in_seconds(20)):
            if not events:
                assert not gate.is_set() and not fake_bedrock.stream_completed.is_set()
                gate.set()
            events.append(event)
        return events

    events = run(fake_bedrock, scenario)
    assert not fake_bedrock.gate_timed_out
    assert events[-1].usage is not None


# ---- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({}, "model_id"),
        ({"model_id": ""}, "model_id"),
        ({"model_id": "m", "region": 3}, "region"),
        ({"model_id": "m", "endpoint_url": "http://x"}, "endpoint_url"),
    ],
)
def test_bad_options_name_the_model_and_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(CatalogError) as caught:
        build_backend("bedrock", "my-model", options, BackendDeps())
    assert f"model 'my-model': field '{field}'" in str(caught.value)


# ---- what botocore raises itself (no server can make it on loopback) -----------------------------


class RaisingClient:
    """A bedrock-runtime client whose calls raise what botocore raises: the backend's mapping of
    exceptions that are not an HTTP answer (and, for retryable ones, its retries)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

        class Events:
            def unregister(self, *args: Any, **kwargs: Any) -> None:
                return None

        class Meta:
            events = Events()

        self.meta = Meta()

    def converse(self, **kwargs: Any) -> Any:
        self.calls += 1
        raise self.error


def _botocore_errors() -> list[tuple[str, Exception, type[ChatgwError], int]]:
    from botocore import exceptions as boto

    return [
        ("connect-timeout", boto.ConnectTimeoutError(endpoint_url="http://x"), UpstreamTimeout, 2),  # retried
        ("read-timeout", boto.ReadTimeoutError(endpoint_url="http://x"), UpstreamTimeout, 1),  # it may have run
        ("no-connection", boto.EndpointConnectionError(endpoint_url="http://x"), UpstreamError, 2),
        ("connection-closed", boto.ConnectionClosedError(endpoint_url="http://x"), UpstreamError, 2),
        ("param-validation", boto.ParamValidationError(report="bad"), UpstreamRejected, 1),
        ("anything-else", RuntimeError("internal detail"), UpstreamError, 1),
    ]


@pytest.mark.parametrize(
    ("name", "error", "mapped", "calls"), _botocore_errors(), ids=[e[0] for e in _botocore_errors()]
)
def test_exceptions_botocore_raises_map_to_gateway_errors(
    name: str, error: Exception, mapped: type[ChatgwError], calls: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("chatgw.backends._retry.BACKOFF_BASE_S", 0.0)  # the retry's wait is not the point here
    client = RaisingClient(error)

    async def scenario() -> None:
        deps = BackendDeps(aws_client_factory=lambda service, region: client)
        backend = build_backend("bedrock", "claude", {"model_id": "m1", "region": "us-east-1", "max_retries": 1}, deps)
        try:
            with pytest.raises(mapped) as caught:
                await backend.complete(ask(), Deadline.in_seconds(20))
            assert type(caught.value) is mapped and "internal detail" not in caught.value.message
        finally:
            await backend.aclose()
            await deps.aclose()

    asyncio.run(scenario())
    assert client.calls == calls
