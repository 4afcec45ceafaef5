"""Fallbacks, built by the real `load_catalog` from CHATGW_MODELS, on both stores: a fallback the key
may not use is never called (the fake upstream counts its calls); a permitted one is booked under
the model that served, at that model's price; a chain that fails as a whole names the requested
model; the log line lists each model's outcome."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator

import pytest

from chatgw.access.limits import month_of
from chatgw.compose import Container, build
from chatgw.metering.estimate import estimate_prompt_tokens
from chatgw.store import UsageQuery
from tests.fakes.fake_openai import FakeOpenAI, Script
from tests.support.conversations import conversation_of
from tests.support.keys import add_key
from tests.support.polling import eventually
from tests.support.sdk import openai_client
from tests.support.servers import ThreadServer

USER = [{"role": "user", "content": "hi there"}]
BACKUP_PRICE = {"input": 2.0, "output": 4.0}


def catalog(upstream: FakeOpenAI) -> str:
    model = upstream.catalog_entry
    return json.dumps(
        {
            "primary": model(
                "primary", fallbacks=["forbidden", "backup"], price_per_million_tokens={"input": 100, "output": 100}
            ),
            "forbidden": model("forbidden"),
            "backup": model("backup", price_per_million_tokens=BACKUP_PRICE),
        }
    )


@pytest.fixture(params=["sqlite", "dynamodb"])
def gateway(
    request: pytest.FixtureRequest,
    make_container: Callable[..., Container],
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Container]:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-fake")
    container = make_container(models=catalog(fake_openai))
    if request.param == "sqlite":
        yield container
        return
    from chatgw.store.dynamodb.store import DynamoStore
    from chatgw.store.dynamodb.tables import make_client

    tables = request.getfixturevalue("dynamo_tables")
    store = DynamoStore(make_client(endpoint_url=tables.endpoint, region="us-east-1"), tables.keys, tables.usage)
    dynamo = build(container.settings, store=store, catalog=container.catalog)
    yield dynamo
    store.close()


def calls(upstream: FakeOpenAI) -> list[str]:
    return [str(r.body["model"]) for r in upstream.requests]


@pytest.mark.parametrize("stream", [False, True])
def test_a_fallback_outside_the_allow_list_is_never_called(
    gateway: Container, fake_openai: FakeOpenAI, stream: bool
) -> None:
    assert [e.name for e in gateway.catalog.chain("primary")] == ["primary", "forbidden", "backup"]
    key = add_key(gateway, allowed_models=("primary", "backup"))
    key_id = key.split("_")[1]
    fake_openai.then(Script(status=500))
    with ThreadServer(gateway.app) as server:
        sdk = openai_client(server.base_url + "/v1", key, max_retries=0)
        if stream:
            chunks = list(
                sdk.chat.completions.create(
                    model="primary", messages=USER, stream=True, stream_options={"include_usage": True}
                )
            )
            usage = chunks[-1].usage
            assert {c.model for c in chunks} == {"primary"}
        else:
            completion = sdk.chat.completions.create(model="primary", messages=USER)
            usage = completion.usage
            assert completion.model == "primary"
    assert calls(fake_openai) == ["up-primary", "up-backup"]  # never "up-forbidden"
    assert usage is not None
    (event,) = eventually(lambda: gateway.store.usage_events(key_id))
    assert (event.model, event.served_model, event.status) == ("primary", "backup", "ok")
    # The primary's 500 came after it read the prompt: the ledger books that prompt too (estimated).
    failed_hop = estimate_prompt_tokens(conversation_of({"model": "primary", "messages": USER}))
    assert event.estimated and event.prompt_tokens == usage.prompt_tokens + failed_hop
    expected_cost = (event.prompt_tokens * 2.0 + usage.completion_tokens * 4.0) / 1e6
    assert event.cost == pytest.approx(expected_cost)
    by_model = gateway.store.usage(UsageQuery("month", month_of(event.at), key_id=key_id, by_model=True))
    assert [(r.model, r.total_tokens, r.cost) for r in by_model] == [
        ("backup", usage.total_tokens + failed_hop, pytest.approx(expected_cost))
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_a_chain_that_fails_names_the_requested_model(
    gateway: Container, fake_openai: FakeOpenAI, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    key = add_key(gateway, allowed_models=("primary", "backup"))
    fake_openai.then(Script(status=500), Script(status=503))
    body = {"model": "primary", "messages": USER, "stream": stream}
    import httpx

    with caplog.at_level(logging.INFO, logger="chatgw"), ThreadServer(gateway.app) as server:
        reply = httpx.post(server.base_url + "/v1/chat/completions", json=body, headers={"x-api-key": key}, timeout=10)
    assert reply.status_code == 502
    message = reply.json()["error"]["message"]
    assert message.startswith("The model `primary` failed and its fallbacks (`backup`) failed too.")
    assert calls(fake_openai) == ["up-primary", "up-backup"]
    (line,) = [r for r in caplog.records if r.getMessage() == "fallback_chain"]
    assert line.fields["chain"] == [  # type: ignore[attr-defined]
        {"model": "primary", "outcome": "upstream_error"},
        {"model": "backup", "outcome": "upstream_error"},
    ]


def test_a_key_allowed_only_the_primary_gets_no_fallback(gateway: Container, fake_openai: FakeOpenAI) -> None:
    key = add_key(gateway, allowed_models=("primary",))
    fake_openai.then(Script(status=500))
    import httpx

    with ThreadServer(gateway.app) as server:
        body = {"model": "primary", "messages": USER}
        reply = httpx.post(server.base_url + "/v1/chat/completions", json=body, headers={"x-api-key": key}, timeout=10)
    assert reply.status_code == 502
    assert "fallbacks" not in reply.json()["error"]["message"]
    assert calls(fake_openai) == ["up-primary"]
