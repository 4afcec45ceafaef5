"""The retry policy's pure parts: Retry-After parsing and backoff bounds."""

from __future__ import annotations

from email.utils import formatdate

import httpx

from chatgw.backends._retry import BACKOFF_BASE_S, backoff, retry_after_seconds


def test_retry_after_in_seconds_milliseconds_or_as_a_date() -> None:
    assert retry_after_seconds(httpx.Headers({"retry-after": "3"})) == 3
    assert retry_after_seconds(httpx.Headers({"Retry-After-Ms": "250"})) == 0.25
    now = 1_750_000_000.0  # an injected clock: the date is 10 s after it, whatever the real time
    in_ten = retry_after_seconds(httpx.Headers({"retry-after": formatdate(now + 10, usegmt=True)}), now=lambda: now)
    assert in_ten == 10
    past = retry_after_seconds(httpx.Headers({"retry-after": formatdate(now - 10, usegmt=True)}), now=lambda: now)
    assert past == 0
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after_seconds(httpx.Headers({})) is None


def test_backoff_is_jittered_exponential_and_never_shorter_than_retry_after() -> None:
    for attempt in range(3):
        delays = {backoff(attempt, None) for _ in range(50)}
        assert all(BACKOFF_BASE_S * 2**attempt * 0.5 <= d <= BACKOFF_BASE_S * 2**attempt for d in delays)
        assert len(delays) > 1
    assert backoff(0, 4.0) == 4.0
