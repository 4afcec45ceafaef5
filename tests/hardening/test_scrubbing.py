"""Upstream error text reaches clients scrubbed: whatever path it takes (an HTTP 4xx/5xx body, an
in-band `{"error"}` body with status 200, an SSE error event, a Bedrock message), an upstream that
echoes our credentials (the whole key, a prefix of it, a configured header value) leaks none."""

from __future__ import annotations

from typing import Any

import pytest

from chatgw.backends._scrub import MASK, scrub
from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_bedrock import Script as BedrockScript
from tests.fakes.fake_openai import FakeOpenAI, Script
from tests.support.bedrock_gateway import bedrock_gateway as bedrock_gateway
from tests.support.upstream import UPSTREAM_KEY, Upstreamed, sse
from tests.support.upstream import up as up

ORG_SECRET = "org-secret-7c1d93b0aa"
HEADERS = {"x-org-secret": ORG_SECRET, "x-short": "1"}
ECHO = f"auth failed for {UPSTREAM_KEY[:10]}... (full: {UPSTREAM_KEY}), header x-org-secret={ORG_SECRET}"
LEAKS = [UPSTREAM_KEY, UPSTREAM_KEY[:8], ORG_SECRET, ORG_SECRET[:8]]


def assert_scrubbed(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} reached the client: {text}"
    assert MASK in text  # the upstream's words did reach the client, scrubbed


CASES: list[tuple[str, Script, bool, int]] = [
    ("4xx-body", Script(status=400, body={"error": {"message": ECHO}}), False, 400),
    ("5xx-body", Script(status=500, body={"error": {"message": ECHO}}), False, 502),
    ("4xx-plain-text", Script(status=422, body=ECHO.encode()), False, 400),
    ("200-in-band-error", Script(status=200, body={"error": {"message": ECHO}}), False, 502),
    ("sse-error-event", Script(error_event_after_chunks=1, error_message=ECHO), True, 200),
]


@pytest.mark.parametrize(("name", "script", "stream", "status"), CASES, ids=[c[0] for c in CASES])
def test_upstream_messages_echoing_credentials_are_scrubbed(
    up: Upstreamed, fake_openai: FakeOpenAI, name: str, script: Script, stream: bool, status: int
) -> None:
    gw, key = up.gateway(fake_openai.base_url, headers=HEADERS)
    fake_openai.then(script)
    reply = up.chat(gw, key, stream)
    assert reply.status == status, reply.body
    assert fake_openai.requests[0].headers["x-org-secret"] == ORG_SECRET  # the header did go upstream
    text = reply.body.decode()
    if stream:
        assert '"error"' in sse(reply)[-1]
    assert_scrubbed(text)


def test_bedrock_messages_are_scrubbed(bedrock_gateway: Any, fake_bedrock: FakeBedrock) -> None:
    _, _, chat = bedrock_gateway()
    access_key = "AKIAABCDEFGHIJKLMNOP"
    message = f"bad header Bearer {ORG_SECRET} from {access_key}"
    fake_bedrock.then(BedrockScript(status=400, error_type="ValidationException", message=message))
    reply = chat(False)
    assert reply.status == 400, reply.body
    text = reply.body.decode()
    assert ORG_SECRET not in text and access_key not in text and "bad header Bearer ***" in text


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("key sk-abcdefgh12345 here", ["sk-abcdefgh12345"], "key *** here"),
        ("prefix abcdefghij!", ["abcdefghijklmnop"], "prefix ***!"),
        ("short abcdefg", ["abcdefghijklmnop"], "short abcdefg"),  # 7 characters: not a prefix worth hiding
        ("value 1 stays", ["1"], "value 1 stays"),
        ("Authorization: Bearer xyz.abc", [], "Authorization: ***"),
        ("token=Bearer xyz", [], "token=Bearer ***"),
        ('{"api_key": "zzz"}', [], '{"api_key": "***"}'),
        ("max_tokens is 5", ["max_tokens is 5 and more"], "***"),
    ],
)
def test_scrub(text: str, secrets: list[str], expected: str) -> None:
    assert scrub(text, secrets) == expected
