"""Requests of every outcome through the buffered Lambda handler (Mangum) and through the streaming
runtime (fake Runtime API): the `completion`/`refused`/`upstream_error`/`store_error` log lines and
the EMF metrics each one wrote (names, dimensions, values), and never a key, a secret or a prompt."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from mangum import Mangum

from chatgw.access.keys import Limits
from chatgw.aws_lambda.context import LambdaContext
from chatgw.aws_lambda.fake_runtime_api import FakeRuntimeAPI
from chatgw.compose import Container
from chatgw.errors import StoreUnavailable, UpstreamError
from chatgw.observability import logs
from chatgw.observability.metrics import EmfSink
from tests.fakes.backends import ScriptedBackend
from tests.support.keys import add_key
from tests.support.lambda_events import RuntimeThread, rest_v1_event
from tests.support.loops import close_loop

CHAT = "/v2/llms/chat/completions"
PROMPT = "Tell me the secret plan for Thursday"


@dataclass
class Seen:
    lines: list[dict[str, Any]] = field(default_factory=list)
    emf: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)

    def logged(self, msg: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["msg"] == msg]

    def metric(self, name: str) -> list[tuple[float, dict[str, str], list[list[str]]]]:
        """(value, dimension values, dimension sets) of every EMF datum of `name`."""
        found = []
        for blob in self.emf:
            (directive,) = blob["_aws"]["CloudWatchMetrics"]
            assert directive["Namespace"] == "chatgw"
            if name in {m["Name"] for m in directive["Metrics"]}:
                names = {n for dims in directive["Dimensions"] for n in dims}
                (value,) = blob[name]
                found.append((value, {n: blob[n] for n in names}, directive["Dimensions"]))
        return found


class _Capture(logging.Handler):
    def __init__(self, seen: Seen) -> None:
        super().__init__()
        self.seen = seen
        self.setFormatter(logs.JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        self.seen.raw.append(text)
        self.seen.lines.append(json.loads(text))


@pytest.fixture
def seen() -> Iterator[Seen]:
    seen = Seen()
    handler = _Capture(seen)
    logger = logging.getLogger(logs.LOGGER_NAME)
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


@pytest.fixture
def gateway(make_container: Callable[..., Container], seen: Seen) -> Container:
    backends = {"broken": ScriptedBackend(fail=UpstreamError("upstream said: Tell me", cause="5xx"))}
    container = make_container(backends, log_level="INFO")
    container.service.observer.sink = EmfSink(
        write=lambda line: (seen.raw.append(line), seen.emf.append(json.loads(line)))
    )
    return container


def body(stream: bool = False, model: str = "echo", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": stream, **extra}


def run_buffered(container: Container, event: dict[str, Any]) -> int:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        response = Mangum(container.app, lifespan="off")(event, LambdaContext.local())
    finally:
        asyncio.set_event_loop(None)
        close_loop(loop)
    return int(response["statusCode"])


def run_streaming(container: Container, event: dict[str, Any], cut_after: int | None = None) -> int:
    with FakeRuntimeAPI() as fake:
        invocation = fake.push(event)
        invocation.cut_after_chunks = cut_after
        RuntimeThread(fake.address, lambda: container.app).join(timeout=60)
        assert invocation.prelude is not None
        return int(invocation.prelude["statusCode"])


RUNNERS = {"buffered": run_buffered, "streaming": run_streaming}


def completion(seen: Seen) -> dict[str, Any]:
    (line,) = seen.logged("completion")
    return line


def request_metrics(seen: Seen) -> dict[str, Any]:
    ((value, dims, sets),) = seen.metric("chatgw.requests")
    assert value == 1 and sets == [[], ["outcome"], ["door", "outcome"], ["model", "backend", "outcome"]]
    return dims


def assert_nothing_secret(seen: Seen, key: str) -> None:
    secret = key.split("_", 2)[2]
    for text in seen.raw:
        assert key not in text and secret not in text and PROMPT not in text and "Tell me" not in text


PACE_S = 0.05
"""The paced model's sleep before its answer (buffered) or before each of its 3 words (streamed)."""


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("stream", [False, True], ids=["buffered_answer", "streamed_answer"])
def test_latency_covers_the_backends_time(
    runner: str, stream: bool, make_container: Callable[..., Container], seen: Seen
) -> None:
    """The backend sleeps at least PACE_S (x3 streamed): the logged latency is no less than that, and no
    more than the time the whole run took here (both hold on any machine: sleeps never end early)."""
    container = make_container({"paced": ScriptedBackend(delay_s=PACE_S)}, log_level="INFO")
    key = add_key(container)
    event = rest_v1_event("POST", CHAT, body(stream, model="paced"), {"x-api-key": key})
    started = time.monotonic()
    assert RUNNERS[runner](container, event) == 200
    took_ms = (time.monotonic() - started) * 1000
    line = completion(seen)
    slept_ms = PACE_S * 1000 * (3 if stream else 1)
    assert slept_ms - 1 <= line["latency_ms"] <= took_ms + 1, (line["latency_ms"], slept_ms, took_ms)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("stream", [False, True], ids=["buffered_answer", "streamed_answer"])
