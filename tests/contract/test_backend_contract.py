"""One contract for the `ChatBackend` interface, run against every adapter: the echo model, the
openai backend in front of the fake OpenAI server (chat completions) and the fake Responses server
(`api: responses`), the bedrock backend in front of the fake
Bedrock runtime (through the real boto3 client)."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from chatgw.backends import ADAPTERS, build_backend
from chatgw.backends.base import BackendDeps, ChatBackend
from chatgw.conversation import Conversation, Delta, Event
from chatgw.deadline import Deadline
from chatgw.errors import UnsupportedParameter
from tests.fakes import fake_bedrock, fake_openai, fake_responses
from tests.support.backend_calls import answer_text, chat, stops, streamed_text, usages
from tests.support.backend_calls import collect as collect_stream

T = TypeVar("T")
QUESTION = "please answer with a few words of text"


@dataclass
class Harness:
    kind: str
    options: dict[str, Any]
    deps: Callable[[], BackendDeps]
    slow: Callable[[], None] = lambda: None
    """Make the next streamed answer stall after a few events (until closed), so that closing it is
    the only way it ends."""
    aborted: Callable[[float], bool] | None = None
    """Waits until the upstream saw the client go away (None: the adapter has no upstream)."""
    refused: list[dict[str, Any]] = field(default_factory=list)
    """Request fields that `check` must refuse, each naming its parameter."""
    stop_sequences: bool = True
    """The upstream honours stop sequences (OpenAI's Responses API has none: `stop` is refused instead)."""

    def backend(self, deps: BackendDeps) -> ChatBackend:
        return build_backend(self.kind, "contract-model", self.options, deps)


def _echo(request: pytest.FixtureRequest) -> Harness:
    # No skip when a module is missing: a renamed adapter fails here (build_backend), loudly.
    return Harness("echo", {}, BackendDeps, refused=[{"logprobs": True}])


def _openai(request: pytest.FixtureRequest) -> Harness:
    server: fake_openai.FakeOpenAI = request.getfixturevalue("fake_openai")
    return Harness(
        "openai",
        {
            "base_url": server.base_url,
            "upstream_model": "gpt-fake",
            "unsupported_params": ["logprobs", "seed"],
        },
        BackendDeps,
        slow=lambda: server.then(fake_openai.Script(stall_after_chunks=3)),
        aborted=server.stream_aborted.wait,
        refused=[{"logprobs": True}, {"seed": 7}],
    )


def _bedrock(request: pytest.FixtureRequest) -> Harness:
    server: fake_bedrock.FakeBedrock = request.getfixturevalue("fake_bedrock")
    return Harness(
        "bedrock",
        {"model_id": "anthropic.claude-fake-v1:0", "region": "us-east-1"},
        lambda: BackendDeps(aws_client_factory=server.client),
        slow=lambda: server.then(fake_bedrock.Script(stall_after_events=3)),
        aborted=server.stream_aborted.wait,
        refused=[{"logprobs": True}, {"seed": 7}, {"n": 2}, {"frequency_penalty": 0.5}],
    )


def _openai_responses(request: pytest.FixtureRequest) -> Harness:
    server: fake_responses.FakeResponses = request.getfixturevalue("fake_responses")
    return Harness(
        "openai",
        {"base_url": server.base_url, "upstream_model": "gpt-fake", "api": "responses"},
        BackendDeps,
        slow=lambda: server.then(fake_responses.Script(stall_after_events=5)),
        aborted=server.stream_aborted.wait,
        refused=[{"logprobs": True}, {"seed": 7}, {"n": 2}, {"stop": ["x"]}, {"frequency_penalty": 0.5}],
        stop_sequences=False,
    )


HARNESSES = {
    "echo": _echo,
    "openai": _openai,
    "openai-responses": _openai_responses,
    "bedrock": _bedrock,
}


@pytest.fixture(params=list(HARNESSES.values()), ids=list(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    yield request.param(request)


def test_every_adapter_runs_the_contract() -> None:
    """A new or renamed adapter cannot slip out of the contract: each is imported and has a harness."""
    assert set(ADAPTERS) <= set(HARNESSES)
    for module in ADAPTERS.values():
        assert callable(importlib.import_module(module).from_options)


def run(harness: Harness, scenario: Callable[[ChatBackend], Coroutine[Any, Any, T]]) -> T:
    async def main() -> T:
        deps = harness.deps()
        backend = harness.backend(deps)
        try:
            return await scenario(backend)
        finally:
            await backend.aclose()
            await deps.aclose()

    return asyncio.run(main())


def ask(stream: bool = False, **params: Any) -> Conversation:
    return chat("contract-model", QUESTION, stream=stream, **params)


async def collect(backend: ChatBackend, request: Conversation) -> list[Event]:
    backend.check(request)
    events, error = await collect_stream(backend.stream(request, Deadline.in_seconds(30)))
    if error is not None:
        raise error
    return events


# These tests assert on the conversation model: it is the contract every backend keeps, whatever
# door renders it (the chat door's rendering is tested with the door).


def test_buffered_answer_has_text_stop_reason_and_usage(harness: Harness) -> None:
    async def scenario(backend: ChatBackend) -> None:
        request = ask()
        backend.check(request)
        answer = await backend.complete(request, Deadline.in_seconds(30))
        assert len(answer.outputs) == 1
        output = answer.outputs[0]
        assert output.index == 0
        assert answer_text(answer)
        assert output.stop == "end"
        assert answer.usage is not None
        assert answer.usage.input > 0 and answer.usage.output > 0

    run(harness, scenario)


def test_stream_opens_then_sends_text_then_one_stop_then_usage(harness: Harness) -> None:
    async def scenario(backend: ChatBackend) -> None:
        buffered = await backend.complete(ask(), Deadline.in_seconds(30))
        events = await collect(backend, ask(stream=True, stream_options={"include_usage": True}))
        with_deltas = [e for e in events if e.deltas]
        assert with_deltas[0].deltas == [Delta()]  # the opening step: no text, no tool call, no stop yet
        assert stops(events) == ["end"]
        assert with_deltas[-1].deltas[-1].stop == "end"  # nothing but usage after the stop
        assert streamed_text(events) == answer_text(buffered)
        said = usages(events)
        assert len(said) == 1 and events[-1].usage is said[0]
        assert said[0].output > 0
        assert said[0].input == (buffered.usage.input if buffered.usage else None)

    run(harness, scenario)


def test_max_tokens_is_honoured(harness: Harness) -> None:
    async def scenario(backend: ChatBackend) -> None:
        full = await backend.complete(ask(), Deadline.in_seconds(30))
        capped = await backend.complete(ask(max_tokens=2), Deadline.in_seconds(30))
        assert capped.outputs[0].stop == "length"
        assert capped.usage is not None and capped.usage.output <= 2
        assert answer_text(full).startswith(answer_text(capped))
        events = await collect(backend, ask(stream=True, max_completion_tokens=2))
        assert stops(events) == ["length"]
        assert streamed_text(events) == answer_text(capped)

    run(harness, scenario)


def test_stop_sequences_are_honoured(harness: Harness) -> None:
    if not harness.stop_sequences:
        pytest.skip("this upstream has no stop sequences; `stop` is in its refused list")

    async def scenario(backend: ChatBackend) -> None:
        full = answer_text(await backend.complete(ask(), Deadline.in_seconds(30)))
        stop = full.split()[2]
        expected = full[: full.index(stop)]
        cut = await backend.complete(ask(stop=[stop]), Deadline.in_seconds(30))
        # Whitespace before the stop sequence is the model's business (tokenization): compare without it.
        assert answer_text(cut).rstrip() == expected.rstrip()
        # OpenAI's chat dialect does not tell a stop sequence from the natural end ("stop" for both),
        # so either is kept; a chat client sees "stop" for both.
        assert cut.outputs[0].stop in ("stop_sequence", "end")
        events = await collect(backend, ask(stream=True, stop=stop))
        assert streamed_text(events).rstrip() == expected.rstrip()
        assert stops(events) in (["stop_sequence"], ["end"])

    run(harness, scenario)


def test_unsupported_parameters_are_refused_by_check_naming_them(harness: Harness) -> None:
    async def scenario(backend: ChatBackend) -> None:
        for params in harness.refused:
            with pytest.raises(UnsupportedParameter) as caught:
                backend.check(ask(**params))
            (name,) = params
            assert caught.value.param == name
            assert f"`{name}`" in caught.value.message
        backend.check(ask(temperature=0.5, max_tokens=10))

    run(harness, scenario)


def test_closing_the_stream_closes_the_upstream_call(harness: Harness) -> None:
    async def scenario(backend: ChatBackend) -> None:
        harness.slow()
        stream = backend.stream(ask(stream=True), Deadline.in_seconds(30))
        first = await anext(stream)
        second = await anext(stream)
        while not second.deltas:  # an event kept only for a door of the upstream's dialect
            second = await anext(stream)
        assert first.deltas == [Delta()] and second.deltas
        await stream.aclose()  # type: ignore[attr-defined]
        if harness.aborted is not None:
            # the upstream stalls until closed, so this is causality; 30 s only bounds a bug
            assert await asyncio.to_thread(harness.aborted, 30), "the upstream never saw the client leave"

    run(harness, scenario)
