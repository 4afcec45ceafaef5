"""Waiting for effects that land after a response, without assuming how fast the machine is."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `probe` until it returns something truthy: for effects that land after a response.
    It returns as soon as they do; `timeout` only bounds a bug (milliseconds are the norm)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)
