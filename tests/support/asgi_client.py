"""The app through httpx's ASGI transport: a request, its answer, and the one error envelope."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from chatgw.compose import Container

CHAT = "/v2/llms/chat/completions"
USER = [{"role": "user", "content": "The capital of France is Paris"}]


def call(container: Container, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=container.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(go())


def assert_envelope(response: httpx.Response, status: int, type_: str, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert "detail" not in body
    assert set(body) == {"error", "messages", "field_errors", "request_id"}
    assert body["error"]["type"] == type_
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if code is not None:
        assert body["error"]["code"] == code
    assert body["messages"] == [body["error"]["message"]]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}
