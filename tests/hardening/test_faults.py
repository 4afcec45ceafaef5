"""Faults injected through the real clients: the SQLite store failing, locked or closed (503,
nothing let through; a failed usage write becomes the `usage_event` log line, which replays);
backends failing before and after the first byte, too slow, or broken; clients that leave."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from chatgw.access.keys import Limits
from chatgw.compose import Container
from chatgw.errors import ChatgwError, UpstreamError, UpstreamRateLimited, UpstreamRejected, UpstreamTimeout
from chatgw.store.base import UsageQuery
from chatgw.store.codec import event_from_dict
from chatgw.store.sqlite import SqliteStore
from tests.fakes.backends import ScriptedBackend
from tests.support.asgi import CHAT, assert_envelope, captured_logs, run
from tests.support.failing_store import failing_table, raw_db
from tests.support.keys import add_key
from tests.support.polling import eventually
from tests.support.servers import ThreadServer

USER = [{"role": "user", "content": "hi"}]


def body(model: str, stream: bool = False, **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": USER, "stream": stream, **extra}).encode()


def auth(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json")]


def key_id(key: str) -> str:
    return key.split("_")[1]


# the store --------------------------------------------------------------------------------


def break_keys_table(container: Container) -> None:
    db = raw_db(container)
    db.execute("ALTER TABLE keys RENAME TO keys_gone")
    db.close()  # left to the garbage collector, its ResourceWarning failed whichever test was running


def close_store(container: Container) -> None:
    container.store.close()


@pytest.mark.parametrize("fault", [break_keys_table, close_store], ids=["keys-table-unreadable", "store-closed"])
@pytest.mark.parametrize("stream", [False, True])
def test_key_lookup_failing_is_503_and_no_backend_call(
    make_container: Callable[..., Container], fault: Callable[[Container], None], stream: bool
) -> None:
    backend = ScriptedBackend()
    gw = make_container({"m": backend}, key_cache_seconds=0)
    key = add_key(gw)
    fault(gw)
    with captured_logs() as logs:
        reply = run(gw.app, "POST", CHAT, auth(key), body("m", stream))
    assert_envelope(reply, allowed_5xx=(503,))
    assert reply.status == 503 and reply.json()["error"]["code"] == "store_unavailable"
    assert backend.calls == 0
    assert key not in "\n".join(logs.lines)


def test_admission_failing_is_503_even_with_the_key_cached(make_container: Callable[..., Container]) -> None:
    backend = ScriptedBackend()
    gw = make_container({"m": backend})  # the key record is cached (30 s): admission still needs the store
    key = add_key(gw, limits=Limits(requests_per_minute=100))
    assert run(gw.app, "POST", CHAT, auth(key), body("m")).status == 200
    with failing_table(gw, "windows"):
        for stream in (False, True):
            reply = run(gw.app, "POST", CHAT, auth(key), body("m", stream))
            assert_envelope(reply, allowed_5xx=(503,))
            assert reply.status == 503 and reply.json()["error"]["code"] == "store_unavailable"
    assert backend.calls == 1


def test_store_locked_by_another_writer_is_503_not_a_hang(make_container: Callable[..., Container]) -> None:
    backend = ScriptedBackend()
    gw = make_container({"m": backend})
    key = add_key(gw, limits=Limits(requests_per_minute=100))
    assert isinstance(gw.store, SqliteStore)
    gw.store._db.execute("PRAGMA busy_timeout = 200")  # the adapter's 10 s, shortened for the test
    other = raw_db(gw)
    other.execute("BEGIN EXCLUSIVE")
    try:
        # Not a hang, by causality rather than a stopwatch: the answer comes back while the other
        # writer still holds its lock (released only in `finally`, after the reply).
        reply = run(gw.app, "POST", CHAT, auth(key), body("m"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert_envelope(reply, allowed_5xx=(503,))
    assert reply.status == 503 and backend.calls == 0
    assert run(gw.app, "POST", CHAT, auth(key), body("m")).status == 200  # and it recovers


@pytest.mark.parametrize("stream", [False, True])
def test_failed_usage_write_is_logged_whole_and_replays(make_container: Callable[..., Container], stream: bool) -> None:
    gw = make_container({"m": ScriptedBackend(["a", " b", " c"])})
    key = add_key(gw)
    with captured_logs() as logs, failing_table(gw, "events"):
        reply = run(gw.app, "POST", CHAT, auth(key), body("m", stream))
    assert reply.status == 200  # the answer is not held up nor lost by the ledger
    assert gw.store.usage_events(key_id(key)) == []
    (line,) = logs.named("usage_event")
    assert line["level"] == "ERROR" and line["reason"] == "StoreUnavailable"
    logged = line["usage_event"]
    assert logged["request_id"] == reply.request_id and logged["key_id"] == key_id(key)
    assert logged["status"] == "ok" and logged["streamed"] is stream
    assert (logged["prompt_tokens"], logged["completion_tokens"], logged["total_tokens"]) == (5, 3, 8)
    # recoverable: the log line replays into the ledger, once
    event = event_from_dict(logged)
    assert gw.store.record_usage(event) is True
    assert gw.store.record_usage(event) is False
    (row,) = gw.store.usage(UsageQuery("day", event.at.strftime("%Y-%m-%d"), key_id=key_id(key)))
    assert (row.requests, row.total_tokens) == (1, 8)


# the backend ------------------------------------------------------------------------------

BACKEND_FAULTS: list[tuple[str, ChatgwError | Exception, int, str]] = [
    ("upstream-error", UpstreamError("upstream said 500"), 502, "upstream_error"),
    ("upstream-timeout", UpstreamTimeout("upstream too slow"), 504, "upstream_timeout"),
    ("upstream-throttled", UpstreamRateLimited("slow down", retry_after=3), 429, "upstream_rate_limited"),
    ("upstream-4xx", UpstreamRejected("upstream says: bad input"), 400, "upstream_rejected"),
    ("backend-bug", RuntimeError("internal detail that must not leak"), 502, "upstream_error"),
]


@pytest.mark.parametrize(("name", "error", "status", "code"), BACKEND_FAULTS, ids=[f[0] for f in BACKEND_FAULTS])
@pytest.mark.parametrize("stream", [False, True])
def test_backend_failing_before_first_byte(
    make_container: Callable[..., Container], name: str, error: Exception, status: int, code: str, stream: bool
) -> None:
    gw = make_container({"m": ScriptedBackend(fail=error)})  # type: ignore[arg-type]
    key = add_key(gw)
    reply = run(gw.app, "POST", CHAT, auth(key), body("m", stream))
    assert_envelope(reply, allowed_5xx=(502, 504))
    assert reply.status == status and reply.json()["error"]["code"] == code
    assert "internal detail" not in reply.body.decode()
    if status == 429:
        assert reply.header("retry-after") == ["3"]
    (event,) = gw.store.usage_events(key_id(key))
    assert (event.request_id, event.status, event.streamed) == (reply.request_id, "error", stream)


@pytest.mark.parametrize(("name", "error", "status", "code"), BACKEND_FAULTS, ids=[f[0] for f in BACKEND_FAULTS])
def test_backend_failing_after_first_byte_is_in_band(
    make_container: Callable[..., Container], name: str, error: Exception, status: int, code: str
) -> None:
    gw = make_container({"m": ScriptedBackend(["a", " b", " c"], fail=error, fail_after=2)})  # type: ignore[arg-type]
    key = add_key(gw)
    reply = run(gw.app, "POST", CHAT, auth(key), body("m", True))
    assert reply.status == 200 and len(reply.header("x-request-id")) == 1
    events = [e for e in reply.body.decode().split("\n\n") if e]
    assert "data: [DONE]" not in events
    last = json.loads(events[-1].removeprefix("data: "))
    assert set(last) == {"error"} and last["error"]["code"] == code
    assert "internal detail" not in reply.body.decode()
    (event,) = gw.store.usage_events(key_id(key))
    assert event.status == "error" and event.streamed and event.completion_tokens == 2 and event.estimated


@pytest.mark.parametrize("stream", [False, True])
def test_backend_slower_than_the_deadline(make_container: Callable[..., Container], stream: bool) -> None:
    # The backend never finishes on its own (two words, then it waits to be cancelled), so only the
    # deadline can end the call, however slow the machine. The 1 s deadline only has to leave time
    # for the first pieces (well under 10 ms here), or the stream would fail before its first byte.
    backend = ScriptedBackend(["a", " b", " c", " d"], hang_after=2)
    gw = make_container({"m": backend}, request_timeout_s=1.0, keepalive_s=0.1)
    key = add_key(gw)
    reply = run(gw.app, "POST", CHAT, auth(key), body("m", stream))
    assert backend.hanging.is_set()
    if stream:
        assert reply.status == 200
        events = [e for e in reply.body.decode().split("\n\n") if e]
        data = [e for e in events if e.startswith("data: ")]  # keep-alives go out while it hangs
        assert '"content":" b"' in data[-2]  # both words went out before the deadline's error
        last = json.loads(data[-1].removeprefix("data: "))
        assert last["error"]["code"] == "upstream_timeout"
        assert backend.closed.is_set()  # the backend's stream was closed before the response ended
    else:
        assert_envelope(reply, allowed_5xx=(504,))
        assert reply.status == 504 and reply.json()["error"]["code"] == "upstream_timeout"
        assert backend.cancelled.is_set()  # the buffered call was cancelled, not left running
    (event,) = gw.store.usage_events(key_id(key))
    assert event.status == "error" and event.streamed is stream
    assert event.completion_tokens == (2 if stream else 0)


# the client -------------------------------------------------------------------------------


@pytest.mark.parametrize("leave_after", [0, 1, 3])
def test_client_leaving_mid_stream_in_process(make_container: Callable[..., Container], leave_after: int) -> None:
    backend = ScriptedBackend([f" w{i}" for i in range(200)], delay_s=0.002)
    gw = make_container({"m": backend})
    key = add_key(gw)
    reply = run(gw.app, "POST", CHAT, auth(key), body("m", True), leave_after_chunks=leave_after)
    # the backend is read to its end after the client left (CHATGW_DRAIN_SECONDS), then closed
    assert backend.closed.is_set() and backend.sent == 200
    (event,) = gw.store.usage_events(key_id(key))
    assert event.request_id == reply.request_id
    assert event.status == "client_closed" and event.streamed
    assert not event.estimated and event.completion_tokens == 200  # the backend's own count


def test_client_disconnecting_over_a_real_socket_without_drain(make_container: Callable[..., Container]) -> None:
    backend = ScriptedBackend(endless=True, delay_s=0.01)  # ends only when closed: the client leaving
    gw = make_container({"m": backend}, drain_seconds=0)  # CHATGW_DRAIN_SECONDS=0: close at once
    key = add_key(gw)
    with ThreadServer(gw.app) as server, httpx.Client(timeout=10) as client:
        with client.stream("POST", server.base_url + CHAT, content=body("m", True), headers=dict(auth(key))) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            for _ in range(6):
                next(lines)
        # The stream is endless, so only the disconnect can close it; 30 s bounds a bug, it is no timing.
        assert backend.closed.wait(30), "the backend call was not closed after the client left"
        events = eventually(lambda: gw.store.usage_events(key_id(key)))
    assert [e.status for e in events] == ["client_closed"]
    assert events[0].completion_tokens >= 1
