"""`chatgw serve`, with every store call (and every DynamoDB API call) counted by phase: before the
backend (authenticate, admit) or after the answer (the usage write). Only for counting round trips:
the CPU and latency figures come from the real `chatgw serve`.

    CHATGW_... BENCH_COUNTS_OUT=counts.json python -m bench.chatgw_counted --port 9300
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import uvicorn

from chatgw.compose import build, open_store
from chatgw.settings import Settings

PHASE: contextvars.ContextVar[str] = contextvars.ContextVar("phase", default="other")
STORE_METHODS = ("get_key", "admit", "record_usage", "create_key", "save_key", "delete_key", "list_keys")
counts: Counter[str] = Counter()
lock = threading.Lock()


def count(name: str) -> None:
    with lock:
        counts[f"{PHASE.get()}:{name}"] += 1


class CountingStore:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in STORE_METHODS or not callable(attr):
            return attr

        @functools.wraps(attr)
        def counted(*args: Any, **kwargs: Any) -> Any:
            count(f"store.{name}")
            return attr(*args, **kwargs)

        return counted


def count_botocore() -> None:
    try:
        from botocore.client import BaseClient
    except ImportError:
        return
    original = BaseClient._make_api_call

    def counted(self: Any, operation_name: str, api_params: Any) -> Any:
        count(f"aws.{operation_name}")
        return original(self, operation_name, api_params)

    BaseClient._make_api_call = counted  # type: ignore[method-assign]


def dump(*_: object) -> None:
    """Write the counts so far and start again (SIGUSR1; and at exit)."""
    with lock:
        snapshot = dict(counts)
        counts.clear()
    with open(os.environ["BENCH_COUNTS_OUT"], "w") as f:
        json.dump(snapshot, f, indent=2)


def in_phase(phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        token = PHASE.set(phase)
        try:
            return await fn(*args, **kwargs)
        finally:
            PHASE.reset(token)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    count_botocore()
    settings = Settings.from_env()
    container = build(settings, store=CountingStore(open_store(settings)))
    service: Any = container.service
    service.authenticate = in_phase("before_backend", service.authenticate)
    service.prepare = in_phase("before_backend", service.prepare)
    service.record = in_phase("after_answer", service.record)
    signal.signal(signal.SIGUSR1, dump)
    try:
        uvicorn.run(container.app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    finally:
        dump()


if __name__ == "__main__":
    main()
