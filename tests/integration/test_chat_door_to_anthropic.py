"""The chat door in front of the `anthropic` backend (and of `bedrock` with `"api": "invoke"`, which
sends the same body), seen by the official openai SDK: the fake Anthropic server gets a Messages body
(system, tools, images), and the chat client gets OpenAI's shapes back: text, tool calls with their
arguments, a thinking model's text without its thinking, usage with the cache reads as
`prompt_tokens_details.cached_tokens`, buffered and streamed, and the ledger priced with them; an
overloaded upstream is a 502 to a chat client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from chatgw.compose import Container
from tests.fakes.fake_anthropic import FakeAnthropic, Script
from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_bedrock import Script as BedrockScript
from tests.fakes.model import ANSWER
from tests.support.keys import add_key
from tests.support.polling import eventually
from tests.support.sdk import openai_client
from tests.support.servers import ThreadServer

PRICE = {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75}
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
PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def gateway(
    make_container: Callable[..., Container],
    fake_anthropic: FakeAnthropic,
    fake_bedrock: FakeBedrock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Container, str, str]]:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-ant-fake")
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake_bedrock.url)
    invoke = {"backend": "bedrock", "api": "invoke", "model_id": "anthropic.claude-fake-v1:0", "region": "us-east-1"}
    models = {
        "claude": fake_anthropic.catalog_entry("claude", price_per_million_tokens=PRICE, max_image_tokens=1600),
        "claude-invoke": {**invoke, "max_retries": 0, "price_per_million_tokens": PRICE},
    }
    container = make_container(models=json.dumps(models))
    key = add_key(container)
    with ThreadServer(container.app) as server:
        yield container, server.base_url + "/v1", key


def client(gateway: tuple[Container, str, str]) -> openai.OpenAI:
    _, url, key = gateway
    return openai_client(url, key, max_retries=0)


def test_text_with_a_system_prompt_and_images(
    gateway: tuple[Container, str, str], fake_anthropic: FakeAnthropic
) -> None:
    content: Any = [
        {"type": "text", "text": "what is in this picture"},
        {"type": "image_url", "image_url": {"url": PIXEL}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    messages: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    answer = client(gateway).chat.completions.create(model="claude", messages=messages)
    assert answer.choices[0].message.content == ANSWER
    assert answer.choices[0].finish_reason == "stop"
    sent = fake_anthropic.requests[-1]
    assert sent.headers["x-api-key"] == "sk-ant-fake" and sent.body["model"] == "up-claude"
    assert sent.body["system"] == [{"type": "text", "text": "Be brief."}]
    media, data = PIXEL[len("data:") :].split(";base64,")
    assert sent.body["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]


@pytest.mark.parametrize("model", ["claude", "claude-invoke"])
@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_tool_calls_come_back_as_openai_tool_calls(
    gateway: tuple[Container, str, str], stream: bool, model: str
) -> None:
    messages: Any = [{"role": "user", "content": "capital of France"}]
    sdk = client(gateway)
    if stream:
        chunks = list(sdk.chat.completions.create(model=model, messages=messages, tools=TOOLS, stream=True))
        calls = [c for chunk in chunks for choice in chunk.choices for c in choice.delta.tool_calls or ()]
        assert {c.index for c in calls} == {0}
        assert calls[0].id == "call_fake_1" and calls[0].function is not None and calls[0].function.name == "lookup"
        arguments = "".join(c.function.arguments or "" for c in calls if c.function is not None)
        finish = [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    else:
        message = sdk.chat.completions.create(model=model, messages=messages, tools=TOOLS).choices[0]
        (call,) = message.message.tool_calls or []
        assert call.id == "call_fake_1" and call.function.name == "lookup"  # type: ignore[union-attr]
        arguments = call.function.arguments  # type: ignore[union-attr]
        finish = [message.finish_reason]
    assert json.loads(arguments) == {"query": "capital of France"}
    assert finish == ["tool_calls"]


def test_a_thinking_answer_reaches_a_chat_client_as_its_text(
    gateway: tuple[Container, str, str], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.then(Script(thinking=True))
    answer = client(gateway).chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == ANSWER


@pytest.mark.parametrize("model", ["claude", "claude-invoke"])
@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_cache_reads_and_writes_reach_the_client_and_the_ledger(
    gateway: tuple[Container, str, str],
    fake_anthropic: FakeAnthropic,
    fake_bedrock: FakeBedrock,
    stream: bool,
    model: str,
) -> None:
    container, _, key = gateway
    fake_anthropic.then(Script(cache_read_tokens=100, cache_write_tokens=50))
    fake_bedrock.then(BedrockScript(cache_read_tokens=100, cache_write_tokens=50))
    messages: Any = [{"role": "user", "content": "tell me about prompt caches"}]
    sdk = client(gateway)
    if stream:
        chunks = list(
            sdk.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}
            )
        )
        usage = chunks[-1].usage
    else:
        usage = sdk.chat.completions.create(model=model, messages=messages).usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 100
    assert usage.prompt_tokens == 5 + 100 + 50  # every input token, the cache's included
    served = fake_bedrock.requests if model == "claude-invoke" else fake_anthropic.requests
    assert len(served) == 1
    (event,) = eventually(lambda: container.store.usage_events(key.split("_")[1]))
    assert (event.prompt_tokens, event.cached_tokens, event.cache_write_tokens) == (155, 100, 50)
    cost = (5 * 3.0 + 100 * 0.3 + 50 * 3.75 + usage.completion_tokens * 15.0) / 1e6
    assert event.cost == pytest.approx(cost)


def test_an_overloaded_upstream_is_a_bad_gateway_to_a_chat_client(
    gateway: tuple[Container, str, str], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.then(Script(status=529, message="Overloaded"))
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert "overloaded" in caught.value.message.lower()
