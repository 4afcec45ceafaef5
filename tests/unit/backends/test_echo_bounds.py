"""The echo model's answers are bounded (unbounded, a 6 MB message with n=128 made a 768 MB body on a
default deployment), and a stack without a catalog says echo is no model instead of serving it as one."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from chatgw.backends.echo import MAX_N, MAX_OUTPUT_CHARS
from chatgw.catalog import NOTHING_CONFIGURED
from chatgw.compose import Container
from tests.support.asgi_client import CHAT, assert_envelope, auth, call
from tests.support.keys import add_key

BIG = "x" * (5 * 1024 * 1024)  # one 5 MB word: a body under the 6 MB limit


@pytest.fixture
def gw(make_container: Callable[..., Container]) -> Container:
    return make_container(max_body_bytes=6 * 1024 * 1024)


def test_n_128_on_a_huge_message_is_refused(gw: Container) -> None:
    key = add_key(gw)
    for stream in (False, True):
        body = {"model": "echo", "messages": [{"role": "user", "content": BIG}], "n": 128, "stream": stream}
        r = call(gw, "POST", CHAT, json=body, headers=auth(key))
        assert assert_envelope(r, 400, "invalid_request_error", "unsupported_parameter")["error"]["param"] == "n"


@pytest.mark.parametrize("stream", [False, True])
def test_the_largest_echo_answer_is_small(gw: Container, stream: bool) -> None:
    key = add_key(gw)
    words = "word " * (1024 * 1024)  # 5 MB of words
    for content in (BIG, words):
        body = {"model": "echo", "messages": [{"role": "user", "content": content}], "n": MAX_N, "stream": stream}
        r = call(gw, "POST", CHAT, json=body, headers=auth(key))
        assert r.status_code == 200
        assert len(r.content) < 3 * 1024 * 1024  # was n x 5 MB and more
        if not stream:
            choices = r.json()["choices"]
            assert len(choices) == MAX_N
            assert all(len(c["message"]["content"]) <= MAX_OUTPUT_CHARS for c in choices)
            assert {c["finish_reason"] for c in choices} == {"length"}
            assert len(json.dumps(r.json())) < MAX_N * MAX_OUTPUT_CHARS * 2


def test_without_a_catalog_echo_says_it_is_no_model(gw: Container, caplog: pytest.LogCaptureFixture) -> None:
    key = add_key(gw)
    llms = call(gw, "GET", "/v2/llms", headers=auth(key)).json()["llms"]
    assert [m["id"] for m in llms] == ["echo"]
    assert NOTHING_CONFIGURED in llms[0]["description"]
    models = call(gw, "GET", "/v1/models", headers=auth(key)).json()["data"]
    assert models[0]["owned_by"] == "chatgw-development"


def test_without_a_catalog_init_warns(
    make_container: Callable[..., Container], capsys: pytest.CaptureFixture[str]
) -> None:
    from chatgw.backends.base import BackendDeps
    from chatgw.catalog import load_catalog
    from chatgw.observability import logs

    logs.configure("INFO")
    handler = logging.StreamHandler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(record.getMessage() + json.dumps(record.__dict__.get("fields")))  # type: ignore[method-assign]
    logs.log.addHandler(handler)
    try:
        load_catalog(None, BackendDeps())
        load_catalog(json.dumps({"e": {"backend": "echo"}}), BackendDeps())
    finally:
        logs.log.removeHandler(handler)
    assert len([line for line in seen if line.startswith("catalog_default")]) == 1
    assert "echo development model" in seen[0]
