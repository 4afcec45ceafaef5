"""The openai backend against the fake OpenAI-compatible server: what the upstream sees, retries,
redirects, error mapping, timeouts, garbage, mid-stream failures and pacing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from chatgw.backends import CatalogError, build_backend
from chatgw.backends.base import BackendDeps
from chatgw.backends.openai_chat import OpenAIBackend
from chatgw.conversation import Conversation, Delta, Event
from chatgw.deadline import Deadline
from chatgw.errors import (
    ChatgwError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from tests.fakes.fake_openai import FakeOpenAI, Script
from tests.support.asgi import captured_logs
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


def ask(stream: bool = False, **params: Any) -> Conversation:
    return chat("public", "say something", stream=stream, **params)


def run(options: dict[str, Any], scenario: Callable[[OpenAIBackend], Coroutine[Any, Any, T]]) -> T:
    async def main() -> T:
        deps = BackendDeps()
        backend = build_backend("openai", "public", options, deps)
        assert isinstance(backend, OpenAIBackend)
        try:
            return await scenario(backend)
        finally:
            await deps.aclose()

    return asyncio.run(main())


def buffered(server: FakeOpenAI, request: Conversation | None = None, seconds: float = 20, **options: Any) -> Any:
    async def scenario(backend: OpenAIBackend) -> Any:
        return await backend.complete(request or ask(), Deadline.in_seconds(seconds))

    return run({"base_url": server.base_url, **options}, scenario)


def streamed(
    server: FakeOpenAI, request: Conversation | None = None, **options: Any
) -> tuple[list[Event], ChatgwError | None]:
    """The events that arrived, and the error the generator raised after them (if any)."""

    async def scenario(backend: OpenAIBackend) -> tuple[list[Event], ChatgwError | None]:
        return await collect(backend.stream(request or ask(stream=True), Deadline.in_seconds(20)))

    return run({"base_url": server.base_url, **options}, scenario)


# ---- what the upstream receives -------------------------------------------------------------


def test_the_upstream_gets_every_parameter_its_model_name_key_and_headers(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret")
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    request = ask(
        temperature=0.3,
        seed=42,
        top_p=0.9,
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        user="end-user-1",
    )
    buffered(
        fake_openai,
        request,
        upstream_model="gpt-upstream",
        api_key_env="FAKE_UPSTREAM_KEY",
        headers={"OpenAI-Organization": "org-1", "Authorization": "Bearer overridden-by-the-key"},
    )
    (seen,) = fake_openai.requests
    assert seen.headers["authorization"] == "Bearer sk-upstream-secret"
    assert [v for k, v in seen.header_list if k == "authorization"] == ["Bearer sk-upstream-secret"]
    assert seen.headers["openai-organization"] == "org-1"
    assert seen.body == {
        "model": "gpt-upstream",
        "messages": [{"role": "user", "content": "say something"}],
        "temperature": 0.3,
        "seed": 42,
        "top_p": 0.9,
        "tools": tools,
        "tool_choice": "auto",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
        "user": "end-user-1",
    }


def test_streams_always_ask_the_upstream_for_usage(fake_openai: FakeOpenAI) -> None:
    events, error = streamed(fake_openai)
    assert error is None
    assert fake_openai.requests[0].body["stream_options"] == {"include_usage": True}
    assert fake_openai.requests[0].body["model"] == "public"
    assert events[-1].usage is not None and not events[-1].deltas


def test_a_stream_without_usage_yields_no_usage_event(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(send_usage=False))
    events, error = streamed(fake_openai)
    assert error is None
    assert all(e.usage is None for e in events)
    assert events[-1].deltas[-1].stop == "end"


def test_upstream_extra_fields_reach_the_chat_client(fake_openai: FakeOpenAI) -> None:
    """Rendered by the chat door: the upstream's own fields are what a chat client sees."""
    body = rendered_answer(buffered(fake_openai))
    standard = {"id", "object", "created", "model", "choices", "usage"}
    assert {k: v for k, v in body.items() if k not in standard} == {"system_fingerprint": "fp_fake"}
    counts = {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert {k: v for k, v in body["usage"].items() if k not in counts} == {
        "prompt_tokens_details": {"cached_tokens": 0}
    }
    events, error = streamed(fake_openai)
    assert error is None and events[-1].usage is not None  # the whole stream, not a prefix cut by an error
    first = rendered_chunks(events)[0]
    assert {k: v for k, v in first.items() if k not in standard} == {"system_fingerprint": "fp_fake"}


def test_streamed_tool_calls_arrive_as_openai_deltas(fake_openai: FakeOpenAI) -> None:
    """Rendered by the chat door, as a chat client gets them; and read as tool deltas."""
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    events, error = streamed(fake_openai, ask(stream=True, tools=tools))
    assert error is None
    chunks = rendered_chunks(events)
    calls = tool_call_chunks(chunks)
    assert calls[0]["id"] == "call_fake_1" and calls[0]["function"]["name"] == "lookup"
    assert "".join(c["function"]["arguments"] for c in calls) == '{"query":"say something"}'
    assert finish_reasons(chunks) == ["tool_calls"]
    assert stops(events) == ["tool_use"]


# ---- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_retries_before_the_first_byte_then_succeeds(fake_openai: FakeOpenAI, status: int) -> None:
    fake_openai.then(Script(status=status), Script(status=status))
    assert answer_text(buffered(fake_openai))
    assert len(fake_openai.requests) == 3


def test_gives_up_after_two_more_tries(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(*[Script(status=503, body={"error": {"message": "overloaded"}})] * 4)
    with pytest.raises(UpstreamError, match="overloaded"):
        buffered(fake_openai)
    assert len(fake_openai.requests) == 3


def test_max_retries_zero_tries_once(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(status=500), Script(status=500))
    with pytest.raises(UpstreamError):
        buffered(fake_openai, max_retries=0)
    assert len(fake_openai.requests) == 1


def test_upstream_429_is_a_429_with_retry_after(fake_openai: FakeOpenAI) -> None:
    limited = Script(status=429, headers={"retry-after": "0"}, body={"error": {"message": "slow down"}})
    fake_openai.then(limited, limited, limited)
    with pytest.raises(UpstreamRateLimited, match="slow down") as caught:
        buffered(fake_openai, seconds=60)
    assert caught.value.status == 429 and caught.value.headers["retry-after"] == "1"
    assert len(fake_openai.requests) == 3


def test_a_retry_after_honoured_when_it_fits(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(status=429, headers={"retry-after-ms": "400"}))
    with captured_logs() as logs:
        assert answer_text(buffered(fake_openai))
    (retry,) = logs.named("upstream_retry")  # the wait the policy chose, not a stopwatch reading
    assert retry["wait_ms"] == 400 and retry["error"] == "upstream_rate_limited"
    assert len(fake_openai.requests) == 2


def test_a_retry_after_past_the_deadline_is_not_waited_for(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(status=429, headers={"retry-after": "30"}))
    with pytest.raises(UpstreamRateLimited) as caught:
        buffered(fake_openai, seconds=5)
    assert caught.value.retry_after == 30
    assert len(fake_openai.requests) == 1


def test_connection_refused_is_a_502(fake_openai: FakeOpenAI) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UpstreamError, match="connection"):
        buffered(fake_openai, base_url=f"http://127.0.0.1:{port}/v1")


def test_nothing_is_retried_after_the_first_byte(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(drop_after_chunks=3))
    events, error = streamed(fake_openai)
    assert isinstance(error, UpstreamError)
    assert len(events) == 3
    assert len(fake_openai.requests) == 1


# ---- error mapping --------------------------------------------------------------------------


def test_redirects_are_not_followed(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(status=307, headers={"location": f"{fake_openai.base_url}/chat/completions"}, body=b""))
    with pytest.raises(UpstreamError, match="redirect"):
        buffered(fake_openai)
    assert len(fake_openai.requests) == 1


def test_upstream_4xx_passes_through_with_its_message(fake_openai: FakeOpenAI) -> None:
    body = {"error": {"message": "This model's maximum context length is 8192 tokens.", "param": "messages"}}
    fake_openai.then(Script(status=400, body=body))
    with pytest.raises(UpstreamRejected) as caught:
        buffered(fake_openai)
    assert caught.value.status == 400
    assert caught.value.message == "This model's maximum context length is 8192 tokens."
    assert caught.value.param == "messages"
    assert len(fake_openai.requests) == 1


def test_upstream_auth_failure_is_a_502_that_never_echoes_the_key(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-do-not-leak")
    fake_openai.then(Script(status=401, body={"error": {"message": "Incorrect API key provided: sk-do-not-leak"}}))
    with pytest.raises(UpstreamError) as caught:
        buffered(fake_openai, api_key_env="FAKE_UPSTREAM_KEY")
    assert "sk-do-not-leak" not in str(caught.value) and "sk-do-not-leak" not in repr(caught.value.envelope("r"))


def test_a_missing_key_variable_is_a_502_naming_the_variable(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(UpstreamError, match="NO_SUCH_KEY_VARIABLE"):
        buffered(fake_openai, api_key_env="NO_SUCH_KEY_VARIABLE")
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    "script",
    [
        Script(body=b"<html>Bad gateway</html>", headers={"content-type": "text/html"}),
        Script(body={"object": "not.a.completion"}),
        Script(body={"choices": [{"index": 0}]}),
    ],
    ids=["html", "no-choices", "no-message"],
)
def test_a_buffered_body_that_is_not_a_completion_is_a_502(fake_openai: FakeOpenAI, script: Script) -> None:
    fake_openai.then(script)
    with pytest.raises(UpstreamError):
        buffered(fake_openai)


def test_garbage_in_the_stream_is_a_502_after_the_good_events(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(garbage_sse_after_chunks=2))
    events, error = streamed(fake_openai)
    assert isinstance(error, UpstreamError) and "not JSON" in error.message
    assert len(events) == 2


def test_a_stream_answered_with_json_is_a_502(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(body={"choices": []}))
    events, error = streamed(fake_openai)
    assert isinstance(error, UpstreamError) and events == []


def test_an_in_band_error_mid_stream_is_raised(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(error_event_after_chunks=3))
    events, error = streamed(fake_openai)
    assert isinstance(error, UpstreamError) and "crashed mid-stream" in error.message
    assert len(events) == 3 and events[0].deltas == [Delta()]  # the stream's opening came first


# ---- timeouts -------------------------------------------------------------------------------


# The upstream below never answers (a `stall`), so only our timeout or deadline can end the call,
# however slow the machine. The 1 s only has to cover sending the request over loopback.


def test_a_slow_upstream_is_a_504_and_is_not_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(stall_before_headers=True))
    with pytest.raises(UpstreamTimeout):
        buffered(fake_openai, timeout_s=1)
    # The call has returned: a retry would have been made before it did. One request, no more.
    assert len(fake_openai.requests) == 1


def test_the_deadline_bounds_the_call(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(stall_before_headers=True))
    with pytest.raises(UpstreamTimeout):
        buffered(fake_openai, seconds=1)
    assert len(fake_openai.requests) == 1


def test_a_body_that_stalls_after_the_headers_is_a_504(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(stall_after_headers=True))  # a 200, half a JSON body, then nothing
    with pytest.raises(UpstreamTimeout):
        buffered(fake_openai, timeout_s=1)
    assert len(fake_openai.requests) == 1 and fake_openai.stall.reached.is_set()


def test_a_stream_that_stalls_is_a_504_after_its_events(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(Script(stall_after_chunks=1))
    events, error = streamed(fake_openai, timeout_s=1)
    assert isinstance(error, UpstreamTimeout)
    assert len(events) == 1


# ---- pacing ---------------------------------------------------------------------------------


def test_each_chunk_is_yielded_as_soon_as_the_upstream_sends_it(fake_openai: FakeOpenAI) -> None:
    gate = threading.Event()
    fake_openai.then(Script(gate=gate))

    async def scenario(backend: OpenAIBackend) -> list[Event]:
        events: list[Event] = []
        async for event in backend.stream(ask(stream=True), Deadline.in_seconds(20)):
            if not events:
                # The upstream holds its last chunk until the gate opens: the first event got here
                # while the upstream was still answering.
                assert not gate.is_set() and not fake_openai.stream_completed.is_set()
                gate.set()
            events.append(event)
        return events

    events = run({"base_url": fake_openai.base_url}, scenario)
    assert not fake_openai.gate_timed_out
    assert events[-1].usage is not None


# ---- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({}, "base_url"),
        ({"base_url": "ftp://example.com"}, "base_url"),
        ({"base_url": "http://x/v1", "api_key_env": "A", "api_key_secret": "B"}, "api_key_secret"),
        ({"base_url": "http://x/v1", "headers": {"a": 1}}, "headers"),
        ({"base_url": "http://x/v1", "timeout_s": 0}, "timeout_s"),
        ({"base_url": "http://x/v1", "max_retries": 5}, "max_retries"),
        ({"base_url": "http://x/v1", "api_base": "http://y"}, "api_base"),
    ],
)
def test_bad_options_name_the_model_and_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(CatalogError) as caught:
        build_backend("openai", "my-model", options, BackendDeps())
    assert f"model 'my-model': field '{field}'" in str(caught.value)


