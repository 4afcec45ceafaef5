"""Usage details end to end, seen by the official openai SDK: cached input tokens, cache-write tokens
and reasoning tokens from the fake OpenAI upstream and the fake Bedrock runtime, buffered and
streamed, reach the client in OpenAI's shape, the usage event and the aggregates, priced at their
own rates; and the cost stored when an event was written does not move when a price changes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from chatgw.access.limits import month_of
from chatgw.cli.usage import usage_report
from chatgw.compose import Container, build
from chatgw.store import UsageEvent, UsageQuery
from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_bedrock import Script as BedrockScript
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.fake_openai import Script as OpenAIScript
from tests.support.keys import add_key
from tests.support.polling import eventually
from tests.support.sdk import openai_client
from tests.support.servers import ThreadServer

USER: Any = [{"role": "user", "content": "tell me about prompt caches"}]
OPENAI_PRICE = {"input": 1.0, "output": 2.0, "cached_input": 0.5}
BEDROCK_PRICE = {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75}


@pytest.fixture(params=["sqlite", "dynamodb"])
def gateway(
    request: pytest.FixtureRequest,
    make_container: Callable[..., Container],
    fake_openai: FakeOpenAI,
    fake_bedrock: FakeBedrock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Container]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake_bedrock.url)
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-fake")
    models = {
        "gpt": {
            "backend": "openai",
            "base_url": fake_openai.base_url,
            "api_key_env": "FAKE_UPSTREAM_KEY",
            "price_per_million_tokens": OPENAI_PRICE,
        },
        "claude": {
            "backend": "bedrock",
            "model_id": "anthropic.claude-fake-v1:0",
            "region": "us-east-1",
            "price_per_million_tokens": BEDROCK_PRICE,
        },
    }
    container = make_container(models=json.dumps(models))
    if request.param == "sqlite":
        yield container
        return
    from chatgw.store.dynamodb.store import DynamoStore
    from chatgw.store.dynamodb.tables import make_client

    tables = request.getfixturevalue("dynamo_tables")
    store = DynamoStore(make_client(endpoint_url=tables.endpoint, region="us-east-1"), tables.keys, tables.usage)
    yield build(container.settings, store=store, catalog=container.catalog)
    store.close()


def ask(gateway: Container, model: str, stream: bool) -> tuple[Any, str]:
    key = add_key(gateway)
    with ThreadServer(gateway.app) as server:
        sdk = openai_client(server.base_url + "/v2/llms", key, max_retries=0)
        if stream:
            chunks = list(
                sdk.chat.completions.create(
                    model=model, messages=USER, stream=True, stream_options={"include_usage": True}
                )
            )
            assert chunks[-1].choices == []
            usage = chunks[-1].usage
        else:
            usage = sdk.chat.completions.create(model=model, messages=USER).usage
    assert usage is not None
    return usage, key.split("_")[1]


def ledger(gateway: Container, key_id: str) -> tuple[UsageEvent, dict[str, Any]]:
    (event,) = eventually(lambda: gateway.store.usage_events(key_id))
    (row,) = usage_report(gateway.store, UsageQuery("month", month_of(event.at), key_id=key_id), gateway.settings)
    return event, row


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_openai_cached_and_reasoning_tokens_reach_client_and_ledger(
    gateway: Container, fake_openai: FakeOpenAI, stream: bool
) -> None:
    fake_openai.then(OpenAIScript(cached_tokens=3, reasoning_tokens=7))
    usage, key_id = ask(gateway, "gpt", stream)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 3
    assert usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 7
    event, row = ledger(gateway, key_id)
    assert (event.prompt_tokens, event.completion_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    assert (event.cached_tokens, event.cache_write_tokens, event.reasoning_tokens) == (3, 0, 7)
    cost = ((usage.prompt_tokens - 3) * 1.0 + 3 * 0.5 + usage.completion_tokens * 2.0) / 1e6
    assert event.cost == pytest.approx(cost)
    assert (row["cached_tokens"], row["reasoning_tokens"], row["cost"]) == (3, 7, pytest.approx(cost))


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_bedrock_cache_reads_and_writes_reach_client_and_ledger(
    gateway: Container, fake_bedrock: FakeBedrock, stream: bool
) -> None:
    fake_bedrock.then(BedrockScript(cache_read_tokens=100, cache_write_tokens=50))
    usage, key_id = ask(gateway, "claude", stream)
    details = usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == 100
    assert getattr(details, "cache_write_tokens", None) == 50
    plain = usage.prompt_tokens - 150
    assert plain > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    event, row = ledger(gateway, key_id)
    assert (event.cached_tokens, event.cache_write_tokens, event.reasoning_tokens) == (100, 50, 0)
    cost = (plain * 3.0 + 100 * 0.3 + 50 * 3.75 + usage.completion_tokens * 15.0) / 1e6
    assert event.cost == pytest.approx(cost)
    assert (row["cached_tokens"], row["cache_write_tokens"], row["cost"]) == (100, 50, pytest.approx(cost))


def test_a_price_change_does_not_move_a_past_month(gateway: Container, fake_openai: FakeOpenAI) -> None:
    key = add_key(gateway)
    key_id = key.split("_")[1]
    last_month = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)
    gateway.service.wall_clock = lambda: last_month
    with ThreadServer(gateway.app) as server:
        openai_client(server.base_url + "/v1", key, max_retries=0).chat.completions.create(model="gpt", messages=USER)
    (before,) = eventually(lambda: usage_report(gateway.store, UsageQuery("month", "2026-10"), gateway.settings))

    # The operator raises the price tenfold; the gateway restarts with the new catalog, same store.
    repriced = json.loads(gateway.settings.models or "{}")
    repriced["gpt"]["price_per_million_tokens"] = {"input": 10.0, "output": 20.0}
    after_change = build(
        gateway.settings.__class__(**{**_fields(gateway), "models": json.dumps(repriced)}), store=gateway.store
    )
    with ThreadServer(after_change.app) as server:
        openai_client(server.base_url + "/v1", key, max_retries=0).chat.completions.create(model="gpt", messages=USER)
    this_month = month_of(datetime.now(UTC))
    now_rows = eventually(
        lambda: usage_report(gateway.store, UsageQuery("month", this_month, key_id=key_id), gateway.settings)
    )
    (past,) = usage_report(gateway.store, UsageQuery("month", "2026-10"), gateway.settings)
    assert past == before  # same tokens, same cost
    (current,) = now_rows
    assert current["total_tokens"] == past["total_tokens"]
    assert current["cost"] == pytest.approx(past["cost"] * 10)


def _fields(container: Container) -> dict[str, Any]:
    settings = container.settings
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}
