"""Every route, good and bad input, through the ASGI app: the one error envelope, request ids,
authentication and permissions."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatgw.access.keys import Limits
from chatgw.compose import Container
from tests.support.asgi_client import CHAT, USER, assert_envelope, auth, call
from tests.support.keys import add_key


@pytest.fixture
def gw(make_container: Callable[..., Container]) -> Container:
    return make_container()


@pytest.fixture
def key(gw: Container) -> str:
    return add_key(gw)


def test_buffered_completion(gw: Container, key: str) -> None:
    r = call(gw, "POST", CHAT, json={"model": "echo", "messages": USER}, headers=auth(key))
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "echo"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": USER[0]["content"], "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] == 6
    assert r.headers["x-request-id"]


def test_x_api_key_and_bearer_are_equal(gw: Container, key: str) -> None:
    for headers in (auth(key), {"x-api-key": key}, {**auth(key), "x-api-key": key}):
        r = call(gw, "POST", "/v1/chat/completions", json={"model": "echo", "messages": USER}, headers=headers)
        assert r.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer "},
        {"authorization": "Basic abc"},
        {"x-api-key": "sk-not-ours"},
        {"x-api-key": "cgw_abcdefgh12_" + "A" * 33},
    ],
)
def test_authentication_failures(gw: Container, headers: dict[str, str]) -> None:
    r = call(gw, "POST", CHAT, json={"model": "echo", "messages": USER}, headers=headers)
    assert_envelope(r, 401, "authentication_error")


def test_wrong_secret_and_disagreeing_keys(gw: Container, key: str) -> None:
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    r = call(gw, "POST", CHAT, json={"model": "echo", "messages": USER}, headers=auth(wrong))
    body = assert_envelope(r, 401, "authentication_error")
    assert key.split("_")[2] not in r.text and wrong.split("_")[2] not in json.dumps(body)
    other = add_key(gw)
    r = call(gw, "POST", CHAT, json={"model": "echo", "messages": USER}, headers={**auth(key), "x-api-key": other})
    assert_envelope(r, 401, "authentication_error")


def test_key_in_query_string_is_ignored(gw: Container, key: str) -> None:
    r = call(gw, "POST", f"{CHAT}?api_key={key}", json={"model": "echo", "messages": USER})
    assert_envelope(r, 401, "authentication_error", "missing_api_key")


@pytest.mark.parametrize(
    ("fields", "request_extra", "fragment"),
    [
        ({"enabled": False}, {}, "disabled"),
        ({"expires_at": datetime.now(UTC) - timedelta(days=1)}, {}, "expired"),
        ({"allow_streaming": False}, {"stream": True}, "may not stream"),
    ],
)
def test_permission_refusals(
    gw: Container, fields: dict[str, Any], request_extra: dict[str, Any], fragment: str
) -> None:
    key = add_key(gw, **fields)
    r = call(gw, "POST", CHAT, json={"model": "echo", "messages": USER, **request_extra}, headers=auth(key))
    body = assert_envelope(r, 403, "permission_error")
    assert body["error"]["message"].startswith("Permissions do not allow creating a chat completion.")
    assert fragment in body["error"]["message"]


def test_unknown_model_is_404(gw: Container, key: str) -> None:
    r = call(gw, "POST", CHAT, json={"model": "gpt-9", "messages": USER}, headers=auth(key))
    body = assert_envelope(r, 404, "invalid_request_error", "model_not_found")
    assert body["error"]["param"] == "model"


def test_max_tokens_per_request_caps_and_refuses(gw: Container) -> None:
    key = add_key(gw, limits=Limits(max_tokens_per_request=2))
    r = call(gw, "POST", CHAT, json={"model": "echo", "messages": USER}, headers=auth(key))
    assert r.json()["choices"][0]["message"]["content"] == "The capital"
    assert r.json()["choices"][0]["finish_reason"] == "length"
    r = call(gw, "POST", CHAT, json={"model": "echo", "messages": USER, "max_tokens": 3}, headers=auth(key))
    body = assert_envelope(r, 400, "invalid_request_error")
    assert body["error"]["param"] == "max_tokens" and "2" in body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{", None),
        (b"", "body"),
        (json.dumps({"model": "echo", "messages": []}).encode(), "messages"),
        (json.dumps({"model": "echo", "messages": USER, "temperature": 9}).encode(), "temperature"),
        (json.dumps({"model": "echo", "messages": USER, "api_base": "http://x"}).encode(), "api_base"),
        (json.dumps({"model": "echo", "messages": USER, "tool_choice": "required", "tools": [
            {"type": "function", "function": {"name": "f"}}]}).encode(), "tool_choice"),
        (json.dumps({"model": "echo", "messages": USER, "logprobs": True}).encode(), "logprobs"),
        (json.dumps({"model": "echo", "messages": USER, "response_format": {"type": "json_object"}}).encode(),
         "response_format"),
    ],
)  # fmt: skip
def test_bad_requests_are_400_with_field_errors(gw: Container, key: str, body: bytes, param: str | None) -> None:
    r = call(gw, "POST", CHAT, content=body, headers={**auth(key), "content-type": "application/json"})
    envelope = assert_envelope(r, 400, "invalid_request_error")
    assert envelope["error"]["param"] == param
    assert envelope["field_errors"]


def test_oversized_body_is_413(make_container: Callable[..., Container]) -> None:
    gw = make_container(max_body_bytes=2048)
    key = add_key(gw)
    big = {"model": "echo", "messages": [{"role": "user", "content": "x" * 4096}]}
    r = call(gw, "POST", CHAT, json=big, headers=auth(key))
    assert_envelope(r, 413, "invalid_request_error", "request_too_large")

    async def chunked() -> Any:
        for _ in range(10):
            yield b"x" * 512

    r = call(gw, "POST", CHAT, content=chunked(), headers=auth(key))
    assert_envelope(r, 413, "invalid_request_error", "request_too_large")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", CHAT, 405),
        ("DELETE", "/v2/llms", 405),
        ("POST", "/health", 405),
        ("GET", "/docs", 404),
        ("GET", "/openapi.json", 404),
        ("GET", "/v2/llms/chat/completions/", 404),
    ],
)
def test_unknown_routes_and_methods(gw: Container, method: str, path: str, status: int) -> None:
    r = call(gw, method, path)
    assert_envelope(r, status, "invalid_request_error")


def test_health_touches_nothing(gw: Container) -> None:
    gw.store.close()  # a closed store must not matter to liveness
    r = call(gw, "GET", "/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers["x-request-id"]


def test_model_lists_show_allowed_models_and_label_echo(gw: Container) -> None:
    key = add_key(gw)
    r = call(gw, "GET", "/v2/llms", headers=auth(key))
    assert r.json() == {
        "llms": [
            {
                "id": "echo",
                "name": "echo",
                "description": r.json()["llms"][0]["description"],
                "enabled": True,
                "default": True,
            }
        ],
        "metadata": {"page_key": None},
    }
    assert "Development model" in r.json()["llms"][0]["description"]
    r = call(gw, "GET", "/v1/models", headers=auth(key))
    assert r.json()["object"] == "list"
    assert r.json()["data"] == [{"id": "echo", "object": "model", "created": 0, "owned_by": "chatgw-development"}]
    limited = add_key(gw, allowed_models=("gpt-*",))
    assert call(gw, "GET", "/v1/models", headers=auth(limited)).json()["data"] == []
    assert call(gw, "GET", "/v2/llms", headers=auth(limited)).json()["llms"] == []
    assert_envelope(call(gw, "GET", "/v2/llms"), 401, "authentication_error")


def test_store_down_is_503_never_let_through(gw: Container, key: str) -> None:
    gw.store.close()
    r = call(gw, "POST", CHAT, json={"model": "echo", "messages": USER}, headers=auth(key))
    assert_envelope(r, 503, "api_error", "store_unavailable")


def test_streaming_frames(gw: Container, key: str) -> None:
    body = {"model": "echo", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    r = call(gw, "POST", CHAT, json=body, headers=auth(key))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.endswith("data: [DONE]\n\n")
    events = [json.loads(e[6:]) for e in r.text.split("\n\n") if e.startswith("data: {")]
    assert len({e["id"] for e in events}) == 1 and len({e["created"] for e in events}) == 1
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == USER[0]["content"]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 6


def test_echo_honours_stop_and_n(gw: Container, key: str) -> None:
    body = {"model": "echo", "messages": USER, "stop": ["France"], "n": 2}
    r = call(gw, "POST", CHAT, json=body, headers=auth(key))
    choices = r.json()["choices"]
    assert [c["message"]["content"] for c in choices] == ["The capital of", "The capital of"]
    assert [c["index"] for c in choices] == [0, 1]


def test_usage_is_recorded_after_the_answer(gw: Container, key: str) -> None:
    r = call(gw, "POST", CHAT, json={"model": "echo", "messages": USER}, headers=auth(key))
    events = gw.store.usage_events(key.split("_")[1])
    assert len(events) == 1
    event = events[0]
    assert r.json()["id"] == f"chatcmpl-{event.request_id}"
    assert event.status == "ok" and not event.streamed and not event.estimated
    assert event.prompt_tokens == r.json()["usage"]["prompt_tokens"]
    assert event.completion_tokens == r.json()["usage"]["completion_tokens"]
