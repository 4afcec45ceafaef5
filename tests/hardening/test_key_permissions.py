"""What a key may do: `n` cannot multiply the per-request cap, disabled or expired keys list no
models, the catalog cannot be mapped through 403 vs 404, unknown key ids do not cost a store read
each, allow-list patterns are literal names, not globs (docs/hardening.md, the security table)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatgw.access.key_cache import UNKNOWN_KEY_CACHE_SIZE, UNKNOWN_KEY_SECONDS
from chatgw.access.keys import Limits, pattern_matches
from chatgw.compose import Container
from chatgw.errors import AuthenticationFailed
from chatgw.service import Service
from tests.fakes.backends import ScriptedBackend
from tests.fakes.fake_openai import FakeOpenAI
from tests.support.asgi_client import CHAT, USER, assert_envelope, auth, call
from tests.support.counting_store import CountingStore
from tests.support.keys import add_key
from tests.support.upstream import Upstreamed
from tests.support.upstream import up as up


@pytest.fixture
def gw(make_container: Callable[..., Container]) -> Container:
    return make_container()


# `n` multiplies the per-request cap ------------------------------------------------


def completion_tokens(gw: Container, key: str, **body: object) -> int:
    r = call(gw, "POST", CHAT, json={"model": "echo", "messages": USER, **body}, headers=auth(key))
    assert r.status_code == 200, r.text
    return int(r.json()["usage"]["completion_tokens"])


def test_n_cannot_multiply_the_per_request_cap(gw: Container) -> None:
    key = add_key(gw, limits=Limits(max_tokens_per_request=5))
    # the attack: 128 choices of the capped length; refused, as is any n x max_tokens over the cap
    r = call(gw, "POST", CHAT, json={"model": "echo", "messages": USER, "n": 128}, headers=auth(key))
    assert assert_envelope(r, 400, "invalid_request_error")["error"]["param"] == "n"
    r = call(gw, "POST", CHAT, json={"model": "echo", "messages": USER, "n": 2, "max_tokens": 5}, headers=auth(key))
    body = assert_envelope(r, 400, "invalid_request_error")
    assert body["error"]["param"] == "max_tokens" and "10" in body["error"]["message"]
    # within the cap: the request's completion tokens never pass it
    assert completion_tokens(gw, key, n=5) == 5  # one token per choice
    assert completion_tokens(gw, key, n=2) == 4  # 5 // 2 each
    assert completion_tokens(gw, key, n=2, max_completion_tokens=2) == 4
    assert completion_tokens(gw, key) == 5


def test_streams_too(gw: Container) -> None:
    key = add_key(gw, limits=Limits(max_tokens_per_request=5))
    body = {"model": "echo", "messages": USER, "n": 8, "stream": True}
    r = call(gw, "POST", CHAT, json=body, headers=auth(key))
    assert assert_envelope(r, 400, "invalid_request_error")["error"]["param"] == "n"


# disabled or expired keys listing models --------------------------------------------

LIST_ROUTES = ["/v2/llms", "/v1/models", "/v2/llms/models", "/v1/models/echo", "/v2/llms/models/echo"]


@pytest.mark.parametrize("fields", [{"enabled": False}, {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}])
@pytest.mark.parametrize("path", LIST_ROUTES)
def test_unusable_keys_are_refused_on_every_route(gw: Container, fields: dict[str, Any], path: str) -> None:
    key = add_key(gw, **fields)
    body = assert_envelope(call(gw, "GET", path, headers=auth(key)), 403, "permission_error")
    assert "echo" not in json.dumps(body)
    r = call(gw, "POST", CHAT, json={"model": "echo", "messages": USER}, headers=auth(key))
    assert_envelope(r, 403, "permission_error")


# mapping the catalog, and unknown key ids costing a store read each -----------------


@pytest.fixture
def two_models(make_container: Callable[..., Container]) -> Container:
    return make_container(backends={"gpt-4o-mini": ScriptedBackend(["hi"]), "secret-model": ScriptedBackend(["x"])})


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_the_key_may_not_use_is_answered_as_missing(two_models: Container, stream: bool) -> None:
    key = add_key(two_models, allowed_models=("gpt-4o*",))
    answers = []
    for model in ("secret-model", "no-such-model"):
        r = call(two_models, "POST", CHAT, json={"model": model, "messages": USER, "stream": stream}, headers=auth(key))
        body = assert_envelope(r, 404, "invalid_request_error", "model_not_found")
        answers.append(body["error"]["message"].replace(model, "M"))
        body = assert_envelope(
            call(two_models, "GET", f"/v1/models/{model}", headers=auth(key)), 404, "invalid_request_error"
        )
    assert answers[0] == answers[1]  # nothing tells an existing model from a missing one
    r = call(two_models, "POST", CHAT, json={"model": "gpt-4o-mini", "messages": USER}, headers=auth(key))
    assert r.status_code == 200


def test_a_fallback_the_key_may_not_use_is_not_tried(make_container: Callable[..., Container]) -> None:
    from chatgw.errors import UpstreamError

    failing, fallback = ScriptedBackend(["a"], fail=UpstreamError("down")), ScriptedBackend(["from the fallback"])
    gw = make_container(backends={"main": (failing, ("other",)), "other": fallback})
    key = add_key(gw, allowed_models=("main",))
    r = call(gw, "POST", CHAT, json={"model": "main", "messages": USER}, headers=auth(key))
    assert r.status_code == 502 and fallback.calls == 0


def test_unknown_key_ids_are_cached_briefly(gw: Container) -> None:
    now = [0.0]
    counting = CountingStore(gw.store)
    service = Service(counting, gw.catalog, gw.settings, clock=lambda: now[0])  # type: ignore[arg-type]
    unknown = "cgw_aaaaaaaaaaaa_" + "B" * 33

    def attempt(key: str) -> str:
        try:
            asyncio.run(service.authenticate(key))
        except AuthenticationFailed:
            return "401"
        return "200"

    assert [attempt(unknown) for _ in range(50)] == ["401"] * 50
    assert counting.reads == 1  # one store read for 50 tries of one id
    now[0] += UNKNOWN_KEY_SECONDS
    assert attempt(unknown) == "401" and counting.reads == 2  # forgotten after the brief window
    for i in range(UNKNOWN_KEY_CACHE_SIZE + 10):  # bounded: a flood of ids evicts the oldest
        attempt(f"cgw_{i:012d}_" + "B" * 33)
    assert len(service.key_cache.unknown) == UNKNOWN_KEY_CACHE_SIZE
    real = add_key(gw)
    assert attempt(real) == "200"


# allow-list patterns are literal unless they hold `*` -------------------------------


@pytest.mark.parametrize(
    ("pattern", "model", "allowed"),
    [
        ("m[1]", "m[1]", True),
        ("m[1]", "m1", False),
        ("gpt-4?", "gpt-4?", True),
        ("gpt-4?", "gpt-4o", False),
        ("gpt-4o*", "gpt-4o-mini", True),
        ("gpt-4o*", "gpt-4", False),
        ("*", "anything[x]", True),
        ("a*b[c]", "a-zzz-b[c]", True),
        ("a*b[c]", "a-zzz-bc", False),
    ],
)
def test_allow_list_patterns(pattern: str, model: str, allowed: bool) -> None:
    assert pattern_matches(pattern, model) is allowed


# account parameters reach the operator's upstream account only when allowed ---------


@pytest.mark.parametrize(
    ("param", "value", "passes_by_default"),
    [
        ("service_tier", "priority", False),
        ("service_tier", "flex", False),
        ("service_tier", "auto", True),
        ("store", True, False),
        ("store", False, True),
        ("safety_identifier", "user-123", False),
    ],
)
def test_account_parameters_need_the_catalogs_consent(
    up: Upstreamed, fake_openai: FakeOpenAI, param: str, value: object, passes_by_default: bool
) -> None:
    plain_gw, plain_key = up.gateway(fake_openai.base_url)
    plain = up.chat(plain_gw, plain_key, **{param: value})
    if passes_by_default:
        assert plain.status == 200, plain.body
    else:
        assert plain.status == 400, plain.body
        error = plain.json()["error"]
        assert (error["code"], error["param"]) == ("unsupported_parameter", param)
        assert "account_params" in error["message"]
        assert fake_openai.requests == []  # it never reached the upstream
    allowing_gw, allowing_key = up.gateway(fake_openai.base_url, account_params=[param])
    allowed = up.chat(allowing_gw, allowing_key, **{param: value})
    assert allowed.status == 200, allowed.body
    assert fake_openai.requests[-1].body[param] == value


def test_account_params_must_name_account_parameters(make_container: Callable[..., Container]) -> None:
    from chatgw.backends.base import CatalogError

    with pytest.raises(CatalogError, match="account_params"):
        make_container(models=json.dumps({"e": {"backend": "echo", "account_params": ["temperature"]}}))
