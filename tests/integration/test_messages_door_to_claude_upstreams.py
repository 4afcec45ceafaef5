"""The anthropic SDK drives `chatgw serve` through the Messages door to a Claude behind each same-dialect
backend: the fake Anthropic API (`anthropic`) and the fake Bedrock runtime's InvokeModel (`bedrock`,
`"api": "invoke"`). What the client wrote (thinking with its signature, cache_control, fields no door
knows) reaches the upstream unchanged; the upstream's thinking signature reaches the client unchanged,
buffered and streamed, and goes back again in a tool round trip; the cache tokens are exact in the
ledger; and the upstream's own errors and token count reach the client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types import Message

from tests.fakes.fake_anthropic import SIGNATURE, THINKING, FakeAnthropic
from tests.fakes.fake_anthropic import Script as AnthropicScript
from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_bedrock import Script as BedrockScript
from tests.support.messages_door import claude_upstreams
from tests.support.polling import eventually
from tests.support.sdk import anthropic_client
from tests.support.servers import Gateway, running_gateway

MODELS = ["claude-via-anthropic", "claude-via-bedrock"]
QUESTION = "What is the weather in Paris?"
CACHE_READ, CACHE_WRITE = 40, 8
ASIDE = {"model", "max_tokens", "stream", "anthropic_version"}
"""What a same-dialect backend may set in the client's body: the upstream's model name and output cap,
and what the transport wants (Anthropic's `stream`; Bedrock's `anthropic_version`, model in the path)."""


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, _anthropic_server: FakeAnthropic, _bedrock_server: FakeBedrock
) -> Iterator[Gateway]:
    catalog, env = claude_upstreams(_anthropic_server, _bedrock_server)
    with running_gateway(tmp_path_factory.mktemp("gw") / "state", {**env, "CHATGW_MODELS": json.dumps(catalog)}) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _fresh(fake_anthropic: FakeAnthropic, fake_bedrock: FakeBedrock) -> None:
    """The fake upstreams are reset before each test (the fixtures do it)."""


def client(gateway: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic_client(gateway.base_url, key)  # type: ignore[no-any-return]


def received(model: str, fake_anthropic: FakeAnthropic, fake_bedrock: FakeBedrock) -> list[dict[str, Any]]:
    """The message bodies the model's upstream received, without what the backend may set."""
    fake: Any = fake_anthropic if model == "claude-via-anthropic" else fake_bedrock
    bodies = [r.body for r in fake.requests if r.path.endswith(("/v1/messages", "/invoke", "-response-stream"))]
    return [{k: v for k, v in body.items() if k not in ASIDE} for body in bodies]


def expect_cache(model: str, fake_anthropic: FakeAnthropic, fake_bedrock: FakeBedrock, times: int) -> None:
    for _ in range(times):
        if model == "claude-via-anthropic":
            fake_anthropic.then(AnthropicScript(cache_read_tokens=CACHE_READ, cache_write_tokens=CACHE_WRITE))
        else:
            fake_bedrock.then(BedrockScript(cache_read_tokens=CACHE_READ, cache_write_tokens=CACHE_WRITE))


def ask(sdk: anthropic.Anthropic, body: dict[str, Any], stream: bool) -> Message:
    if stream:
        with sdk.messages.stream(**body) as events:
            return events.get_final_message()
    return sdk.messages.create(**body)


