"""The deadline a store call is made under: a contextvar holding a `time.monotonic()` time.

The service sets it around its store calls (`until(call.deadline.at)`); `asyncio.to_thread` copies
it into the worker thread, and the settlement's pool copies it too. The DynamoDB adapter's retries
read it (store/dynamodb/call.py): no attempt and no backoff sleep past it, and each attempt's read
timeout cut to what is left. The Store interface carries no deadline, so every adapter and fake
keeps its signatures; a store call made outside a request (the CLI, `chatgw replay`) is bounded by
its retry policy alone. SQLite ignores it (a local file: its busy timeout bounds it).

Settlement after the answer is not bounded by the request's deadline (the answer is out and the
ledger must not lose it) but by `settlement_deadline`: a few seconds of its own
(`SETTLE_SECONDS`), and never more than `SETTLE_GRACE_S` past the request's deadline, which leaves
the invocation's own margin (http.LAMBDA_MARGIN_S, the streaming runtime's margin) to log what is
not written as the `usage_event` line (`pending`), which `chatgw replay` applies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

SETTLE_SECONDS = 3.0
"""How long a settlement may retry a throttled or conflicting store, from its start."""
SETTLE_GRACE_S = 0.25
"""How far past the request's deadline a settlement may still write: less than the margins the
request's deadline keeps before Lambda ends the invocation (1 s buffered, 0.5 s streaming)."""

_AT: ContextVar[float | None] = ContextVar("chatgw_store_deadline", default=None)


@contextmanager
def until(at: float | None) -> Iterator[None]:
    """Store calls made inside (in this task, and in threads started from it) end by `at`."""
    if at is None:
        yield
        return
    token = _AT.set(at)
    try:
        yield
    finally:
        _AT.reset(token)


def current() -> float | None:
    """The deadline of the store call being made, on the `time.monotonic()` clock; None: none."""
    return _AT.get()


def settlement_deadline(request_deadline: float | None, clock: Callable[[], float] = time.monotonic) -> float:
    at = clock() + SETTLE_SECONDS
    return at if request_deadline is None else min(at, request_deadline + SETTLE_GRACE_S)
