"""Streams at their edges, over a real socket: keep-alives, errors before and after the first
byte, fallbacks, the deadline, a client that leaves, and a backend that reports no usage."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import httpx
import openai
import pytest

from chatgw.compose import Container
from chatgw.errors import UpstreamError, UpstreamRejected
from tests.fakes.backends import ScriptedBackend, released_by
from tests.support.keys import add_key
from tests.support.polling import eventually
from tests.support.sdk import openai_client
from tests.support.servers import ThreadServer

CHAT = "/v2/llms/chat/completions"
USER = [{"role": "user", "content": "hi"}]


def stream_body(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": USER, "stream": True, **extra}


def sse_events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e]


def key_id(key: str) -> str:
    return key.split("_")[1]


def test_keepalive_comments_while_the_backend_is_quiet(make_container: Callable[..., Container]) -> None:
    # The backend says nothing after its first word until the client has seen a keep-alive: so the
    # keep-alive is what ends the silence (by causality), however slow or fast the machine is.
    kept_alive = threading.Event()
    backend = ScriptedBackend(["a", " b"], step=released_by(kept_alive))
    gw = make_container({"slow": backend}, keepalive_s=0.1)
    key = add_key(gw)
    lines = []
    with (
        ThreadServer(gw.app) as server,
        httpx.stream(
            "POST", server.base_url + CHAT, json=stream_body("slow"), headers={"x-api-key": key}, timeout=30
        ) as r,
    ):
        for line in r.iter_lines():
            lines.append(line)
            if line == ": keep-alive":
                kept_alive.set()
    events = [line for line in lines if line]
    assert ": keep-alive" in events
    assert events.index(": keep-alive") < events.index(next(e for e in events if '"content":" b"' in e))
    assert events[-1] == "data: [DONE]"
    data = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
    assert "".join(d["choices"][0]["delta"].get("content", "") for d in data) == "a b"


def test_error_after_first_byte_is_in_band_without_done(make_container: Callable[..., Container]) -> None:
    backend = ScriptedBackend(["a", " b", " c"], fail=UpstreamError("upstream broke mid-stream"), fail_after=1)
    gw = make_container({"flaky": backend})
    key = add_key(gw)
    with ThreadServer(gw.app) as server:
        r = httpx.post(server.base_url + CHAT, json=stream_body("flaky"), headers={"x-api-key": key}, timeout=10)
        assert r.status_code == 200
        events = sse_events(r.text)
        assert "data: [DONE]" not in events
        error = json.loads(events[-1][6:])
        assert error["error"]["code"] == "upstream_error" and "mid-stream" in error["error"]["message"]
        sdk = openai_client(server.base_url + "/v2/llms", key, max_retries=0)
        with pytest.raises(openai.APIError, match="mid-stream"):
            list(sdk.chat.completions.create(model="flaky", messages=USER, stream=True))  # type: ignore[arg-type]
    recorded = eventually(lambda: gw.store.usage_events(key_id(key)))
    assert recorded[0].status == "error" and recorded[0].streamed


def test_error_before_first_byte_is_an_http_error(make_container: Callable[..., Container]) -> None:
    gw = make_container({"down": ScriptedBackend(fail=UpstreamRejected("upstream says: bad input"))})
    key = add_key(gw)
    with ThreadServer(gw.app) as server:
        r = httpx.post(server.base_url + CHAT, json=stream_body("down"), headers={"x-api-key": key}, timeout=10)
        assert r.status_code == 400
        assert r.json()["error"]["message"] == "upstream says: bad input"
        r = httpx.post(server.base_url + CHAT, json={"model": "down", "messages": USER}, headers={"x-api-key": key})
        assert r.status_code == 400
    events = eventually(lambda: len(gw.store.usage_events(key_id(key))) == 2 and gw.store.usage_events(key_id(key)))
    assert [e.status for e in events] == ["error", "error"]


@pytest.mark.parametrize("stream", [True, False])
def test_fallback_before_first_byte(make_container: Callable[..., Container], stream: bool) -> None:
    primary = ScriptedBackend(fail=UpstreamError("primary down"))
    backup = ScriptedBackend(["from", " backup"])
    gw = make_container({"backup": backup, "primary": (primary, ("backup",))})
    key = add_key(gw)
    with ThreadServer(gw.app) as server:
        sdk = openai_client(server.base_url + "/v2/llms", key, max_retries=0)
        if stream:
            chunks = list(sdk.chat.completions.create(model="primary", messages=USER, stream=True))  # type: ignore[arg-type]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert {c.model for c in chunks} == {"primary"}
        else:
            completion = sdk.chat.completions.create(model="primary", messages=USER)  # type: ignore[arg-type]
            text = completion.choices[0].message.content or ""
            assert completion.model == "primary"
    assert text == "from backup"
    assert primary.calls == 1 and backup.calls == 1


def test_no_fallback_after_first_byte(make_container: Callable[..., Container]) -> None:
    primary = ScriptedBackend(["a", " b"], fail=UpstreamError("died"), fail_after=1)
    backup = ScriptedBackend(["never"])
    gw = make_container({"backup": backup, "primary": (primary, ("backup",))})
    key = add_key(gw)
    with ThreadServer(gw.app) as server:
        r = httpx.post(server.base_url + CHAT, json=stream_body("primary"), headers={"x-api-key": key}, timeout=10)
    assert '"code":"upstream_error"' in r.text
    assert backup.calls == 0


def test_deadline_ends_the_stream_in_band_and_still_meters(make_container: Callable[..., Container]) -> None:
    # Two words, then the backend waits to be cancelled: only the deadline can end this stream.
    backend = ScriptedBackend([" w"] * 50, hang_after=2)
    gw = make_container({"slow": backend}, request_timeout_s=1.0)
    key = add_key(gw)
    with ThreadServer(gw.app) as server:
        r = httpx.post(server.base_url + CHAT, json=stream_body("slow"), headers={"x-api-key": key}, timeout=10)
    last = json.loads(sse_events(r.text)[-1][6:])
    assert last["error"]["code"] == "upstream_timeout"
    assert backend.closed.is_set()
    events = eventually(lambda: gw.store.usage_events(key_id(key)))
    assert events[0].status == "error" and events[0].estimated
    assert events[0].completion_tokens == backend.sent == 2


def test_client_leaving_closes_the_backend_at_the_drain_bound_and_records_client_closed(
    make_container: Callable[..., Container],
) -> None:
    backend = ScriptedBackend(endless=True, delay_s=0.01)  # ends only when closed
    gw = make_container({"long": backend}, drain_seconds=0.3)  # read on for 0.3 s after the client left
    key = add_key(gw)
    with ThreadServer(gw.app) as server:
        with httpx.stream(
            "POST", server.base_url + CHAT, json=stream_body("long"), headers={"x-api-key": key}, timeout=10
        ) as r:
            lines = r.iter_lines()
            seen = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: {") for line in seen)
        # Only the drain bound can close an endless stream; 30 s bounds a bug, it is no timing.
        assert backend.closed.wait(timeout=30)
        events = eventually(lambda: gw.store.usage_events(key_id(key)))
    assert events[0].status == "client_closed"
    assert events[0].estimated
    assert events[0].completion_tokens >= 1


def test_backend_without_usage_is_estimated(make_container: Callable[..., Container]) -> None:
    gw = make_container({"quiet": ScriptedBackend(["one", " two"], usage=False)})
    key = add_key(gw)
    with ThreadServer(gw.app) as server:
        sdk = openai_client(server.base_url + "/v2/llms", key, max_retries=0)
        chunks = list(
            sdk.chat.completions.create(
                model="quiet",
                messages=USER,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        completion = sdk.chat.completions.create(model="quiet", messages=USER)  # type: ignore[arg-type]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert completion.usage is not None and completion.usage.completion_tokens == 2
    events = eventually(lambda: len(gw.store.usage_events(key_id(key))) == 2 and gw.store.usage_events(key_id(key)))
    assert all(e.estimated for e in events)


def test_slow_first_byte_commits_to_200_with_keepalives(make_container: Callable[..., Container]) -> None:
    kept_alive = threading.Event()

    class SlowStart(ScriptedBackend):
        async def stream(self, request, deadline):  # type: ignore[no-untyped-def]
            import asyncio

            # no first piece until the client has seen a keep-alive (30 s bounds a bug): so the 200
            # and the keep-alive came first by causality, not because a sleep outlasted a timer
            await asyncio.to_thread(kept_alive.wait, 30)
            async for piece in super().stream(request, deadline):
                yield piece

    gw = make_container({"slowstart": SlowStart(["x"])}, keepalive_s=0.1)
    key = add_key(gw)
    lines = []
    with (
        ThreadServer(gw.app) as server,
        httpx.stream(
            "POST", server.base_url + CHAT, json=stream_body("slowstart"), headers={"x-api-key": key}, timeout=30
        ) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
            if line == ": keep-alive":
                kept_alive.set()
    events = [line for line in lines if line]
    assert events[0] == ": keep-alive" and events[-1] == "data: [DONE]"
