"""Images reserve what their model says one may cost (`max_image_tokens`), a request holds at most
CHATGW_MAX_IMAGES of them, and a model whose catalog entry says nothing of images takes none: an
admitted request can no longer overshoot tpm and the budget by a fixed allowance per image."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from chatgw.access.keys import Limits
from chatgw.catalog import Catalog, ModelEntry
from chatgw.compose import Container, build
from chatgw.metering.estimate import estimate_prompt_tokens
from tests.fakes.backends import ScriptedBackend
from tests.support.asgi import CHAT, run
from tests.support.conversations import conversation_of
from tests.support.keys import add_key
from tests.support.polling import eventually

PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
CAP = 10


def body(images: int, model: str = "m") -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What is in these?"}]
    parts += [{"type": "image_url", "image_url": {"url": PIXEL}}] * images
    return {"model": model, "messages": [{"role": "user", "content": parts}], "max_tokens": CAP}


def gateway(make_container: Callable[..., Container], **entry: Any) -> Container:
    base = make_container()
    catalog = Catalog({"m": ModelEntry("m", ScriptedBackend(), "scripted", **entry)})
    return build(replace(base.settings, key_cache_seconds=0), store=base.store, catalog=catalog)


def ask(gw: Container, key: str, payload: dict[str, Any]) -> Any:
    headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
    return run(gw.app, "POST", CHAT, headers, json.dumps(payload).encode())


def test_each_image_reserves_its_models_max_image_tokens(make_container: Callable[..., Container]) -> None:
    gw = gateway(make_container, max_image_tokens=30_000)
    key = add_key(gw, limits=Limits(tokens_per_minute=200_000))
    assert ask(gw, key, body(5)).status == 200
    (event,) = eventually(lambda: gw.store.usage_events(key.split("_")[1]))
    assert event.reserved_tokens == estimate_prompt_tokens(conversation_of(body(5)), 30_000) + CAP
    assert event.reserved_tokens > 5 * 30_000


def test_images_beyond_tpm_are_refused_before_the_upstream(make_container: Callable[..., Container]) -> None:
    gw = gateway(make_container, max_image_tokens=48_000)
    key = add_key(gw, limits=Limits(tokens_per_minute=100_000))
    reply = ask(gw, key, body(3))  # 144,000 tokens of images: never fits the key's minute
    assert reply.status == 429
    assert gw.catalog.get("m").backend.calls == 0  # type: ignore[attr-defined]


def test_more_images_than_the_gateway_allows_is_a_400_naming_the_limit(
    make_container: Callable[..., Container],
) -> None:
    gw = gateway(make_container, max_image_tokens=1_000)
    key = add_key(gw)
    reply = ask(gw, key, body(100))  # 100 images in a body of a few KB
    assert reply.status == 400
    error = reply.json()["error"]
    assert "CHATGW_MAX_IMAGES" in error["message"] and "20" in error["message"] and error["param"] == "messages"
    assert ask(gw, key, body(20)).status == 200


def test_a_model_without_max_image_tokens_takes_no_image(make_container: Callable[..., Container]) -> None:
    gw = gateway(make_container)
    key = add_key(gw)
    reply = ask(gw, key, body(1))
    assert reply.status == 400
    assert "max_image_tokens" in reply.json()["error"]["message"]
    assert ask(gw, key, body(0)).status == 200


def test_echo_takes_images_at_its_own_small_figure(make_container: Callable[..., Container]) -> None:
    gw = make_container()
    key = add_key(gw, limits=Limits(tokens_per_minute=10_000))
    assert ask(gw, key, body(20, model="echo")).status == 200
