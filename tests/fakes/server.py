"""Run an ASGI app with uvicorn in a thread, on a free loopback port, for the length of a test."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn


class ThreadedServer:
    def __init__(self, app: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="critical",
            lifespan="off",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        self._thread.start()
        limit = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > limit or not self._thread.is_alive():
                raise RuntimeError("the fake server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


class Stall:
    """Where a fake upstream stops answering: it waits until the gateway gives up (its handler is
    cancelled) or the test ends (`release`, from the fake's `reset`). With it, "too slow" means
    never, not "slower than some number of seconds", so no test depends on the machine's speed.
    A handler released at the end of a test must end quietly: not finish its answer, and not set
    the fake's flags (`stream_completed`, `stream_aborted`), which belong to the next test by then."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._generation = 0

    async def wait(self) -> None:
        generation = self._generation
        self.reached.set()
        while generation == self._generation:
            await asyncio.sleep(0.01)

    def release(self) -> None:
        self._generation += 1
        self.reached.clear()
