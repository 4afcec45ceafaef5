"""Error paths no other test reached, each through the whole gateway and each checked four ways:
the status, the error envelope (or the in-band error of a started stream), the `completion` log
line, and the ledger's usage event. An unexpected exception (the 500), the openai backend (a body
that stalls after its headers, a stream that ends cleanly without [DONE], 408, an error inside a
200), the bedrock backend (a stream that stalls past the deadline, the deadline hit while
opening, statuses it does not know)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from chatgw.backends.base import BackendDeps
from chatgw.catalog import Catalog, ModelEntry
from chatgw.compose import Container, build
from tests.fakes.backends import ScriptedBackend
from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_bedrock import Script as BedrockScript
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.fake_openai import Script as OpenAIScript
from tests.support.asgi import CHAT, LogLines, Reply, assert_envelope, call, captured_logs
from tests.support.keys import add_key
from tests.support.loops import close_loop
from tests.support.polling import eventually

USER = [{"role": "user", "content": "What is the capital of France?"}]


@dataclass
class Gateways:
    """Gateways on one event loop for the test (as uvicorn, Mangum and the runtime have), their
    clients closed on that loop at the end."""

    make_container: Callable[..., Container]
    loop: asyncio.AbstractEventLoop
    deps: list[BackendDeps] = field(default_factory=list)

    def with_model(self, spec: dict[str, Any], deps: BackendDeps | None = None, **settings: Any) -> Container:
        base = self.make_container()
        deps = deps or BackendDeps()
        self.deps.append(deps)
        return build(replace(base.settings, models=json.dumps({"m": spec}), **settings), store=base.store, deps=deps)

    def chat(self, gw: Container, key: str, stream: bool = False) -> tuple[Reply, LogLines]:
        body = json.dumps({"model": "m", "messages": USER, "stream": stream}).encode()
        headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
        with captured_logs() as logs:
            reply = self.loop.run_until_complete(call(gw.app, "POST", CHAT, headers, body))
        return reply, logs


@pytest.fixture
def gateways(make_container: Callable[..., Container], monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateways]:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-fake")
    loop = asyncio.new_event_loop()
    made = Gateways(make_container, loop)
    try:
        yield made
    finally:
        for deps in made.deps:
            loop.run_until_complete(deps.aclose())
        close_loop(loop)


def completion_line(logs: LogLines, reply: Reply) -> dict[str, Any]:
    (line,) = [entry for entry in logs.named("completion") if entry["request_id"] == reply.request_id]
    return line


def the_event(gw: Container, key: str) -> Any:
    (event,) = eventually(lambda: gw.store.usage_events(key.split("_")[1]))
    return event


def in_band_error(reply: Reply) -> dict[str, Any]:
    events = [e for e in reply.body.decode().split("\n\n") if e.startswith("data: ")]
    assert events and events[-1] != "data: [DONE]", events
    last: dict[str, Any] = json.loads(events[-1].removeprefix("data: "))
    assert set(last) == {"error"}
    return last["error"]


def assert_refused(reply: Reply, logs: LogLines, status: int, code: str) -> None:
    """An HTTP error: the status, its envelope, and the `completion` line saying the same."""
    assert_envelope(reply, allowed_5xx=(500, 502, 504))
    assert (reply.status, reply.json()["error"]["code"]) == (status, code), reply.body
    line = completion_line(logs, reply)
    assert (line["status"], line["code"]) == (status, code)


# an unexpected exception ------------------------------------------------------------------------


class Broken(ScriptedBackend):
    """A backend whose `check` has a bug: the exception is nobody's domain error."""

    def check(self, request: Any) -> None:
        raise KeyError("a bug, with an internal detail")


def test_an_unexpected_exception_is_a_500_envelope_an_error_line_and_no_usage(
    make_container: Callable[..., Container],
) -> None:
    base = make_container()
    gw = build(base.settings, store=base.store, catalog=Catalog({"m": ModelEntry("m", Broken(), "broken")}))
    key = add_key(gw)
    body = json.dumps({"model": "m", "messages": USER}).encode()
    with captured_logs() as logs:
        reply = asyncio.run(call(gw.app, "POST", CHAT, [(b"x-api-key", key.encode())], body))
    assert_envelope(reply, allowed_5xx=(500,))
    assert reply.status == 500 and reply.json()["error"]["type"] == "api_error"
    assert "internal detail" not in reply.body.decode()
    (unhandled,) = logs.named("unhandled")
    assert unhandled["level"] == "ERROR" and unhandled["error_type"] == "KeyError"
    assert unhandled["request_id"] == reply.request_id
    assert gw.store.usage_events(key.split("_")[1]) == []  # no backend was called: nothing to meter


