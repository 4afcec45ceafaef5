"""Event loops that tests make themselves, closed as `asyncio.run` closes its own."""

from __future__ import annotations

import asyncio
import gc


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Finalise what the test left on `loop` before closing it: async generators dropped mid-way
    (an upstream stream cut by an error leaves httpx's nested readers suspended) are collected and
    closed on the loop, not finalised later against a closed loop (Python 3.13 reports that)."""
    gc.collect()
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
