"""Fixtures shared by the test suites: the fake upstreams, started once per session on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_openai import FakeOpenAI


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
