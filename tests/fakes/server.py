"""Run an ASGI app with uvicorn in a thread, on a free loopback port, for the length of a test; and
what every fake upstream has alike (`ScriptedFake`)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from typing import Any, Generic, Self, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route


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


ScriptT = TypeVar("ScriptT")
RecordedT = TypeVar("RecordedT")


class ScriptedFake(Generic[ScriptT, RecordedT]):
    """What every fake upstream has alike: a queue of scripts (each request takes the next), the
    requests it received, stream events a test waits on, and a stall. A fake adds its routes and answers."""

    def __init__(self, routes: list[Route]) -> None:
        self.scripts: deque[ScriptT] = deque()
        self.requests: list[RecordedT] = []
        self.stream_aborted = threading.Event()
        self.stream_completed = threading.Event()
        self.stall = Stall()
        self._server = ThreadedServer(Starlette(routes=routes))

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        self.scripts.clear()
        self.requests.clear()
        self.stream_aborted.clear()
        self.stream_completed.clear()
        self.stall.release()

    def then(self, *scripts: ScriptT) -> Self:
        self.scripts.extend(scripts)
        return self

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> int:
        """How many requests arrived, once `count` did (or `timeout` passed): for calls that were abandoned."""
        limit = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < limit:
            time.sleep(0.01)
        return len(self.requests)


class HTTPFake(ScriptedFake[ScriptT, RecordedT]):
    """A fake of an HTTP upstream a catalog entry points at with `base_url`."""

    backend: dict[str, str]
    """The catalog entry's own fields (`{"backend": "openai"}`, ...)."""
    path_prefix = ""
    """Appended to the server's URL for `base_url` (the OpenAI SDK's convention is `/v1`)."""

    @property
    def base_url(self) -> str:
        return self._server.url + self.path_prefix

    def catalog_entry(self, name: str, **extra: Any) -> dict[str, Any]:
        """A `CHATGW_MODELS` entry for a model served by this fake (no retries, the key from
        `FAKE_UPSTREAM_KEY`)."""
        return {
            **self.backend,
            "base_url": self.base_url,
            "upstream_model": f"up-{name}",
            "api_key_env": "FAKE_UPSTREAM_KEY",
            "max_retries": 0,
            **extra,
        }
