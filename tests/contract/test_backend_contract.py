"""One contract for the `ChatBackend` interface, run against every adapter: the echo model, the
openai backend in front of the fake OpenAI server, the bedrock backend in front of the fake
Bedrock runtime (through the real boto3 client)."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from chatgw.api.openai_chat.completion import Piece
from chatgw.api.openai_chat.wire import ChatRequest
from chatgw.backends import ADAPTERS, build_backend
from chatgw.backends.base import BackendDeps, ChatBackend, Deadline
from chatgw.errors import UnsupportedParameter
from tests.fakes import fake_bedrock, fake_openai

T = TypeVar("T")
QUESTION = "please answer with a few words of text"


@dataclass
class Harness:
    kind: str
    options: dict[str, Any]
    deps: Callable[[], BackendDeps]
    slow: Callable[[], None] = lambda: None
    """Make the next streamed answer stall after a few pieces (until closed), so that closing it is
    the only way it ends."""
    aborted: Callable[[float], bool] | None = None
    """Waits until the upstream saw the client go away (None: the adapter has no upstream)."""
    refused: list[dict[str, Any]] = field(default_factory=list)
    """Request fields that `check` must refuse, each naming its parameter."""

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


HARNESSES = {"echo": _echo, "openai": _openai, "bedrock": _bedrock}


@pytest.fixture(params=list(HARNESSES.values()), ids=list(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    yield request.param(request)


def test_every_adapter_runs_the_contract() -> None:
    """A new or renamed adapter cannot slip out of the contract: each is imported and has a harness."""
    assert set(HARNESSES) == set(ADAPTERS)
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


def ask(stream: bool = False, **params: Any) -> ChatRequest:
    body = {"model": "contract-model", "messages": [{"role": "user", "content": QUESTION}], **params}
    if stream:
        body["stream"] = True
    return ChatRequest.model_validate(body)


async def collect(backend: ChatBackend, request: ChatRequest) -> list[Piece]:
    backend.check(request)
    return [piece async for piece in backend.stream(request, Deadline.in_seconds(30))]


def streamed_text(pieces: list[Piece]) -> str:
    return "".join(c.delta.get("content") or "" for p in pieces for c in p.choices)


def test_buffered_answer_has_text_finish_reason_and_usage(harness: Harness) -> None:
    async def scenario(backend: ChatBackend) -> None:
        request = ask()
        backend.check(request)
        completion = await backend.complete(request, Deadline.in_seconds(30))
        assert len(completion.choices) == 1
        choice = completion.choices[0]
        assert choice.index == 0
        assert isinstance(choice.content, str) and choice.content
        assert choice.finish_reason == "stop"
        assert completion.usage is not None
        assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0

    run(harness, scenario)


def test_stream_sends_role_first_then_content_then_finish_then_usage(harness: Harness) -> None:
    async def scenario(backend: ChatBackend) -> None:
        buffered = await backend.complete(ask(), Deadline.in_seconds(30))
        pieces = await collect(backend, ask(stream=True, stream_options={"include_usage": True}))
        with_choices = [p for p in pieces if p.choices]
        assert with_choices[0].choices[0].delta.get("role") == "assistant"
        assert all("role" not in c.delta for p in with_choices[1:] for c in p.choices)
        finishes = [c.finish_reason for p in with_choices for c in p.choices if c.finish_reason]
        assert finishes == ["stop"]
        assert with_choices[-1].choices[0].finish_reason == "stop"
        assert streamed_text(pieces) == buffered.choices[0].content
        usages = [p.usage for p in pieces if p.usage is not None]
        assert len(usages) == 1 and pieces[-1].usage is usages[0]
        assert usages[0].completion_tokens > 0
        assert usages[0].prompt_tokens == (buffered.usage.prompt_tokens if buffered.usage else None)

    run(harness, scenario)


def test_max_tokens_is_honoured(harness: Harness) -> None:
    async def scenario(backend: ChatBackend) -> None:
        full = await backend.complete(ask(), Deadline.in_seconds(30))
        capped = await backend.complete(ask(max_tokens=2), Deadline.in_seconds(30))
        assert capped.choices[0].finish_reason == "length"
        assert capped.usage is not None and capped.usage.completion_tokens <= 2
        assert (full.choices[0].content or "").startswith(capped.choices[0].content or "")
        pieces = await collect(backend, ask(stream=True, max_completion_tokens=2))
        assert [c.finish_reason for p in pieces for c in p.choices if c.finish_reason] == ["length"]
        assert streamed_text(pieces) == capped.choices[0].content

    run(harness, scenario)


def test_stop_sequences_are_honoured(harness: Harness) -> None:
    async def scenario(backend: ChatBackend) -> None:
        full = (await backend.complete(ask(), Deadline.in_seconds(30))).choices[0].content or ""
        stop = full.split()[2]
        expected = full[: full.index(stop)]
        cut = await backend.complete(ask(stop=[stop]), Deadline.in_seconds(30))
        # Whitespace before the stop sequence is the model's business (tokenization): compare without it.
        assert (cut.choices[0].content or "").rstrip() == expected.rstrip()
        assert cut.choices[0].finish_reason == "stop"
        pieces = await collect(backend, ask(stream=True, stop=stop))
        assert streamed_text(pieces).rstrip() == expected.rstrip()

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
        first = await anext(stream)  # type: ignore[call-overload]
        second = await anext(stream)  # type: ignore[call-overload]
        assert first.choices[0].delta.get("role") == "assistant" and second.choices
        await stream.aclose()  # type: ignore[attr-defined]
        if harness.aborted is not None:
            # the upstream stalls until closed, so this is causality; 30 s only bounds a bug
            assert await asyncio.to_thread(harness.aborted, 30), "the upstream never saw the client leave"

    run(harness, scenario)
