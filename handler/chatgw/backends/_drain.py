"""Reading an upstream body to its end after the last event, so that httpx returns the connection
to its pool instead of closing it (a stream that stops at `[DONE]` leaves the chunked body's last,
empty chunk unread, and every stream would open a new TCP connection).

Bounded, because an upstream may keep the body open after `[DONE]`: a few reads, 64 KB and
0.25 s at most, never past the request's deadline. Past the bound the caller closes the response
as before, and httpx closes that connection rather than reusing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from chatgw.deadline import Deadline

MAX_READS = 8
MAX_CHARS = 64 * 1024
MAX_SECONDS = 0.25


async def drain_to_end(texts: AsyncIterator[str], deadline: Deadline) -> bool:
    """True if the body ended within the bound (the connection goes back to the pool)."""
    budget = min(MAX_SECONDS, deadline.remaining())
    if budget <= 0:
        return False
    seen = 0
    try:
        async with asyncio.timeout(budget):
            for _ in range(MAX_READS):
                seen += len(await anext(texts))
                if seen > MAX_CHARS:
                    return False
    except StopAsyncIteration:
        return True
    except (TimeoutError, httpx.HTTPError):
        return False
    return False
