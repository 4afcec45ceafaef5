"""`chatgw smoke`'s streaming check on a model that cannot show pacing (the buffered answer took about
as long as the model list): not judged, shown as a WARN row with the reason and a summary line saying
streaming went unchecked (not a failure, never a pass); still a failure when a paced model's chunks
arrive together (a buffering hop) or the stream itself is broken. The gateway is an
httpx.MockTransport and the clock is injected: each answer 'takes' the seconds the test gives it, and
no wall time is measured."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from chatgw.cli.smoke import report
from chatgw.cli.smoke_checks import Check, Smoke

KEY = "cgw_smoketest0001_" + "k" * 33


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class OneRead(httpx.SyncByteStream):
    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body


def sse(*, done: bool = True) -> bytes:
    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "w"}}]}
    frames = [f"data: {json.dumps(chunk)}\n\n" for _ in range(5)] + (["data: [DONE]\n\n"] if done else [])
    return "".join(frames).encode()  # one body: every event in one read, as after a buffering hop


def gateway(clock: FakeClock, *, answer_s: float, stream_status: int = 200, done: bool = True) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        if path == "/v1/models":
            clock.now += 0.05
            return httpx.Response(200, json={"object": "list", "data": [{"id": "echo"}]})
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return httpx.Response(401, json={"error": {"type": "authentication_error"}}, headers={"x-request-id": "r"})
        clock.now += 0.05 + answer_s
        if json.loads(request.content).get("stream"):
            headers = {"content-type": "text/event-stream", "x-request-id": "r2"}
            return httpx.Response(stream_status, stream=OneRead(sse(done=done)), headers=headers)
        body = {"object": "chat.completion", "choices": [{"message": {"content": "w w w"}}], "usage": {}}
        return httpx.Response(200, json=body, headers={"x-request-id": "r1"})

    return httpx.Client(transport=httpx.MockTransport(handle))


def run(client: httpx.Client, clock: FakeClock) -> dict[str, Check]:
    return {c.name: c for c in Smoke("http://gw/v2/llms", KEY, None, client, clock=clock).run()}


def test_a_model_that_answers_at_once_has_its_streaming_check_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    checks = run(gateway(clock, answer_s=0.0), clock)
    streamed = checks["streamed completion"]
    assert streamed.skipped and streamed.ok
    assert "cannot show streaming pacing" in streamed.detail and "delay_ms" in streamed.detail
    assert [c.name for c in checks.values() if not c.ok] == []
    assert report(list(checks.values()), as_json=False) == 0  # not judged is not failed...
    out, err = capsys.readouterr()
    assert any(line.split()[:3] == ["streamed", "completion", "WARN"] for line in out.splitlines())
    assert not any(line.split()[:3] == ["streamed", "completion", "pass"] for line in out.splitlines())
    summary = err.strip().splitlines()[-1]  # ...but it is never read as a pass
    assert summary.startswith("4 of 5 checks passed; WARN: NOT CHECKED: streamed completion")
    assert report(list(checks.values()), as_json=True) == 0
    blob = json.loads(capsys.readouterr().out)
    assert blob["ok"] and not blob["complete"] and blob["unchecked"] == ["streamed completion"]


@pytest.mark.parametrize("answer_s", [0.5, 2.0])
def test_a_paced_model_whose_chunks_arrive_together_still_fails(answer_s: float) -> None:
    clock = FakeClock()
    checks = run(gateway(clock, answer_s=answer_s), clock)
    streamed = checks["streamed completion"]
    assert not streamed.ok and not streamed.skipped
    assert "chunks arrived together" in streamed.detail
    assert report(list(checks.values()), as_json=True) == 1


@pytest.mark.parametrize(
    ("fault", "make"),
    [
        ("no [DONE]", lambda clock: gateway(clock, answer_s=0.0, done=False)),
        ("HTTP 500", lambda clock: gateway(clock, answer_s=0.0, stream_status=500)),
    ],
)
def test_a_broken_stream_fails_even_from_an_unpaced_model(
    fault: str, make: Callable[[FakeClock], httpx.Client]
) -> None:
    clock = FakeClock()
    streamed = run(make(clock), clock)["streamed completion"]
    assert not streamed.ok and not streamed.skipped
    assert fault in streamed.detail
