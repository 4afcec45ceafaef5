"""Upstream faults through the real openai backend (httpx) against the fake OpenAI-compatible
server on loopback, seen from the gateway's side: connection refused, too slow, failing before
and after the first byte, malformed JSON and SSE, no usage, a redirect to another host, and a
client leaving mid-stream. Each answer keeps the envelope and status rules, each call that
reached the upstream leaves one usage event, and the upstream key never shows."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from typing import Any

import pytest

from chatgw.backends._retry import BACKOFF_BASE_S
from chatgw.compose import Container
from tests.fakes.fake_openai import FakeOpenAI, Script
from tests.support.asgi import CHAT, Reply, assert_envelope, captured_logs, run
from tests.support.keys import add_key
from tests.support.polling import eventually
from tests.support.servers import free_port
from tests.support.upstream import UPSTREAM_KEY, USER, Upstreamed, events_of, sse
from tests.support.upstream import up as up


def assert_no_upstream_key(reply: Reply) -> None:
    assert UPSTREAM_KEY not in reply.body.decode("utf-8", "replace")


# before the first byte: an ordinary HTTP error, never a 500 -----------------------------------

ECHOING_OUR_KEY = Script(status=400, body={"error": {"message": f"Incorrect API key provided: {UPSTREAM_KEY}"}})
BEFORE: list[tuple[str, list[Script], dict[str, Any], int, str]] = [
    ("5xx-after-retries", [Script(status=503)] * 3, {"max_retries": 2}, 502, "upstream_error"),
    ("429", [Script(status=429, headers={"retry-after": "7"})], {}, 429, "upstream_rate_limited"),
    ("4xx-passes-through", [Script(status=400, body={"error": {"message": "no"}})], {}, 400, "upstream_rejected"),
    ("401-our-credentials", [Script(status=401)], {}, 502, "upstream_error"),
    ("too-slow", [Script(stall_before_headers=True)], {"timeout_s": 0.4}, 504, "upstream_timeout"),
    ("garbage-json", [Script(status=200, body=b"{not json")], {}, 502, "upstream_error"),
    ("not-a-completion", [Script(status=200, body={"hello": "world"})], {}, 502, "upstream_error"),
    ("error-echoing-our-key", [ECHOING_OUR_KEY], {}, 400, "upstream_rejected"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "scripts", "options", "status", "code"), BEFORE, ids=[c[0] for c in BEFORE])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failing_before_the_first_byte(
    up: Upstreamed,
    fake_openai: FakeOpenAI,
    name: str,
    scripts: list[Script],
    options: dict[str, Any],
    status: int,
    code: str,
    stream: bool,
) -> None:
    gw, key = up.gateway(fake_openai.base_url, **options)
    fake_openai.then(*scripts)
    reply = up.chat(gw, key, stream)
    assert_envelope(reply, allowed_5xx=(502, 504))
    assert reply.status == status and reply.json()["error"]["code"] == code, reply.body
    assert_no_upstream_key(reply)
    if status == 429:
        assert reply.header("retry-after")
    assert fake_openai.wait_for_requests(len(scripts)) == len(scripts)  # retried as allowed, no more
    (event,) = events_of(gw, key)
    assert (event.request_id, event.status, event.streamed) == (reply.request_id, "error", stream)


def test_upstream_refusing_connections(up: Upstreamed) -> None:
    gw, key = up.gateway(f"http://127.0.0.1:{free_port()}/v1", max_retries=2)
    with captured_logs() as logs:
        for stream in (False, True):
            reply = up.chat(gw, key, stream)
            assert_envelope(reply, allowed_5xx=(502,))
            assert reply.status == 502 and reply.json()["error"]["code"] == "upstream_error"
    assert [e.status for e in events_of(gw, key)] == ["error", "error"]
    # Bounded by the policy, not a stopwatch: exactly `max_retries` waits per request, each within
    # the jittered exponential backoff (0.2 s x 2^n at most), none of them a Retry-After.
    retries = logs.named("upstream_retry")
    assert [r["retry"] for r in retries] == [1, 2, 1, 2]
    assert all(r["wait_ms"] <= BACKOFF_BASE_S * 1000 * 2 ** (r["retry"] - 1) for r in retries)


def test_redirect_to_another_host_is_not_followed(up: Upstreamed, fake_openai: FakeOpenAI) -> None:
    elsewhere = FakeOpenAI().start()  # another origin, which must never be called
    try:
        gw, key = up.gateway(fake_openai.base_url)
        location = elsewhere.base_url + "/chat/completions"
        for stream in (False, True):
            fake_openai.then(Script(status=307, headers={"location": location}))
            reply = up.chat(gw, key, stream)
            assert_envelope(reply, allowed_5xx=(502,))
            assert reply.status == 502 and "redirect" in reply.json()["error"]["message"]
        assert elsewhere.requests == []
        assert all(r.headers.get("authorization") == f"Bearer {UPSTREAM_KEY}" for r in fake_openai.requests)
    finally:
        elsewhere.stop()


# after the first byte: in-band, no [DONE], counted ---------------------------------------------

AFTER = [
    ("connection-dropped", Script(drop_after_chunks=3)),
    ("error-event", Script(error_event_after_chunks=3)),
    ("malformed-sse", Script(garbage_sse_after_chunks=3)),
]


@pytest.mark.parametrize(("name", "script"), AFTER, ids=[c[0] for c in AFTER])
def test_upstream_failing_after_the_first_byte(
    up: Upstreamed, fake_openai: FakeOpenAI, name: str, script: Script
) -> None:
    gw, key = up.gateway(fake_openai.base_url, max_retries=2)
    fake_openai.then(script)
    reply = up.chat(gw, key, True)
    assert reply.status == 200
    events = sse(reply)
    assert "data: [DONE]" not in events
    last = json.loads(events[-1].removeprefix("data: "))
    assert set(last) == {"error"} and last["error"]["type"] == "api_error"
    assert_no_upstream_key(reply)
    assert fake_openai.wait_for_requests(1) == 1  # nothing is retried after the first byte
    (event,) = events_of(gw, key)
    assert event.status == "error" and event.streamed and event.completion_tokens > 0 and event.estimated


def test_malformed_sse_as_the_first_event_is_an_http_502(up: Upstreamed, fake_openai: FakeOpenAI) -> None:
    gw, key = up.gateway(fake_openai.base_url)
    fake_openai.then(Script(garbage_sse_after_chunks=0))
    reply = up.chat(gw, key, True)
    assert_envelope(reply, allowed_5xx=(502,))
    assert reply.status == 502


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_sending_no_usage_is_estimated(up: Upstreamed, fake_openai: FakeOpenAI, stream: bool) -> None:
    gw, key = up.gateway(fake_openai.base_url)
    if stream:
        fake_openai.then(Script(send_usage=False))
        reply = up.chat(gw, key, True, stream_options={"include_usage": True})
        chunks = [json.loads(e.removeprefix("data: ")) for e in sse(reply) if e.startswith("data: {")]
        usage = chunks[-1]["usage"]
        assert sse(reply)[-1] == "data: [DONE]"
    else:
        answer = {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-upstream",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
        }
        fake_openai.then(Script(body=answer))
        reply = up.chat(gw, key)
        usage = reply.json()["usage"]
    assert reply.status == 200 and usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
    (event,) = events_of(gw, key)
    assert event.status == "ok" and event.estimated
    assert (event.prompt_tokens, event.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])


def test_client_leaving_closes_the_upstream_call_without_drain(up: Upstreamed, fake_openai: FakeOpenAI) -> None:
    gw, key = up.gateway(fake_openai.base_url, drain_seconds=0)  # CHATGW_DRAIN_SECONDS=0: close at once
    fake_openai.then(Script(stall_after_chunks=3))  # the upstream then holds its stream open, forever
    reply = up.chat(gw, key, True, leave=2)  # the client goes away after two chunks
    assert reply.status == 200
    # Only our closing the connection can end the upstream's stream now; 30 s bounds a bug, no timing.
    assert fake_openai.stream_aborted.wait(30), "the upstream call was not closed after the client left"
    assert not fake_openai.stream_completed.is_set()
    (event,) = events_of(gw, key)
    assert event.status == "client_closed" and event.streamed and event.request_id == reply.request_id


def test_a_stream_that_stalls_past_the_deadline_ends_in_band_within_it(up: Upstreamed, fake_openai: FakeOpenAI) -> None:
    # The model's timeout (one read) is 10 minutes; the request's deadline is 1 s. The backend times no
    # read against the deadline: ChatStream bounds the whole stream by it, so the deadline ends it.
    gw, key = up.gateway(fake_openai.base_url, request_timeout_s=1.0, timeout_s=600)
    fake_openai.then(Script(stall_after_chunks=3))  # the upstream then holds its stream open, forever
    with captured_logs() as logs:
        reply = up.chat(gw, key, True)
    last = json.loads(reply.chunks[-1].decode().strip().split("\n\n")[-1].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_timeout"
    assert b"[DONE]" not in reply.body
    # Only our closing the connection can end the upstream's stream; 30 s bounds a bug, no timing.
    assert fake_openai.stream_aborted.wait(30), "the upstream call was not closed at the deadline"
    (event,) = events_of(gw, key)
    assert event.status == "error" and event.streamed and event.completion_tokens > 0
    (chain,) = logs.named("fallback_chain")  # it names the model that timed out
    assert chain["chain"] == [{"model": "up", "outcome": "upstream_timeout"}]


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_each_request_on_its_own_event_loop(
    make_container: Callable[..., Container], fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the container's shared httpx client kept the connections of the first event
    loop, so a caller that runs each request in its own `asyncio.run` got "Event loop is closed"
    (a 502) from the second request on. (The old loop's idle connections are left to the garbage
    collector, hence the warnings this test ignores.)"""
    monkeypatch.setenv("HARDENING_UPSTREAM_KEY", UPSTREAM_KEY)
    model = {"backend": "openai", "base_url": fake_openai.base_url, "api_key_env": "HARDENING_UPSTREAM_KEY"}
    gw = make_container(models=json.dumps({"up": model}))
    key = add_key(gw)
    headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
    for stream in (False, True, False, True):
        body = json.dumps({"model": "up", "messages": USER, "stream": stream}).encode()
        reply = run(gw.app, "POST", CHAT, headers, body)  # a new asyncio.run, hence a new loop, each time
        assert reply.status == 200, reply.body
    assert [e.status for e in events_of(gw, key)] == ["ok"] * 4
    gc.collect()


