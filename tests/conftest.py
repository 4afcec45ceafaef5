"""Fixtures every test may ask for: containers on SQLite, gateways as processes, the fake upstreams.
Plain helpers live in tests/support, imported by name."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chatgw.catalog import Catalog, ModelEntry
from chatgw.compose import Container, build
from chatgw.settings import Settings
from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.fake_responses import FakeResponses
from tests.support.sdk import close_sdk_clients
from tests.support.servers import Gateway, free_port, running_gateway

pytest_plugins = ["tests.support.dynamo"]


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
def _responses_server() -> Iterator[FakeResponses]:
    server = FakeResponses().start()
    yield server
    server.stop()


@pytest.fixture
def fake_responses(_responses_server: FakeResponses) -> Iterator[FakeResponses]:
    _responses_server.reset()
    yield _responses_server
    _responses_server.reset()


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


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    yield
    close_sdk_clients()
