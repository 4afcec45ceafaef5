"""The official openai SDK against `chatgw serve`, a real process on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from chatgw.access.keys import Limits
from chatgw.metering.estimate import estimate_prompt_tokens
from tests.support.conversations import conversation_of
from tests.support.polling import eventually
from tests.support.sdk import openai_client
from tests.support.servers import Gateway, running_gateway

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("gw") / "state") as gw:
        yield gw


def client(gateway: Gateway, key: str | None = None, v1: bool = False) -> OpenAI:
    base = f"{gateway.base_url}/v1" if v1 else gateway.openai_base
    return openai_client(base, key or gateway.key, max_retries=0, timeout=20)


def test_buffered(gateway: Gateway) -> None:
    completion = client(gateway).chat.completions.create(model="echo", messages=MESSAGES, temperature=0.7)  # type: ignore[arg-type]
    assert completion.object == "chat.completion"
    assert completion.model == "echo"
    assert completion.choices[0].message.content == "What is the capital of France?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 6
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 6


def test_v1_base_url_works_too(gateway: Gateway) -> None:
    completion = client(gateway, v1=True).chat.completions.create(model="echo", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "What is the capital of France?"
    assert [m.id for m in client(gateway, v1=True).models.list()] == ["echo"]


def test_streaming_with_usage(gateway: Gateway) -> None:
    stream = client(gateway).chat.completions.create(
        model="echo",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=4,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "What is the capital"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert len({c.id for c in chunks}) == 1


def test_streaming_without_usage_hides_it(gateway: Gateway) -> None:
    chunks = list(client(gateway).chat.completions.create(model="echo", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_models_list_through_the_sdk(gateway: Gateway) -> None:
    models = client(gateway).models.list()
    assert [(m.id, m.owned_by) for m in models] == [("echo", "chatgw-development")]
    assert client(gateway).models.retrieve("echo").id == "echo"


def test_400_bad_request(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(gateway).chat.completions.create(model="echo", messages=MESSAGES, temperature=3)  # type: ignore[arg-type]
    assert info.value.code == "invalid_value"
    assert info.value.param == "temperature"
    assert info.value.request_id


def test_400_unknown_parameter(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(gateway).chat.completions.create(
            model="echo",
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_body={"api_base": "http://169.254.169.254"},
        )
    assert info.value.param == "api_base"


def test_401_unknown_key(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(gateway, key="cgw_aaaaaaaaaaaa_" + "B" * 33).chat.completions.create(model="echo", messages=MESSAGES)  # type: ignore[arg-type]


def test_404_model_not_allowed(gateway: Gateway) -> None:
    """A model the key may not use is answered as if it did not exist (a key cannot map the catalog)."""
    key = gateway.create_key(allowed_models=("gpt-*",))
    with pytest.raises(openai.NotFoundError) as info:
        client(gateway, key=key).chat.completions.create(model="echo", messages=MESSAGES)  # type: ignore[arg-type]
    assert "The model `echo` does not exist." in info.value.message


def test_403_streaming_not_allowed(gateway: Gateway) -> None:
    key = gateway.create_key(allow_streaming=False)
    with pytest.raises(openai.PermissionDeniedError):
        client(gateway, key=key).chat.completions.create(model="echo", messages=MESSAGES, stream=True)  # type: ignore[arg-type]


def test_404_unknown_model(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(gateway).chat.completions.create(model="gpt-nope", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"


def test_429_rate_limit(gateway: Gateway) -> None:
    key = gateway.create_key(limits=Limits(requests_per_minute=1))
    sdk = client(gateway, key=key)
    raw = sdk.chat.completions.with_raw_response.create(model="echo", messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.headers["x-ratelimit-limit-requests"] == "1"
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="echo", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.code == "rate_limit_exceeded"
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60


def test_429_budget(gateway: Gateway) -> None:
    """The budget covers exactly one reservation (prompt estimate + max_tokens): the first request
    is admitted, and once its actual tokens are settled the second no longer fits."""
    reserve = estimate_prompt_tokens(conversation_of({"model": "echo", "messages": MESSAGES})) + 50
    key = gateway.create_key(limits=Limits(monthly_token_budget=reserve))
    sdk = client(gateway, key=key)
    sdk.chat.completions.create(model="echo", messages=MESSAGES, max_tokens=50)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="echo", messages=MESSAGES, max_tokens=50)  # type: ignore[arg-type]
    assert info.value.code == "insufficient_quota"


def test_usage_ledger_matches_the_responses(gateway: Gateway) -> None:
    key = gateway.create_key()
    sdk = client(gateway, key=key)
    total = 0
    for _ in range(3):
        total += sdk.chat.completions.create(model="echo", messages=MESSAGES).usage.total_tokens  # type: ignore[arg-type,union-attr]
    chunks = list(
        sdk.chat.completions.create(
            model="echo",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    total += chunks[-1].usage.total_tokens  # type: ignore[union-attr]
    store = gateway.store()
    events = eventually(
        lambda: len(store.usage_events(key.split("_")[1])) == 4 and store.usage_events(key.split("_")[1])
    )
    store.close()
    assert events and len(events) == 4
    assert sum(e.total_tokens for e in events) == total
    assert [e.streamed for e in events] == [False, False, False, True]
