"""The fake Anthropic server speaks what the anthropic SDK reads, by the SDK's own types: a backend
test against it is only worth what the fake is worth. Messages (thinking, tool_use, cache usage),
every stream event, the stream helper's final message, count_tokens and the error envelopes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from pydantic import TypeAdapter

from tests.fakes.fake_anthropic import SIGNATURE, THINKING, FakeAnthropic, Script
from tests.fakes.model import ANSWER

TOOLS: Any = [{"name": "lookup", "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]
EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


@pytest.fixture
def sdk(fake_anthropic: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake_anthropic.base_url, api_key="sk-ant-fake", max_retries=0) as client:
        yield client


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-fake", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **extra}


def test_buffered_messages_validate_with_thinking_tools_and_cache_usage(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.then(Script(thinking=True, cache_read_tokens=7, cache_write_tokens=3))
    with httpx.Client() as client:
        raw = client.post(f"{fake_anthropic.base_url}/v1/messages", json=body(tools=TOOLS)).json()
    message = Message.model_validate(raw, strict=True)
    assert [b.type for b in message.content] == ["thinking", "tool_use"]
    assert message.content[0].signature == SIGNATURE  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (7, 3)


def test_every_stream_event_validates_and_the_helper_builds_the_message(
    fake_anthropic: FakeAnthropic, sdk: anthropic.Anthropic
) -> None:
    with (
        httpx.Client() as client,
        client.stream(
            "POST",
            f"{fake_anthropic.base_url}/v1/messages",
            json=body(stream=True, thinking={"type": "enabled", "budget_tokens": 1024}),
        ) as response,
    ):
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    events = [EVENTS.validate_json(line[len("data: ") :]) for line in lines if '"ping"' not in line]
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    with sdk.messages.stream(**body(tools=TOOLS, tool_choice={"type": "none"})) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == ANSWER  # type: ignore[union-attr]
    with sdk.messages.stream(**body(thinking={"type": "enabled", "budget_tokens": 1024})) as stream:
        thought = stream.get_final_message()
    assert thought.content[0].type == "thinking" and thought.content[0].thinking == THINKING


def test_count_tokens_validates(sdk: anthropic.Anthropic) -> None:
    count = sdk.messages.count_tokens(model="claude-fake", messages=[{"role": "user", "content": "a b c"}])
    assert MessageTokensCount.model_validate(count.model_dump(), strict=True).input_tokens == 3


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (429, anthropic.RateLimitError),
        (529, anthropic.OverloadedError),
        (500, anthropic.InternalServerError),
    ],
)
def test_error_statuses_are_the_sdks_errors(
    fake_anthropic: FakeAnthropic, sdk: anthropic.Anthropic, status: int, kind: type[Exception]
) -> None:
    fake_anthropic.then(Script(status=status, message="scripted"))
    with pytest.raises(kind) as caught:
        sdk.messages.create(**body())
    assert "scripted" in str(caught.value)
