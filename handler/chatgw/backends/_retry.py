"""The retry policy of the upstream backends (README, Models and backends): before the first byte only, on 429, 5xx and
connection errors, at most `max_retries` more tries, with jittered exponential backoff, honouring
the upstream's Retry-After, and never past the deadline."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from chatgw.deadline import Deadline
from chatgw.errors import ChatgwError
from chatgw.observability.logs import event

T = TypeVar("T")

BACKOFF_BASE_S = 0.2
MAX_WAIT_S = 20.0
"""A longer Retry-After is not waited for: the client gets the 429 and its Retry-After."""
MARGIN_S = 0.5
"""Left after a wait, so that the next try has a chance to answer before the deadline."""


class Retryable(Exception):
    """Raised by one try: `error` is what the client sees if no further try is made."""

    def __init__(self, error: ChatgwError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


def backoff(attempt: int, retry_after: float | None) -> float:
    delay: float = BACKOFF_BASE_S * (2**attempt) * random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


async def with_retries(attempt: Callable[[], Awaitable[T]], *, max_retries: int, deadline: Deadline, model: str) -> T:
    tries = 0
    while True:
        try:
            return await attempt()
        except Retryable as retry:
            delay = backoff(tries, retry.retry_after)
            if tries >= max_retries or delay > min(MAX_WAIT_S, deadline.remaining() - MARGIN_S):
                raise retry.error from retry.__cause__
            tries += 1
            event(
                "upstream_retry",
                logging.WARNING,
                model=model,
                retry=tries,
                error=retry.error.code,
                wait_ms=round(delay * 1000),
            )
            await asyncio.sleep(delay)


def retry_after_seconds(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """`retry-after-ms` (OpenAI), or `retry-after` in seconds or as an HTTP date (counted from `now`)."""
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            value = headers["retry-after"]
            try:
                return max(0.0, float(value))
            except ValueError:
                from email.utils import parsedate_to_datetime

                return max(0.0, parsedate_to_datetime(value).timestamp() - now())
    except (ValueError, TypeError):
        return None
    return None
