from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from chatgw.access.keys import new_key
from chatgw.catalog import Catalog, ModelEntry
from chatgw.compose import Container, build
from chatgw.settings import Settings
from chatgw.store.sqlite import SqliteStore
from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_openai import FakeOpenAI

pytest_plugins = ["tests.dynamo_fixtures"]

ROOT = Path(__file__).resolve().parent.parent

STRICT_ENV = "CHATGW_TEST_STRICT"
"""Set by `make test` (and so by CI): a tool a test needs that is missing fails the test."""
WITHOUT_ENV = "CHATGW_TEST_WITHOUT"
"""Tools left out on purpose, comma-separated (e.g. `python3.13`): their tests are skipped, by name."""


def missing_tool(tool: str, how: str) -> None:
    """A test cannot run because `tool` is missing: under `make test` that fails loudly (a skip would
    hide that part of the suite); with plain `pytest` it is a skip that says how to get the tool.
    Leaving a tool out on purpose is `CHATGW_TEST_WITHOUT=<tool>`, which the skip reason repeats."""
    if tool in {t.strip() for t in os.environ.get(WITHOUT_ENV, "").split(",")}:
        pytest.skip(f"{tool} left out on purpose ({WITHOUT_ENV})")
    message = f"{tool} is missing: {how}"
    if os.environ.get(STRICT_ENV) == "1":
        pytest.fail(f"{message} (`make test` runs every test; {WITHOUT_ENV}={tool} leaves it out on purpose)")
    pytest.skip(f"{message} (under `make test` this is a failure)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    base_url: str
    key: str
    state_dir: Path
    process: subprocess.Popen[str] | None = None

    @property
    def openai_base(self) -> str:
        return f"{self.base_url}/v2/llms"

    def store(self) -> SqliteStore:
        return SqliteStore(self.state_dir / "chatgw.db")

    def create_key(self, **fields: Any) -> str:
        store = self.store()
        key, record = new_key("test", **fields)
        store.create_key(record)
        store.close()
        return key


def wait_healthy(base_url: str, timeout: float = 20.0, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"gateway exited: {process.stdout.read() if process.stdout else ''}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("gateway did not become healthy")


@contextlib.contextmanager
def running_gateway(state_dir: Path, env: dict[str, str] | None = None) -> Iterator[Gateway]:
    """`chatgw serve` as a real process on a free loopback port, stopped on exit."""
    port = free_port()
    full_env = {**os.environ, "CHATGW_LOG_LEVEL": "WARNING", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "chatgw.cli.main", "serve", "--port", str(port), "--state-dir", str(state_dir)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process=process)
        key = (state_dir / "dev-key").read_text().strip()
        yield Gateway(base, key, state_dir, process)
    finally:
        stop(process)
        if process.stdout:
            process.stdout.close()


def stop(process: subprocess.Popen[Any]) -> None:
    """Terminate a server process, killing it if it does not exit within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    with contextlib.ExitStack() as stack:

        def start(env: dict[str, str] | None = None) -> Gateway:
            return stack.enter_context(running_gateway(tmp_path / f"state-{free_port()}", env))

        yield start


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return replace(Settings(), state_dir=tmp_path / "state", log_level="WARNING")


@pytest.fixture
def make_container(settings: Settings) -> Iterator[Callable[..., Container]]:
    """An in-process container on a SQLite store; `backends` adds fake models to the catalog."""
    made: list[Container] = []

    def make(backends: dict[str, Any] | None = None, **overrides: Any) -> Container:
        s = replace(settings, **overrides)
        container = build(s)
        if backends:
            entries = {e.name: e for e in container.catalog.entries()}
            for name, backend in backends.items():
                fallbacks = ()
                if isinstance(backend, tuple):
                    backend, fallbacks = backend
                entries[name] = ModelEntry(name, backend, f"fake {name}", fallbacks=fallbacks)
            catalog = Catalog(entries)
            container = build(s, store=container.store, catalog=catalog)
        made.append(container)
        return container

    yield make
    for c in made:
        c.store.close()


def add_key(container: Container, **fields: Any) -> str:
    key, record = new_key("test", pepper=container.settings.pepper, **fields)
    container.store.create_key(record)
    return key


class ThreadServer:
    """uvicorn on a free loopback port in a thread: a real socket, so disconnects are real."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_healthy(self.base_url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def eventually(probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `probe` until it returns something truthy: for effects that land after a response.
    It returns as soon as they do; `timeout` only bounds a bug (milliseconds are the norm)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


# ---- the fake upstreams, started once per session on loopback ------------------------------


@pytest.fixture(scope="session")
def _openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def fake_openai(_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    _openai_server.reset()
    yield _openai_server
    _openai_server.reset()


@pytest.fixture(scope="session")
def _bedrock_server() -> Iterator[FakeBedrock]:
    server = FakeBedrock().start()
    yield server
    server.stop()


@pytest.fixture
def fake_bedrock(_bedrock_server: FakeBedrock, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBedrock]:
    for name, value in FakeBedrock.AWS_ENV.items():
        monkeypatch.setenv(name, value)
    _bedrock_server.reset()
    yield _bedrock_server
    _bedrock_server.reset()


_sdk_clients: list[Any] = []


def openai_client(base_url: str, api_key: str, **options: Any) -> Any:
    """The official SDK's client, closed after the test (an unclosed one leaks its socket)."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key, **options)
    _sdk_clients.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    yield
    while _sdk_clients:
        _sdk_clients.pop().close()
