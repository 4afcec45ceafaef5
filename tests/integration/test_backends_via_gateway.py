"""The official openai SDK drives `chatgw serve` (a real process on loopback) whose catalog points at
the fake OpenAI-compatible upstream and the fake Bedrock runtime: buffered and streamed answers,
tool calls, exact usage in the responses and the ledger, error mapping, and pacing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_bedrock import Script as BedrockScript
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.fake_openai import Script as OpenAIScript
from tests.fakes.model import ANSWER
from tests.support.polling import eventually
from tests.support.sdk import openai_client
from tests.support.servers import Gateway, running_gateway

MODELS = ["gpt-fake", "claude-fake"]
QUESTION = "What is the capital of France?"
SYSTEM = "Be brief."
MESSAGES: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
PROMPT_TOKENS = len(SYSTEM.split()) + len(QUESTION.split())  # how the fake model counts
ANSWER_TOKENS = len(ANSWER.split())
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look something up",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    _openai_server: FakeOpenAI,
    _bedrock_server: FakeBedrock,
) -> Iterator[Gateway]:
    catalog = {
        "gpt-fake": {
            "backend": "openai",
            "base_url": _openai_server.base_url,
            "upstream_model": "gpt-upstream",
            "api_key_env": "FAKE_UPSTREAM_KEY",
        },
        "claude-fake": {"backend": "bedrock", "model_id": "anthropic.claude-fake-v1:0", "region": "us-east-1"},
    }
    env = {
        **FakeBedrock.AWS_ENV,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": _bedrock_server.url,
        "FAKE_UPSTREAM_KEY": "sk-upstream-via-env",
        "CHATGW_MODELS": json.dumps(catalog),
    }
    with running_gateway(tmp_path_factory.mktemp("gw") / "state", env) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _fresh_fakes(fake_openai: FakeOpenAI, fake_bedrock: FakeBedrock) -> None:
    """Both fakes reset before each test (the fixtures do it)."""


def sdk(gateway: Gateway, key: str | None = None) -> OpenAI:
    return openai_client(gateway.openai_base, key or gateway.key, max_retries=0, timeout=30)


@pytest.mark.parametrize("model", MODELS)
def test_buffered_answer_and_exact_usage(gateway: Gateway, model: str) -> None:
    completion = sdk(gateway).chat.completions.create(model=model, messages=MESSAGES, max_tokens=100)
    assert completion.model == model and completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (PROMPT_TOKENS, ANSWER_TOKENS)


@pytest.mark.parametrize("model", MODELS)
def test_streamed_answer_and_exact_usage(gateway: Gateway, model: str) -> None:
    chunks = list(
        sdk(gateway).chat.completions.create(
            model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and all(c.model == model for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (PROMPT_TOKENS, ANSWER_TOKENS)


def test_usage_is_asked_of_the_upstream_and_hidden_from_a_client_that_did_not_ask(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    key = gateway.create_key()
    chunks = list(sdk(gateway, key).chat.completions.create(model="gpt-fake", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks)
    (seen,) = fake_openai.requests
    assert seen.body["stream_options"] == {"include_usage": True} and seen.body["model"] == "gpt-upstream"
    assert seen.headers["authorization"] == "Bearer sk-upstream-via-env"
    assert gateway.key not in json.dumps(seen.headers) and key not in json.dumps(seen.headers)
    store = gateway.store()
    events = eventually(lambda: store.usage_events(key.split("_")[1]))
    store.close()
    assert len(events) == 1 and not events[0].estimated and events[0].backend == "openai"
    assert (events[0].prompt_tokens, events[0].completion_tokens) == (PROMPT_TOKENS, ANSWER_TOKENS)


@pytest.mark.parametrize("model", MODELS)
def test_tool_calls_buffered_streamed_and_answered(gateway: Gateway, model: str) -> None:
    client = sdk(gateway)
    first = client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS, tool_choice="required")
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"query": QUESTION}

    chunks = list(client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS, stream=True))
    deltas = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id == call.id and deltas[0].function and deltas[0].function.name == "lookup"
    assert json.loads("".join(d.function.arguments or "" for d in deltas if d.function)) == {"query": QUESTION}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]

    follow_up = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Paris"},
    ]
    answer = client.chat.completions.create(model=model, messages=follow_up, tools=TOOLS)
    assert answer.choices[0].message.content == "The tool said: Paris"


def test_upstream_4xx_reaches_the_client_as_400_with_its_message(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    fake_openai.then(OpenAIScript(status=400, body={"error": {"message": "context too long"}}))
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway).chat.completions.create(model="gpt-fake", messages=MESSAGES)
    assert "context too long" in str(caught.value)


def test_bedrock_throttling_reaches_the_client_as_429(gateway: Gateway, fake_bedrock: FakeBedrock) -> None:
    throttled = BedrockScript(status=429, error_type="ThrottlingException", message="Too many tokens")
    fake_bedrock.then(throttled, throttled, throttled)
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(gateway).chat.completions.create(model="claude-fake", messages=MESSAGES)
    assert caught.value.response.headers.get("retry-after")
    assert len(fake_bedrock.requests) == 3


@pytest.mark.parametrize("model", MODELS)
def test_an_upstream_failure_mid_stream_is_an_api_error(
    gateway: Gateway, model: str, fake_openai: FakeOpenAI, fake_bedrock: FakeBedrock
) -> None:
    fake_openai.then(OpenAIScript(drop_after_chunks=3))
    fake_bedrock.then(BedrockScript(exception_after_events=3))
    received = []
    with pytest.raises(openai.APIError):
        for chunk in sdk(gateway).chat.completions.create(model=model, messages=MESSAGES, stream=True):
            received.append(chunk)
    assert len(received) == 3


@pytest.mark.parametrize("model", MODELS)
def test_chunks_reach_the_client_while_the_upstream_is_still_answering(
    gateway: Gateway, model: str, fake_openai: FakeOpenAI, fake_bedrock: FakeBedrock
) -> None:
    gate = threading.Event()
    fake_openai.then(OpenAIScript(gate=gate))
    fake_bedrock.then(BedrockScript(gate=gate))
    upstream = fake_openai if model == "gpt-fake" else fake_bedrock
    arrivals: list[str] = []
    for chunk in sdk(gateway).chat.completions.create(model=model, messages=MESSAGES, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(chunk.choices[0].delta.content)
            if len(arrivals) == 1:
                # The upstream holds its last words until the gate opens: this word crossed the
                # gateway while the upstream was still answering.
                assert not gate.is_set() and not upstream.stream_completed.is_set()
                gate.set()
    assert not upstream.gate_timed_out
    assert len(arrivals) == ANSWER_TOKENS


@pytest.mark.parametrize("model", MODELS)
def test_a_client_that_leaves_mid_stream_leaves_the_upstream_read_to_its_end(
    gateway: Gateway, model: str, fake_openai: FakeOpenAI, fake_bedrock: FakeBedrock
) -> None:
    import httpx

    fake_openai.then(OpenAIScript(chunk_delay_s=0.1))
    fake_bedrock.then(BedrockScript(chunk_delay_s=0.1))
    upstream = fake_openai if model == "gpt-fake" else fake_bedrock
    body = {"model": model, "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {gateway.key}"}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", f"{gateway.openai_base}/chat/completions", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        events = response.iter_lines()
        assert next(line for line in events if line.startswith("data:"))
    # read on after the client left (CHATGW_DRAIN_SECONDS), for the upstream's own usage count
    assert upstream.stream_completed.wait(20), "the upstream was not read to its end"
    assert not upstream.stream_aborted.is_set()