def test_ok(runner: str, stream: bool, gateway: Container, seen: Seen) -> None:
    key = add_key(gateway)
    event = rest_v1_event("POST", CHAT, body(stream), {"x-api-key": key})
    assert RUNNERS[runner](gateway, event) == 200

    line = completion(seen)
    assert line["level"] == "INFO" and line["outcome"] == "ok" and line["status"] == 200
    assert line["key_id"] == key.split("_")[1] and line["model"] == line["served_model"] == "echo"
    assert line["backend"] == "echo" and line["streamed"] is stream and line["fallback"] is False
    assert line["door"] == "chat"
    assert line["prompt_tokens"] > 0 and line["completion_tokens"] == len(PROMPT.split())
    assert line["client_closed"] is False and line["lambda_request_id"]
    assert isinstance(line["latency_ms"], int) and line["latency_ms"] >= (line["ttft_ms"] or 0)
    assert (line["ttft_ms"] is not None) is stream
    assert request_metrics(seen) == {"outcome": "ok", "model": "echo", "backend": "echo", "door": "chat"}
    ((errors, _, _),) = seen.metric("chatgw.server_errors")
    assert errors == 0
    assert len(seen.metric("gen_ai.client.operation.duration")) == 1
    assert len(seen.metric("gen_ai.client.operation.time_to_first_chunk")) == (1 if stream else 0)
    tokens = {dims["token_type"]: value for value, dims, _ in seen.metric("gen_ai.client.token.usage")}
    assert tokens == {"input": line["prompt_tokens"], "output": line["completion_tokens"]}
    operations = {dims["operation"] for _, dims, _ in seen.metric("chatgw.store.duration")}
    assert operations == {"get_key", "record_usage"}
    assert not seen.metric("chatgw.refusals")
    assert_nothing_secret(seen, key)