def test_base_url_query_is_kept_for_azure_style_upstreams() -> None:
    backend = build_backend(
        "openai",
        "m",
        {"base_url": "https://r.example/openai/deployments/d?api-version=2024-10-21"},
        BackendDeps(),
    )
    assert isinstance(backend, OpenAIBackend)
    assert str(backend.url) == "https://r.example/openai/deployments/d/chat/completions?api-version=2024-10-21"


def test_each_retry_is_logged_without_secrets(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-never-logged")
    logger = logging.getLogger("chatgw")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="chatgw"):
            fake_openai.then(Script(status=503), Script(status=429, headers={"retry-after": "0"}))
            buffered(fake_openai, api_key_env="FAKE_UPSTREAM_KEY")
    finally:
        logger.removeHandler(caplog.handler)
    unique = {id(r): r for r in caplog.records}.values()  # the handler may see a record twice
    retries = [r for r in unique if r.getMessage() == "upstream_retry"]
    fields = [r.fields for r in retries]  # type: ignore[attr-defined]
    assert [(f["model"], f["retry"], f["error"]) for f in fields] == [
        ("public", 1, "upstream_error"),
        ("public", 2, "upstream_rate_limited"),
    ]
    assert "sk-never-logged" not in caplog.text and all("sk-never" not in str(f) for f in fields)
