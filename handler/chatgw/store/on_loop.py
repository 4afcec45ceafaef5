"""How the service makes a store call from the event loop: on a worker thread, or at once on the loop
when the store can answer without waiting.

A store call is blocking code (boto3, sqlite3), so it runs on a worker thread. That hop costs about
90 us of CPU per call here (the thread's wake-up, the loop's self-pipe), more than the embedded
store's whole transaction (65 us to admit, 135 us to settle). A store that offers `at_once()`
(`AnswersAtOnce` in store/base.py: SQLite) is called on the loop first, inside that context: it
either answers without waiting on any lock, or raises `WouldBlock` having done nothing, and the
call goes to a worker thread as before. So a busy database (another process, the CLI) never stalls
the loop. The DynamoDB store waits on the network, offers no `at_once`, and is always called on a
worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from chatgw.store.base import AnswersAtOnce

T = TypeVar("T")


class WouldBlock(Exception):
    """A store call made inside `at_once()` would have waited for a lock: it did nothing."""


async def store_call(store: object, call: Callable[[], T]) -> T:
    """`call()` (a call on `store`) on the loop if the store can answer at once, else on a worker thread."""
    if isinstance(store, AnswersAtOnce):
        try:
            with store.at_once():
                return call()
        except WouldBlock:
            pass
    return await asyncio.to_thread(call)
