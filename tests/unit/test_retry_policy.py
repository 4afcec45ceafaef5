"""The retry policy's pure parts: Retry-After parsing and backoff bounds."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx

from chatgw.backends._retry import BACKOFF_BASE_S, backoff, retry_after_seconds


def test_retry_after_in_seconds_milliseconds_or_as_a_date() -> None:
    assert retry_after_seconds(httpx.Headers({"retry-after": "3"})) == 3
    assert retry_after_seconds(httpx.Headers({"Retry-After-Ms": "250"})) == 0.25
    in_ten = retry_after_seconds(httpx.Headers({"retry-after": formatdate(time.time() + 10, usegmt=True)}))
    assert in_ten is not None and 5 < in_ten <= 10
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after_seconds(httpx.Headers({})) is None


def test_backoff_is_jittered_exponential_and_never_shorter_than_retry_after() -> None:
    for attempt in range(3):
        delays = {backoff(attempt, None) for _ in range(50)}
        assert all(BACKOFF_BASE_S * 2**attempt * 0.5 <= d <= BACKOFF_BASE_S * 2**attempt for d in delays)
        assert len(delays) > 1
    assert backoff(0, 4.0) == 4.0