# the openai backend ----------------------------------------------------------------------------


@pytest.fixture
def openai_model(fake_openai: FakeOpenAI) -> Callable[..., dict[str, Any]]:
    def spec(**extra: Any) -> dict[str, Any]:
        return {
            "backend": "openai",
            "base_url": fake_openai.base_url,
            "api_key_env": "FAKE_UPSTREAM_KEY",
            "max_retries": 0,
            **extra,
        }

    return spec


def test_openai_a_body_that_stalls_after_the_headers_is_a_504(
    gateways: Gateways, fake_openai: FakeOpenAI, openai_model: Callable[..., dict[str, Any]]
) -> None:
    gw = gateways.with_model(openai_model(timeout_s=1))  # the upstream never finishes: only this timeout ends it
    key = add_key(gw)
    fake_openai.then(OpenAIScript(stall_after_headers=True))
    reply, logs = gateways.chat(gw, key)
    assert_refused(reply, logs, 504, "upstream_timeout")
    assert fake_openai.stall.reached.is_set()
    event = the_event(gw, key)
    assert (event.status, event.streamed, event.request_id) == ("error", False, reply.request_id)


def test_openai_a_stream_that_ends_cleanly_without_done_or_a_finish_is_an_in_band_error(
    gateways: Gateways, fake_openai: FakeOpenAI, openai_model: Callable[..., dict[str, Any]]
) -> None:
    gw = gateways.with_model(openai_model())
    key = add_key(gw)
    fake_openai.then(OpenAIScript(end_after_chunks=3))  # role and two words, then a clean end
    reply, logs = gateways.chat(gw, key, stream=True)
    assert reply.status == 200
    error = in_band_error(reply)
    assert error["code"] == "upstream_error" and "ended without [DONE]" in error["message"]
    line = completion_line(logs, reply)
    assert line["status"] == 200 and line["code"] == "upstream_error" and line["outcome"] != "ok"
    event = the_event(gw, key)
    assert event.status == "error" and event.streamed and event.estimated and event.completion_tokens > 0


def test_openai_a_stream_that_ends_cleanly_after_its_finish_but_without_done_is_kept(
    gateways: Gateways, fake_openai: FakeOpenAI, openai_model: Callable[..., dict[str, Any]]
) -> None:
    gw = gateways.with_model(openai_model())
    key = add_key(gw)
    fake_openai.then(OpenAIScript(end_after_chunks=10_000))  # every chunk, then no usage and no [DONE]
    reply, logs = gateways.chat(gw, key, stream=True)
    assert reply.status == 200 and reply.body.decode().rstrip().endswith("data: [DONE]")
    assert completion_line(logs, reply)["outcome"] == "ok"
    event = the_event(gw, key)
    assert event.status == "ok" and event.estimated  # no usage came: estimated, and said so


@pytest.mark.parametrize("stream", [False, True])
def test_openai_408_is_a_504_and_retried_when_allowed(
    gateways: Gateways,
    fake_openai: FakeOpenAI,
    openai_model: Callable[..., dict[str, Any]],
    stream: bool,
) -> None:
    gw = gateways.with_model(openai_model())
    key = add_key(gw)
    fake_openai.then(OpenAIScript(status=408))
    reply, logs = gateways.chat(gw, key, stream)
    assert_refused(reply, logs, 504, "upstream_timeout")
    assert len(fake_openai.requests) == 1
    assert the_event(gw, key).status == "error"

    retrying = gateways.with_model(openai_model(max_retries=1))
    other = add_key(retrying)
    fake_openai.then(OpenAIScript(status=408))  # then the default answer
    reply, logs = gateways.chat(retrying, other, stream)
    assert reply.status == 200 and len(fake_openai.requests) == 3
    (retry,) = logs.named("upstream_retry")
    assert retry["error"] == "upstream_timeout"
    assert the_event(retrying, other).status == "ok"