def first_turn(model: str) -> dict[str, Any]:
    """A Claude Code-like first turn: cached system block, a tool, thinking, a field no door knows."""
    return {
        "model": model,
        "max_tokens": 2048,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": QUESTION}],
        "extra_body": {"context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}},
    }


def as_sent(body: dict[str, Any]) -> dict[str, Any]:
    """The body as the SDK puts it on the wire (extra_body merged), without what the backend may set."""
    merged = {**{k: v for k, v in body.items() if k != "extra_body"}, **body.get("extra_body", {})}
    return {k: v for k, v in merged.items() if k not in ASIDE}


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
@pytest.mark.parametrize("model", MODELS)
def test_a_thinking_signature_and_a_tool_round_trip_survive_unchanged(
    gateway: Gateway, fake_anthropic: FakeAnthropic, fake_bedrock: FakeBedrock, model: str, stream: bool
) -> None:
    key = gateway.create_key()
    sdk = client(gateway, key)
    expect_cache(model, fake_anthropic, fake_bedrock, times=2)
    first = first_turn(model)
    answer = ask(sdk, first, stream)
    Message.model_validate(answer.model_dump())
    thought, call = answer.content
    assert (thought.type, call.type, answer.stop_reason) == ("thinking", "tool_use", "tool_use")
    assert (thought.thinking, thought.signature) == (THINKING, SIGNATURE)  # type: ignore[union-attr]
    assert call.input == {"query": QUESTION}  # type: ignore[union-attr]

    second = {
        **first,
        "messages": [
            {"role": "user", "content": QUESTION},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": thought.thinking, "signature": thought.signature},  # type: ignore[union-attr]
                    {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input},  # type: ignore[union-attr]
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": call.id,  # type: ignore[union-attr]
                        "content": "sunny",
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
        ],
    }
    final = ask(sdk, second, stream)
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].signature == SIGNATURE  # type: ignore[union-attr]
    assert final.content[1].text == "The tool said: sunny"  # type: ignore[union-attr]
    # the client's bodies reached the upstream as written: its thinking block with the signature, the
    # cache_control marks, the field no door knows
    assert received(model, fake_anthropic, fake_bedrock) == [as_sent(first), as_sent(second)]

    for usage in (answer.usage, final.usage):
        assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (CACHE_READ, CACHE_WRITE)
    store = gateway.store()
    events = eventually(lambda: len(e := store.usage_events(key.split("_")[1])) == 2 and e)
    store.close()
    # the ledger's input counts every input token (OpenAI's convention), the cache's among them
    assert sorted(
        (e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.cache_write_tokens) for e in events
    ) == sorted(
        (u.input_tokens + CACHE_READ + CACHE_WRITE, u.output_tokens, CACHE_READ, CACHE_WRITE)
        for u in (answer.usage, final.usage)
    )
    assert {(e.streamed, e.door, e.model) for e in events} == {(stream, "messages", model)}


UPSTREAM_400 = "messages.1.content.0: Invalid `signature` in `thinking` block"


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_the_upstreams_own_400_reaches_the_client_unchanged(
    gateway: Gateway, fake_anthropic: FakeAnthropic, stream: bool
) -> None:
    fake_anthropic.then(AnthropicScript(status=400, message=UPSTREAM_400))
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(client(gateway, gateway.key), first_turn("claude-via-anthropic"), stream)
    assert caught.value.status_code == 400
    assert caught.value.body["error"] == {"type": "invalid_request_error", "message": UPSTREAM_400}  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_an_overloaded_upstream_is_a_529_overloaded_error(
    gateway: Gateway, fake_anthropic: FakeAnthropic, stream: bool
) -> None:
    fake_anthropic.then(AnthropicScript(status=529, message="Overloaded"))
    with pytest.raises(anthropic.OverloadedError) as caught:  # the SDK's class for a 529
        ask(client(gateway, gateway.key), first_turn("claude-via-anthropic"), stream)
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


@pytest.mark.parametrize("model", MODELS)
def test_count_tokens_answers_the_upstreams_own_count(
    gateway: Gateway, fake_anthropic: FakeAnthropic, fake_bedrock: FakeBedrock, model: str
) -> None:
    words = "one two three four five six seven"
    counted = client(gateway, gateway.key).messages.count_tokens(
        model=model, messages=[{"role": "user", "content": words}]
    )
    assert counted.input_tokens == len(words.split())  # the fakes count words
    paths = [r.path for r in (fake_anthropic if model == "claude-via-anthropic" else fake_bedrock).requests]
    assert len(paths) == 1 and paths[0].endswith(("/v1/messages/count_tokens", "/count-tokens"))