REFUSALS = [
    ("400", 400, "invalid", "invalid", lambda key: ({"x-api-key": key}, body(temperature=5))),
    ("401", 401, "auth", "auth", lambda key: ({"x-api-key": key[:-2] + "xx"}, body())),
    ("403", 403, "permission", "permission", lambda key: ({"x-api-key": key}, body(stream=True))),
]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(("name", "status", "outcome", "reason", "make"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals(
    runner: str, name: str, status: int, outcome: str, reason: str, make: Any, gateway: Container, seen: Seen
) -> None:
    key = add_key(gateway, allow_streaming=False)
    headers, payload = make(key)
    assert RUNNERS[runner](gateway, rest_v1_event("POST", CHAT, payload, headers)) == status

    (refused,) = seen.logged("refused")
    assert refused["path"] == CHAT and refused["status"] == status and refused["reason"] == reason
    assert refused["code"] and refused["request_id"]
    assert refused["key_id"] == key.split("_")[1]  # a 401's key id is the one presented (its secret was wrong)
    assert refused["model"] == (None if status in (400, 401) else "echo")
    line = completion(seen)
    assert line["outcome"] == outcome and line["status"] == status and line["code"] == refused["code"]
    assert request_metrics(seen)["outcome"] == outcome
    assert [(v, d) for v, d, _ in seen.metric("chatgw.refusals")] == [(1, {"reason": reason})]
    assert not seen.metric("gen_ai.client.token.usage")
    assert_nothing_secret(seen, key)


@pytest.mark.parametrize("runner", RUNNERS)
def test_429_rate_limit(runner: str, gateway: Container, seen: Seen) -> None:
    key = add_key(gateway, limits=Limits(requests_per_minute=1))
    event = rest_v1_event("POST", CHAT, body(), {"x-api-key": key})
    assert RUNNERS[runner](gateway, event) == 200
    assert RUNNERS[runner](gateway, event) == 429

    first, second = seen.logged("completion")
    assert first["outcome"] == "ok" and second["outcome"] == "rate_limited" and second["status"] == 429
    assert second["code"] == "rate_limit_exceeded" and second["key_id"] == key.split("_")[1]
    assert [(v, d) for v, d, _ in seen.metric("chatgw.refusals")] == [(1, {"reason": "rate"})]
    assert {d["operation"] for _, d, _ in seen.metric("chatgw.store.duration")} >= {"admit"}
    assert_nothing_secret(seen, key)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("stream", [False, True], ids=["buffered_answer", "streamed_answer"])
def test_502_upstream_failure(runner: str, stream: bool, gateway: Container, seen: Seen) -> None:
    key = add_key(gateway)
    event = rest_v1_event("POST", CHAT, body(stream, model="broken"), {"x-api-key": key})
    assert RUNNERS[runner](gateway, event) == 502

    (failed,) = seen.logged("upstream_error")
    assert failed["cause"] == "5xx" and failed["backend"] == "fake" and failed["model"] == "broken"
    assert "message" not in failed
    line = completion(seen)
    assert line["outcome"] == "upstream_error" and line["status"] == 502 and line["level"] == "WARNING"
    assert line["served_model"] == "broken" and line["backend"] == "fake"
    assert request_metrics(seen) == {"outcome": "upstream_error", "model": "broken", "backend": "fake", "door": "chat"}
    ((errors, _, _),) = seen.metric("chatgw.server_errors")
    assert errors == 1
    assert [(v, d) for v, d, _ in seen.metric("chatgw.upstream.errors")] == [(1, {"backend": "fake", "cause": "5xx"})]
    assert not seen.metric("chatgw.refusals")
    assert_nothing_secret(seen, key)


@pytest.mark.parametrize("runner", RUNNERS)
def test_503_store_unavailable(runner: str, gateway: Container, seen: Seen, monkeypatch: pytest.MonkeyPatch) -> None:
    key = add_key(gateway)

    def down(key_id: str) -> None:
        raise StoreUnavailable("The key store is unreachable.")

    monkeypatch.setattr(gateway.store, "get_key", down)
    assert RUNNERS[runner](gateway, rest_v1_event("POST", CHAT, body(), {"x-api-key": key})) == 503

    (store_error,) = seen.logged("store_error")
    assert store_error["level"] == "ERROR" and store_error["operation"] == "get_key"
    assert store_error["code"] == "store_unavailable"
    line = completion(seen)
    assert line["outcome"] == "store_unavailable" and line["status"] == 503 and line["key_id"] == key.split("_")[1]
    assert request_metrics(seen) == {"outcome": "store_unavailable", "model": "none", "backend": "none", "door": "chat"}
    assert [(v, d) for v, d, _ in seen.metric("chatgw.store.errors")] == [(1, {"operation": "get_key"})]
    assert not seen.metric("chatgw.refusals")
    assert_nothing_secret(seen, key)


def test_client_gone_mid_stream(make_container: Callable[..., Container], seen: Seen) -> None:
    """Only a stream can see its client leave (a buffered Lambda answer is sent whole)."""
    backend = ScriptedBackend([f" w{i}" for i in range(500)], delay_s=0.01)
    container = make_container({"slow": backend}, log_level="INFO")
    container.service.observer.sink = EmfSink(write=lambda line: seen.emf.append(json.loads(line)))
    key = add_key(container)
    run_streaming(container, rest_v1_event("POST", CHAT, body(True, model="slow"), {"x-api-key": key}), cut_after=3)

    line = completion(seen)
    assert line["outcome"] == "client_closed" and line["client_closed"] is True and line["streamed"] is True
    assert line["status"] == 200 and line["completion_tokens"] > 0  # drained or estimated: counted either way
    assert request_metrics(seen) == {"outcome": "client_closed", "model": "slow", "backend": "fake", "door": "chat"}
    assert_nothing_secret(seen, key)


@pytest.mark.parametrize("runner", RUNNERS)
def test_failure_after_the_first_byte(runner: str, make_container: Callable[..., Container], seen: Seen) -> None:
    backend = ScriptedBackend(
        ["a", " b", " c", " d"], fail=UpstreamError("cut: Tell me", cause="connect"), fail_after=2
    )
    container = make_container({"flaky": backend}, log_level="INFO")
    container.service.observer.sink = EmfSink(write=lambda line: seen.emf.append(json.loads(line)))
    key = add_key(container)
    assert RUNNERS[runner](container, rest_v1_event("POST", CHAT, body(True, model="flaky"), {"x-api-key": key})) == 200

    line = completion(seen)
    assert line["status"] == 200 and line["outcome"] == "upstream_error" and line["code"] == "upstream_error"
    assert line["level"] == "WARNING" and line["streamed"] is True and line["ttft_ms"] is not None
    (failed,) = seen.logged("upstream_error")
    assert failed["cause"] == "connect" and failed["fallback"] is False
    assert request_metrics(seen) == {"outcome": "upstream_error", "model": "flaky", "backend": "fake", "door": "chat"}
    ((errors, _, _),) = seen.metric("chatgw.server_errors")
    assert errors == 1
    assert [(v, d) for v, d, _ in seen.metric("chatgw.upstream.errors")] == [
        (1, {"backend": "fake", "cause": "connect"})
    ]
    assert_nothing_secret(seen, key)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("stream", [False, True], ids=["buffered_answer", "streamed_answer"])
def test_fallback(runner: str, stream: bool, make_container: Callable[..., Container], seen: Seen) -> None:
    down = ScriptedBackend(fail=UpstreamError("down", cause="5xx"))
    container = make_container({"primary": (down, ("echo",))}, log_level="INFO")
    container.service.observer.sink = EmfSink(write=lambda line: seen.emf.append(json.loads(line)))
    key = add_key(container)
    assert (
        RUNNERS[runner](container, rest_v1_event("POST", CHAT, body(stream, model="primary"), {"x-api-key": key}))
        == 200
    )

    line = completion(seen)
    assert line["outcome"] == "ok" and line["fallback"] is True
    assert line["model"] == "primary" and line["served_model"] == "echo" and line["backend"] == "echo"
    (failed,) = seen.logged("upstream_error")
    assert failed["model"] == "primary" and failed["cause"] == "5xx" and failed["fallback"] is True
    assert [(v, d) for v, d, _ in seen.metric("chatgw.fallbacks")] == [(1, {"model": "primary"})]
    assert request_metrics(seen) == {"outcome": "ok", "model": "echo", "backend": "echo", "door": "chat"}


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "invoke_stream"])
def test_chatgw_invoke_prints_the_log_and_emf_lines_of_lambda(stream: bool, tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    from tests.support.tools import ROOT

    event = ROOT / "events" / ("rest-v1-chat-stream.json" if stream else "rest-v1-chat.json")
    argv = [sys.executable, "-m", "chatgw.cli.main", "invoke", str(event), "--state-dir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATGW_")} | {"CHATGW_LOG_LEVEL": "INFO"}
    done = subprocess.run(argv + (["--stream"] if stream else []), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    if not stream:
        assert json.loads(done.stdout)["statusCode"] == 200  # stdout stays the Lambda response
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    (completion_line,) = [line for line in lines if line.get("msg") == "completion"]
    assert completion_line["outcome"] == "ok" and completion_line["streamed"] is stream
    assert completion_line["lambda_request_id"]
    blobs = [line for line in lines if "_aws" in line]
    names = {m["Name"] for blob in blobs for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"chatgw.requests", "gen_ai.client.operation.duration", "gen_ai.client.token.usage"} <= names
    assert ("gen_ai.client.operation.time_to_first_chunk" in names) is stream


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(
    ("limits", "reason", "code"),
    [
        (Limits(tokens_per_minute=5), "tokens", "rate_limit_exceeded"),
        (Limits(monthly_token_budget=5), "budget", "insufficient_quota"),
    ],
    ids=["tokens", "budget"],
)
def test_429_token_limits(runner: str, limits: Limits, reason: str, code: str, gateway: Container, seen: Seen) -> None:
    key = add_key(gateway, limits=limits)  # 5 tokens: less than this request's reservation
    assert RUNNERS[runner](gateway, rest_v1_event("POST", CHAT, body(max_tokens=16), {"x-api-key": key})) == 429

    line = completion(seen)
    assert line["outcome"] == "rate_limited" and line["code"] == code and line["key_id"] == key.split("_")[1]
    assert [(v, d) for v, d, _ in seen.metric("chatgw.refusals")] == [(1, {"reason": reason})]
    assert_nothing_secret(seen, key)
