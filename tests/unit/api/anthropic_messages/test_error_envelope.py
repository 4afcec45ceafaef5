"""Errors on the Messages door's paths in Anthropic's envelope, whatever raised them, and the key's
rate-limit headers in Anthropic's names."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from chatgw.api.anthropic_messages.errors import anthropic_headers, error_object
from chatgw.compose import Container
from chatgw.errors import (
    InternalError,
    RequestTooLarge,
    StoreUnavailable,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamTimeout,
)
from tests.support.asgi_client import auth, call
from tests.support.keys import add_key


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (RequestTooLarge("big"), "request_too_large"),
        (InternalError("x"), "api_error"),
        (UpstreamError("x"), "api_error"),
        (StoreUnavailable("x"), "api_error"),
        (UpstreamTimeout("x"), "api_error"),
        (UpstreamOverloaded("busy"), "overloaded_error"),
    ],
)
def test_the_type_follows_the_status(error: Exception, kind: str) -> None:
    assert error_object(error)["type"] == kind  # type: ignore[arg-type]


def test_rate_headers_in_anthropics_names_with_a_reset_time() -> None:
    now = datetime(2026, 12, 6, 10, 0, 30, tzinfo=UTC)
    gateway = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-requests": "30s",
    }
    assert anthropic_headers(gateway, "rid", now) == {
        "anthropic-ratelimit-requests-limit": "60",
        "anthropic-ratelimit-tokens-remaining": "900",
        "anthropic-ratelimit-requests-reset": "2026-12-06T10:01:00Z",
        "request-id": "rid",
    }


def test_too_large_wrong_method_and_unknown_sub_route(make_container: Callable[..., Container]) -> None:
    container = make_container(max_body_bytes=200)
    key = add_key(container)
    big = call(container, "POST", "/v1/messages", content=b"{" + b" " * 300 + b"}", headers=auth(key))
    assert big.status_code == 413 and big.json()["error"]["type"] == "request_too_large"
    wrong = call(container, "GET", "/v1/messages", headers=auth(key))
    assert wrong.status_code == 405 and wrong.json()["type"] == "error"
    missing = call(container, "POST", "/v1/messages/batches", headers=auth(key))
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert missing.headers["request-id"] == missing.json()["request_id"]
