"""A request that may have reached the upstream is booked even when it failed: a timeout, a 5xx, a
connection lost after sending read the prompt (and a buffered call that timed out usually runs to its
end upstream, and is billed), so a flood of them spends the key's budget instead of dodging it.
Only failures known to come before the upstream worked (no connection made, the upstream's own
4xx or 429) are booked as nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from chatgw.access.keys import Limits
from chatgw.compose import Container
from chatgw.errors import ChatgwError, UpstreamError, UpstreamRateLimited, UpstreamRejected
from chatgw.metering.estimate import estimate_prompt_tokens
from tests.fakes.backends import ScriptedBackend
from tests.support.asgi import CHAT, run
from tests.support.conversations import conversation_of
from tests.support.keys import add_key
from tests.support.polling import eventually

PROMPT = " ".join(f"word{i}" for i in range(600))
CAP = 50


def ask(gw: Container, key: str, stream: bool = False) -> Any:
    body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": CAP, "stream": stream}
    headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
    return run(gw.app, "POST", CHAT, headers, json.dumps(body).encode())


def estimate() -> int:
    return estimate_prompt_tokens(conversation_of({"model": "m", "messages": [{"role": "user", "content": PROMPT}]}))


def events(gw: Container, key: str, count: int) -> list[Any]:
    kid = key.split("_")[1]
    found = eventually(lambda: (lambda got: got if len(got) >= count else None)(gw.store.usage_events(kid)))
    return list(found or [])


def test_a_flood_of_buffered_timeouts_is_refused_before_the_budget_is_passed(
    make_container: Callable[..., Container],
) -> None:
    reserve = estimate() + CAP
    budget = 3 * reserve + reserve // 2  # room for three such requests, not four
    gw = make_container({"m": ScriptedBackend(hang_after=0)}, request_timeout_s=0.5)
    key = add_key(gw, limits=Limits(monthly_token_budget=budget))
    statuses = [ask(gw, key).status for _ in range(6)]
    assert statuses[:3] == [504, 504, 504]
    assert statuses[3:] == [429, 429, 429]  # the month's total now holds the timeouts
    booked = events(gw, key, 3)
    assert [(e.status, e.estimated) for e in booked] == [("error", True)] * 3
    assert all(e.total_tokens == reserve for e in booked)  # the whole reservation: prompt and cap
    assert sum(e.total_tokens for e in booked) <= budget


def test_a_stream_that_times_out_before_its_first_event_books_the_prompt(
    make_container: Callable[..., Container],
) -> None:
    gw = make_container({"m": ScriptedBackend(hang_after=0)}, request_timeout_s=0.5)
    key = add_key(gw)
    reply = ask(gw, key, stream=True)
    assert reply.status in (200, 504)
    (event,) = events(gw, key, 1)
    assert (event.status, event.prompt_tokens, event.completion_tokens) == ("error", estimate(), 0)
    assert event.estimated


@pytest.mark.parametrize(
    ("failure", "booked"),
    [
        (UpstreamError("the upstream answered 500", cause="5xx"), True),
        (UpstreamError("connection lost after sending", cause="connect"), True),
        (UpstreamError("no connection", cause="connect", unsent=True), False),
        (UpstreamRejected("the upstream's own 400"), False),
        (UpstreamRateLimited("the upstream's own 429", retry_after=1, cause="429"), False),
    ],
    ids=["5xx", "lost-after-sending", "never-connected", "upstream-4xx", "upstream-429"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_a_failed_call_is_booked_as_far_as_the_upstream_worked(
    make_container: Callable[..., Container], failure: ChatgwError, booked: bool, stream: bool
) -> None:
    gw = make_container({"m": ScriptedBackend(fail=failure, fail_after=0)})
    key = add_key(gw)
    assert ask(gw, key, stream=stream).status >= 400
    (event,) = events(gw, key, 1)
    assert event.status == "error"
    assert (event.prompt_tokens, event.completion_tokens) == ((estimate(), 0) if booked else (0, 0))
    assert event.estimated is booked
