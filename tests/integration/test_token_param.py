"""The name of the output cap an OpenAI-compatible upstream is sent: `max_tokens` by default,
`max_completion_tokens` when the client used it or when the catalog's `token_param` says the model
wants it (o-series / reasoning models refuse `max_tokens`). The fake upstream records what it got."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from chatgw.access.keys import Limits
from chatgw.backends import CatalogError
from chatgw.compose import Container
from tests.fakes.fake_openai import FakeOpenAI
from tests.support.keys import add_key
from tests.support.servers import ThreadServer

USER = [{"role": "user", "content": "think, briefly"}]


@pytest.fixture
def gateway(
    make_container: Callable[..., Container], fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Container:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-fake")
    models = {
        "reasoner": fake_openai.catalog_entry("reasoner", token_param="max_completion_tokens"),
        "classic": fake_openai.catalog_entry("classic"),
        "classic-explicit": fake_openai.catalog_entry("classic-explicit", token_param="max_tokens"),
    }
    return make_container(models=json.dumps(models), default_max_output_tokens=300)


CASES = [
    # model, the key's limits, what the client asked, what the upstream got
    ("reasoner", {"max_tokens_per_request": 40}, {}, {"max_completion_tokens": 40}),  # the key's cap
    ("reasoner", {"monthly_token_budget": 10_000}, {}, {"max_completion_tokens": 300}),  # the reservation's cap
    ("reasoner", {}, {"max_tokens": 7}, {"max_completion_tokens": 7}),  # the client's, renamed
    ("reasoner", {}, {"max_completion_tokens": 9}, {"max_completion_tokens": 9}),
    ("reasoner", {}, {}, {}),  # no cap: none sent
    ("classic", {"max_tokens_per_request": 40}, {}, {"max_tokens": 40}),
    ("classic", {"monthly_token_budget": 10_000}, {}, {"max_tokens": 300}),
    ("classic", {"monthly_token_budget": 10_000}, {"max_completion_tokens": 9}, {"max_completion_tokens": 9}),
    ("classic", {}, {"max_tokens": 7}, {"max_tokens": 7}),
    ("classic-explicit", {"max_tokens_per_request": 40}, {}, {"max_tokens": 40}),
    # both names: only the cap the gateway checked (max_completion_tokens wins) goes upstream
    (
        "classic",
        {"max_tokens_per_request": 10},
        {"max_tokens": 5000, "max_completion_tokens": 1},
        {"max_completion_tokens": 1},
    ),
    ("reasoner", {}, {"max_tokens": 5000, "max_completion_tokens": 3}, {"max_completion_tokens": 3}),
]


@pytest.mark.parametrize(("model", "limits", "asked", "sent"), CASES)
def test_the_cap_goes_under_the_name_the_upstream_takes(
    gateway: Container,
    fake_openai: FakeOpenAI,
    model: str,
    limits: dict[str, int],
    asked: dict[str, int],
    sent: dict[str, int],
) -> None:
    key = add_key(gateway, limits=Limits(**limits))
    with ThreadServer(gateway.app) as server:
        for stream in (False, True):
            body = {"model": model, "messages": USER, "stream": stream, **asked}
            reply = httpx.post(
                server.base_url + "/v1/chat/completions", json=body, headers={"x-api-key": key}, timeout=10
            )
            assert reply.status_code == 200, reply.text
    for upstream in fake_openai.requests:
        caps = {k: v for k, v in upstream.body.items() if k in ("max_tokens", "max_completion_tokens")}
        assert caps == sent
    assert len(fake_openai.requests) == 2


def test_a_token_param_that_is_neither_is_a_catalog_error(
    make_container: Callable[..., Container], fake_openai: FakeOpenAI
) -> None:
    models = {"m": fake_openai.catalog_entry("m", token_param="max_output_tokens")}
    with pytest.raises(CatalogError, match="'token_param' must be one of max_tokens, max_completion_tokens"):
        make_container(models=json.dumps(models))