def test_openai_an_error_inside_a_200_body_is_a_502_with_its_message(
    gateways: Gateways, fake_openai: FakeOpenAI, openai_model: Callable[..., dict[str, Any]]
) -> None:
    gw = gateways.with_model(openai_model())
    key = add_key(gw)
    fake_openai.then(OpenAIScript(status=200, body={"error": {"message": "The engine is overloaded."}}))
    reply, logs = gateways.chat(gw, key)
    assert_refused(reply, logs, 502, "upstream_error")
    assert "The engine is overloaded." in reply.json()["error"]["message"]
    assert the_event(gw, key).status == "error"


# the bedrock backend ---------------------------------------------------------------------------


@pytest.fixture
def bedrock(gateways: Gateways, fake_bedrock: FakeBedrock) -> Callable[..., Container]:
    def gateway(**settings: Any) -> Container:
        spec = {"backend": "bedrock", "model_id": "anthropic.claude-fake-v1:0", "region": "us-east-1"}
        return gateways.with_model(spec, BackendDeps(aws_client_factory=fake_bedrock.client), **settings)

    return gateway


def test_bedrock_a_stream_that_stalls_past_the_deadline_ends_in_band(
    gateways: Gateways, bedrock: Callable[..., Container], fake_bedrock: FakeBedrock
) -> None:
    # The model stops after three events and never goes on: only the gateway's deadline ends it.
    # The deadline is real; it only has to cover opening the stream on a warm client (milliseconds:
    # the first request below makes and warms the boto3 client, which under load alone took > 1 s).
    gw = bedrock(request_timeout_s=2.0)
    warm = add_key(gw)
    assert gateways.chat(gw, warm)[0].status == 200
    key = add_key(gw)
    fake_bedrock.then(BedrockScript(stall_after_events=3))
    reply, logs = gateways.chat(gw, key, stream=True)
    assert reply.status == 200
    assert in_band_error(reply)["code"] == "upstream_timeout"
    line = completion_line(logs, reply)
    assert line["status"] == 200 and line["code"] == "upstream_timeout"
    event = the_event(gw, key)
    assert event.status == "error" and event.streamed and event.estimated and event.completion_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_bedrock_the_deadline_hit_while_opening_is_a_504(
    gateways: Gateways, bedrock: Callable[..., Container], fake_bedrock: FakeBedrock, stream: bool
) -> None:
    # The model never answers: only the deadline ends the call. The deadline is 5 s, not 1 s, so that
    # boto3 reaches the fake before it on a loaded machine (the stall must be hit while opening).
    gw = bedrock(request_timeout_s=5.0)
    key = add_key(gw)
    fake_bedrock.then(BedrockScript(stall_before_headers=True))
    reply, logs = gateways.chat(gw, key, stream)
    assert_refused(reply, logs, 504, "upstream_timeout")
    assert fake_bedrock.stall.reached.is_set()
    assert the_event(gw, key).status == "error"


@pytest.mark.parametrize(
    ("scripts", "status", "code", "tries"),
    [
        ([BedrockScript(status=418, error_type="TeapotException", message="short and stout")], 400,
         "upstream_rejected", 1),
        ([BedrockScript(status=599, error_type="BrandNewException")] * 3, 502, "upstream_error", 3),
        ([BedrockScript(status=424, error_type="ModelErrorException")], 502, "upstream_error", 1),  # not the client's
    ],
    ids=["unknown-4xx", "unknown-5xx-retried", "model-error-424"],
)  # fmt: skip
def test_bedrock_statuses_and_errors_it_does_not_know(
    gateways: Gateways,
    bedrock: Callable[..., Container],
    fake_bedrock: FakeBedrock,
    scripts: list[BedrockScript],
    status: int,
    code: str,
    tries: int,
) -> None:
    gw = bedrock()
    key = add_key(gw)
    fake_bedrock.then(*scripts)
    reply, logs = gateways.chat(gw, key)
    assert_refused(reply, logs, status, code)
    assert len(fake_bedrock.requests) == tries
    assert the_event(gw, key).status == "error"