def test_one_tool_call_without_usage_is_estimated_alike_buffered_and_streamed(
    up: Upstreamed, fake_openai: FakeOpenAI
) -> None:
    """An upstream that reports no usage: the answer's text is measured once (`metering.estimate`),
    so a tool call is booked the same whether it was buffered or streamed (it was 59 tokens
    buffered, from the repr of the call's dict, and 9 streamed)."""
    gw, key = up.gateway(fake_openai.base_url)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    forced = {"type": "function", "function": {"name": "get_weather"}}
    fake_openai.then(Script(send_usage=False))
    streamed = up.chat(gw, key, True, tools=tools, tool_choice=forced)
    assert streamed.status == 200
    calls = [
        c
        for e in sse(streamed)
        if e.startswith("data: {")
        for choice in json.loads(e.removeprefix("data: "))["choices"]
        for c in choice["delta"].get("tool_calls") or ()
    ]
    name = calls[0]["function"]["name"]
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert name == "get_weather" and arguments
    answer = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-upstream",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": calls[0]["id"], "type": "function", "function": {"name": name, "arguments": arguments}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    fake_openai.then(Script(body=answer))
    buffered = up.chat(gw, key, tools=tools, tool_choice=forced)
    assert buffered.status == 200
    assert buffered.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == arguments
    events = sorted(events_of_count(gw, key, 2), key=lambda e: e.streamed)
    assert [e.estimated for e in events] == [True, True]
    assert events[0].completion_tokens == events[1].completion_tokens > 0


def events_of_count(gw: Container, key: str, count: int) -> list[Any]:
    def enough() -> list[Any] | None:
        got = list(gw.store.usage_events(key.split("_")[1]))
        return got if len(got) >= count else None

    return list(eventually(enough) or [])
