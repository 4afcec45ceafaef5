"""Characters that `str.splitlines` takes for line breaks (U+2028, U+2029, U+0085) must not break
stream framing between chained gateways. SSE splits lines on CR and LF only; the gateway reads
that way and also escapes those characters in the JSON it writes."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from chatgw.api.sse import frame
from chatgw.compose import Container
from tests.support.keys import add_key
from tests.support.sdk import openai_client
from tests.support.servers import ThreadServer

TRICKY = "a\u2028b \u2029c \x85d e\u2028"


def test_two_chained_gateways_stream_line_separators_intact(
    make_container: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_container()
    first_key = add_key(first)
    with ThreadServer(first.app) as upstream:
        monkeypatch.setenv("CHAINED_UPSTREAM_KEY", first_key)
        model = {"backend": "openai", "base_url": f"{upstream.base_url}/v2/llms", "upstream_model": "echo"}
        second = make_container(models=json.dumps({"chained": {**model, "api_key_env": "CHAINED_UPSTREAM_KEY"}}))
        with ThreadServer(second.app) as gateway:
            client = openai_client(f"{gateway.base_url}/v2/llms", add_key(second), max_retries=0)
            messages = [{"role": "user", "content": TRICKY}]
            chunks = list(client.chat.completions.create(model="chained", messages=messages, stream=True))  # type: ignore[call-overload]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == TRICKY.strip()
            assert chunks[-1].choices[0].finish_reason == "stop"
            answer = client.chat.completions.create(model="chained", messages=messages)  # type: ignore[call-overload]
            assert answer.choices[0].message.content == TRICKY.strip()


def test_frames_escape_unicode_line_separators() -> None:
    raw = frame({"content": TRICKY})
    assert raw.count(b"\n") == 2 and raw.endswith(b"\n\n")
    for separator in ("\u2028", "\u2029", "\x85"):
        assert separator.encode() not in raw
    assert json.loads(raw[len(b"data: ") :].decode())["content"] == TRICKY
    assert len(raw.decode().splitlines()) == 2  # even a splitlines() reader sees one event
