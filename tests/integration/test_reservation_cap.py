"""The output cap a reservation assumes, in its documented order (request, key, catalog
`max_output_tokens`, CHATGW_DEFAULT_MAX_OUTPUT_TOKENS), is the cap the upstream is sent: the fake
OpenAI upstream records what it received, the ledger what was reserved."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from chatgw.access.keys import Limits
from chatgw.compose import Container
from chatgw.metering.estimate import estimate_prompt_tokens
from tests.fakes.fake_openai import FakeOpenAI
from tests.support.conversations import conversation_of
from tests.support.keys import add_key
from tests.support.polling import eventually
from tests.support.servers import ThreadServer

USER = [{"role": "user", "content": "how many tokens may you spend?"}]
ESTIMATE = estimate_prompt_tokens(conversation_of({"model": "x", "messages": USER}))


@pytest.fixture
def gateway(make_container: Callable[..., Container], fake_openai: FakeOpenAI) -> Container:
    def model(**extra: Any) -> dict[str, Any]:
        return {"backend": "openai", "base_url": fake_openai.base_url, "max_retries": 0, **extra}

    models = {"capped": model(max_output_tokens=64), "uncapped": model()}
    return make_container(models=json.dumps(models), default_max_output_tokens=300)


@pytest.mark.parametrize(
    ("model", "key_limits", "asked", "sent", "reserved"),
    [
        ("capped", {"monthly_token_budget": 10_000}, {"max_tokens": 10}, 10, ESTIMATE + 10),
        ("capped", {"monthly_token_budget": 10_000}, {"max_completion_tokens": 12, "n": 2}, None, ESTIMATE + 24),
        ("capped", {"tokens_per_minute": 10_000, "max_tokens_per_request": 40}, {}, 40, ESTIMATE + 40),
        ("capped", {"tokens_per_minute": 10_000}, {}, 64, ESTIMATE + 64),
        ("uncapped", {"monthly_token_budget": 10_000}, {}, 300, ESTIMATE + 300),
        ("uncapped", {"requests_per_minute": 100}, {}, None, 0),  # no token limit: nothing reserved, nothing added
        ("uncapped", {}, {}, None, 0),
    ],
    ids=["request", "request-n", "key", "model", "default", "rpm-only", "no-limits"],
)
def test_the_reserved_cap_is_the_cap_sent(
    gateway: Container,
    fake_openai: FakeOpenAI,
    model: str,
    key_limits: dict[str, int],
    asked: dict[str, int],
    sent: int | None,
    reserved: int,
) -> None:
    key = add_key(gateway, limits=Limits(**key_limits))
    body = {"model": model, "messages": USER, **asked}
    with ThreadServer(gateway.app) as server:
        reply = httpx.post(server.base_url + "/v1/chat/completions", json=body, headers={"x-api-key": key}, timeout=10)
    assert reply.status_code == 200, reply.text
    (upstream,) = fake_openai.requests
    assert upstream.body.get("max_tokens") == sent
    (event,) = eventually(lambda: gateway.store.usage_events(key.split("_")[1]))
    assert event.reserved_tokens == reserved
    assert event.total_tokens <= reserved or reserved == 0
