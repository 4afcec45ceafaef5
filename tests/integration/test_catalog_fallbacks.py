"""Fallback chains as `load_catalog` builds them from CHATGW_MODELS (not by hand): the order they
are listed in, one level deep (a fallback's own fallbacks are not followed), a fallback that cannot
take the request skipped, tried only for errors before the first byte that another model could
cure, and the catalog's refusals of chains that make no sense. (Which fallbacks a key may use:
tests/integration/test_fallbacks.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from chatgw.backends import BackendDeps, CatalogError
from chatgw.catalog import load_catalog
from chatgw.compose import Container
from tests.fakes.fake_openai import FakeOpenAI, Script
from tests.support.asgi import CHAT, Reply, assert_envelope, call
from tests.support.keys import add_key
from tests.support.polling import eventually

USER = [{"role": "user", "content": "hi there"}]
DOWN = Script(status=503)  # retryable: another model may cure it


def models(upstream: FakeOpenAI) -> dict[str, Any]:
    return {
        "primary": upstream.catalog_entry("primary", fallbacks=["picky", "second", "last"]),
        "picky": upstream.catalog_entry("picky", unsupported_params=["temperature"]),
        "second": upstream.catalog_entry("second", fallbacks=["beyond"]),
        "last": {"backend": "echo", "description": "Development model: the last resort."},
        "beyond": upstream.catalog_entry("beyond"),
    }


@pytest.fixture
def gw(make_container: Callable[..., Container], fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Container:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-fake")
    return make_container(models=json.dumps(models(fake_openai)))


def ask(gw: Container, key: str, model: str = "primary", stream: bool = False, **extra: Any) -> Reply:
    import asyncio

    body = json.dumps({"model": model, "messages": USER, "stream": stream, **extra}).encode()
    headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]

    async def go() -> Reply:
        try:
            return await call(gw.app, "POST", CHAT, headers, body)
        finally:
            for entry in gw.catalog.entries():
                await entry.backend.aclose()

    return asyncio.run(go())


def called(upstream: FakeOpenAI) -> list[str]:
    return [str(r.body["model"]) for r in upstream.requests]


def served(gw: Container, key: str) -> list[tuple[str, str, str]]:
    events = eventually(lambda: gw.store.usage_events(key.split("_")[1]))
    return [(e.model, e.booked_model, e.status) for e in events]


def test_the_chain_is_the_listed_fallbacks_in_order_one_level_deep(fake_openai: FakeOpenAI) -> None:
    catalog = load_catalog(json.dumps(models(fake_openai)), BackendDeps())
    assert [e.name for e in catalog.chain("primary")] == ["primary", "picky", "second", "last"]
    assert [e.name for e in catalog.chain("second")] == ["second", "beyond"]
    assert [e.name for e in catalog.chain("beyond")] == ["beyond"]


@pytest.mark.parametrize("stream", [False, True])
def test_the_first_fallback_that_answers_serves(gw: Container, fake_openai: FakeOpenAI, stream: bool) -> None:
    key = add_key(gw)
    fake_openai.then(DOWN)
    reply = ask(gw, key, stream=stream)
    assert reply.status == 200, reply.body
    assert called(fake_openai) == ["up-primary", "up-picky"]
    assert served(gw, key) == [("primary", "picky", "ok")]


@pytest.mark.parametrize("stream", [False, True])
def test_a_fallback_that_cannot_take_the_request_is_skipped(
    gw: Container, fake_openai: FakeOpenAI, stream: bool
) -> None:
    key = add_key(gw)
    fake_openai.then(DOWN, DOWN)
    reply = ask(gw, key, stream=stream, temperature=0.5)  # `picky` refuses temperature
    assert reply.status == 200, reply.body
    # `second` failed too; its own fallback (`beyond`) is not followed: the echo `last` answers
    assert called(fake_openai) == ["up-primary", "up-second"]
    assert served(gw, key) == [("primary", "last", "ok")]
    text = reply.body.decode()
    assert "hi" in text and "there" in text  # echo's answer


def test_a_whole_chain_failing_is_the_last_error_and_one_event(
    make_container: Callable[..., Container], fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-fake")
    chain = {
        "a": fake_openai.catalog_entry("a", fallbacks=["b"]),
        "b": fake_openai.catalog_entry("b", fallbacks=["c"]),
        "c": fake_openai.catalog_entry("c"),
    }
    gw = make_container(models=json.dumps(chain))
    key = add_key(gw)
    fake_openai.then(DOWN, DOWN)
    reply = ask(gw, key, "a")
    assert_envelope(reply, allowed_5xx=(502,))
    assert reply.status == 502 and reply.json()["error"]["code"] == "upstream_error"
    assert called(fake_openai) == ["up-a", "up-b"]  # not `c`: one level deep
    assert [status for _, _, status in served(gw, key)] == ["error"]


def test_an_error_another_model_would_not_cure_does_not_fall_back(gw: Container, fake_openai: FakeOpenAI) -> None:
    key = add_key(gw)
    fake_openai.then(Script(status=400, body={"error": {"message": "bad input"}}))  # the request itself
    reply = ask(gw, key)
    assert_envelope(reply)
    assert (reply.status, reply.json()["error"]["code"]) == (400, "upstream_rejected")
    assert called(fake_openai) == ["up-primary"]
    assert served(gw, key) == [("primary", "primary", "error")]


def test_no_fallback_once_the_stream_has_started(gw: Container, fake_openai: FakeOpenAI) -> None:
    key = add_key(gw)
    fake_openai.then(Script(drop_after_chunks=2))
    reply = ask(gw, key, stream=True)
    assert reply.status == 200
    events = [e for e in reply.body.decode().split("\n\n") if e]
    assert "data: [DONE]" not in events and '"error"' in events[-1]
    assert called(fake_openai) == ["up-primary"]


@pytest.mark.parametrize(
    ("fallbacks", "message"),
    [
        (["nowhere"], "fallback 'nowhere' is not another model of the catalog"),
        (["a"], "fallback 'a' is not another model of the catalog"),
        ("b", "field 'fallbacks' must be a list of model names"),
        ([1], "field 'fallbacks' must be a list of model names"),
        (["b", "b"], "field 'fallbacks' names 'b' twice"),
    ],
    ids=["unknown", "itself", "not-a-list", "not-names", "twice"],
)
def test_chains_that_make_no_sense_are_refused_at_load(fallbacks: Any, message: str) -> None:
    source = json.dumps({"a": {"backend": "echo", "fallbacks": fallbacks}, "b": {"backend": "echo"}})
    with pytest.raises(CatalogError) as caught:
        load_catalog(source, BackendDeps())
    assert "model 'a'" in str(caught.value) and message in str(caught.value)
