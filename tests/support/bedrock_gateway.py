"""Gateways in front of the fake Bedrock runtime, through the real boto3 client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from chatgw.backends.base import BackendDeps
from chatgw.compose import Container, build
from tests.fakes.fake_bedrock import FakeBedrock
from tests.support.asgi import CHAT, Reply, call
from tests.support.keys import add_key
from tests.support.loops import close_loop

USER = [{"role": "user", "content": "Say something."}]
MODEL = {"backend": "bedrock", "model_id": "anthropic.claude-fake-v1:0", "region": "us-east-1"}


@pytest.fixture
def bedrock_gateway(
    make_container: Callable[..., Container], fake_bedrock: FakeBedrock
) -> Iterator[Callable[..., tuple[Container, str, Callable[..., Reply]]]]:
    loop = asyncio.new_event_loop()
    made: list[BackendDeps] = []

    def make(**options: Any) -> tuple[Container, str, Callable[..., Reply]]:
        base = make_container()
        deps = BackendDeps(aws_client_factory=fake_bedrock.client)
        made.append(deps)
        gw = build(
            replace(base.settings, models=json.dumps({"claude": {**MODEL, **options}})), store=base.store, deps=deps
        )
        key = add_key(base)

        def chat(stream: bool = False, leave: int | None = None) -> Reply:
            body = json.dumps({"model": "claude", "messages": USER, "stream": stream}).encode()
            headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
            return loop.run_until_complete(call(gw.app, "POST", CHAT, headers, body, leave_after_chunks=leave))

        return gw, key, chat

    try:
        yield make
    finally:
        for deps in made:
            loop.run_until_complete(deps.aclose())
        close_loop(loop)
