"""Gateways in front of an OpenAI-compatible upstream (the fake server on loopback), driven on one event loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from chatgw.backends.base import BackendDeps
from chatgw.compose import Container, build
from tests.support.asgi import CHAT, Reply, call
from tests.support.keys import add_key
from tests.support.loops import close_loop
from tests.support.polling import eventually

UPSTREAM_KEY = "sk-upstream-hardening-3f9c2a7d1e"
USER = [{"role": "user", "content": "What is the capital of France?"}]


@dataclass
class Upstreamed:
    """Gateways whose catalog points at an upstream, all on one event loop for the test (as in
    uvicorn, Mangum and the streaming runtime), their HTTP clients closed on that loop at the end."""

    make_container: Callable[..., Container]
    loop: asyncio.AbstractEventLoop
    deps: list[BackendDeps] = field(default_factory=list)

    def gateway(
        self, base_url: str, *, drain_seconds: float = 30.0, request_timeout_s: float | None = None, **options: Any
    ) -> tuple[Container, str]:
        model = {
            "backend": "openai",
            "base_url": base_url,
            "upstream_model": "gpt-upstream",
            "api_key_env": "HARDENING_UPSTREAM_KEY",
            "max_retries": 0,
            **options,
        }
        base = self.make_container()
        deps = BackendDeps()
        self.deps.append(deps)
        settings = replace(base.settings, models=json.dumps({"up": model}), drain_seconds=drain_seconds)
        if request_timeout_s is not None:
            settings = replace(settings, request_timeout_s=request_timeout_s)
        return build(settings, store=base.store, deps=deps), add_key(base)

    def chat(self, gw: Container, key: str, stream: bool = False, leave: int | None = None, **extra: Any) -> Reply:
        body = {"model": "up", "messages": USER, "stream": stream, **extra}
        headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
        return self.loop.run_until_complete(
            call(gw.app, "POST", CHAT, headers, json.dumps(body).encode(), leave_after_chunks=leave)
        )


@pytest.fixture
def up(make_container: Callable[..., Container], monkeypatch: pytest.MonkeyPatch) -> Iterator[Upstreamed]:
    monkeypatch.setenv("HARDENING_UPSTREAM_KEY", UPSTREAM_KEY)
    loop = asyncio.new_event_loop()
    upstreamed = Upstreamed(make_container, loop)
    try:
        yield upstreamed
    finally:
        for deps in upstreamed.deps:
            loop.run_until_complete(deps.aclose())
        close_loop(loop)


def events_of(gw: Container, key: str) -> list[Any]:
    return list(eventually(lambda: gw.store.usage_events(key.split("_")[1])))


def sse(reply: Reply) -> list[str]:
    return [e for e in reply.body.decode().split("\n\n") if e]
