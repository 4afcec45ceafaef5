"""`max_concurrent`: one key holding many long streams at once (each holds a Lambda environment up to
15 minutes) could exhaust the account's concurrency. A key with `--max-concurrent 2` gets a
429 for a third request while two streams are open, and a new request is admitted once one of them
has ended. `chatgw serve` in a subprocess (keys made with the real CLI), over HTTP, on SQLite and on
DynamoDB (a moto server on loopback); the upstream is the fake OpenAI server, whose streams wait on
a gate the test opens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatgw.access.keys import Limits, new_key
from chatgw.catalog import Catalog, ModelEntry
from chatgw.compose import build
from chatgw.conversation import Answer, Conversation
from chatgw.deadline import Deadline
from chatgw.settings import Settings
from chatgw.store import Store
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from chatgw.store.sqlite import SqliteStore
from tests.fakes.backends import ScriptedBackend
from tests.fakes.fake_openai import FakeOpenAI, Script
from tests.support.asgi import CHAT, Reply, call
from tests.support.polling import eventually
from tests.support.served import PEPPER, Served, serve, store_args

PROMPT = "please answer with a handful of words so that the stream has several chunks"
MESSAGE = "Too many requests in flight for this key: 2 at once."


@pytest.fixture(params=["sqlite", "dynamodb"])
def served(request: pytest.FixtureRequest, tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[Served]:
    env = {**os.environ, "CHATGW_KEY_PEPPER": PEPPER, "CHATGW_LOG_LEVEL": "INFO", "FAKE_UPSTREAM_KEY": "sk-fake"}
    env["CHATGW_MODELS"] = json.dumps({"m": fake_openai.catalog_entry("m")})
    for name in ("CHATGW_KEYS_TABLE", "CHATGW_USAGE_TABLE"):
        env.pop(name, None)
    with serve(store_args(request, env, tmp_path), env, tmp_path) as served_:
        yield served_


class Stream:
    """One streamed request held open: admitted once its first chunk has arrived."""

    def __init__(self, client: httpx.Client, stack: contextlib.ExitStack) -> None:
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
        self.response = stack.enter_context(client.stream("POST", "/v1/chat/completions", json=body))
        self.lines = self.response.iter_lines()
        if self.response.status_code == 200:
            self.first = next(line for line in self.lines if line.startswith("data: "))

    def rest(self) -> list[str]:
        return [line for line in self.lines if line.startswith("data: ")]


def _refused(client: httpx.Client, stream: bool) -> httpx.Response:
    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}
    return client.post("/v1/chat/completions", json=body)


def test_a_third_stream_is_refused_until_one_ends(served: Served, fake_openai: FakeOpenAI) -> None:
    created = served.cli("keys", "create", "--name", "streams", "--models", "m", "--max-concurrent", "2")
    assert created["limits"] == {"max_concurrent": 2}
    listed = served.cli("keys", "show", created["key_id"])
    assert listed["limits"]["max_concurrent"] == 2
    gates = [threading.Event() for _ in range(3)]
    # 60 s bounds a bug (the test opens each gate); the streams must outlive the refusals below
    fake_openai.then(*(Script(gate=gate, gate_wait_s=60) for gate in gates))
    headers = {"authorization": f"Bearer {created['key']}"}
    with (
        httpx.Client(base_url=served.base_url, headers=headers, timeout=60) as client,
        contextlib.ExitStack() as stack,
    ):
        first, second = Stream(client, stack), Stream(client, stack)
        assert (first.response.status_code, second.response.status_code) == (200, 200)

        for stream in (False, True):  # the attack: a third request, buffered or streamed
            refused = _refused(client, stream)
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            error = refused.json()["error"]
            assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
            assert error["message"].startswith(MESSAGE)
            assert refused.json()["request_id"] == refused.headers["x-request-id"]
        assert len(fake_openai.requests) == 2  # the refused requests never reached the upstream

        gates[0].set()  # the first stream ends
        assert first.rest()[-1] == "data: [DONE]"

        def admitted() -> Stream | None:
            attempt = Stream(client, stack)
            if attempt.response.status_code == 200:
                return attempt
            assert attempt.response.status_code == 429  # until its settlement released the slot
            attempt.response.close()
            time.sleep(0.1)
            return None

        third = eventually(admitted)
        assert third is not None and third.response.status_code == 200
        assert _refused(client, False).status_code == 429  # two in flight again

        gates[1].set()
        gates[2].set()
        assert second.rest()[-1] == "data: [DONE]" and third.rest()[-1] == "data: [DONE]"
    assert len(fake_openai.requests) == 3

    def logged_refusals() -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in served.log.read_text().splitlines() if x.startswith("{")]
        return [x for x in lines if x.get("msg") == "refused" and x.get("reason") == "concurrent"]

    assert eventually(lambda: len(logged_refusals()) >= 3)
    rows = eventually(lambda: [r for r in served.cli("usage", "--key", created["key_id"]) if r["requests"] == 3])
    assert len(rows) == 1  # every admitted stream was settled (and so released)


class HeldBackend(ScriptedBackend):
    """A buffered answer held until the test opens `gate` (30 s bounds a bug)."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__(["held", " answer"])
        self.gate = gate
        self.started = threading.Event()

    async def complete(self, request: Conversation, deadline: Deadline) -> Answer:
        self.started.set()
        await asyncio.to_thread(self.gate.wait, 30)
        return await super().complete(request, deadline)


@pytest.fixture(params=["sqlite", "dynamodb"])
def some_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        made: Store = SqliteStore(tmp_path / "chatgw.db")
    else:
        tables = request.getfixturevalue("dynamo_tables")
        client = make_client(endpoint_url=tables.endpoint, region="us-east-1")
        made = DynamoStore(client, tables.keys, tables.usage)
    yield made
    made.close()


def test_a_buffered_request_in_flight_holds_its_slot(some_store: Store, settings: Settings) -> None:
    """Buffered requests hold a Lambda environment as streams do: they count too. The gateway's
    clock is injected: the one-second local repeat of the refusal is passed by moving it on."""
    gate = threading.Event()
    backend = HeldBackend(gate)
    key, record = new_key("buffered", limits=Limits(max_concurrent=1))
    some_store.create_key(record)
    container = build(settings, store=some_store, catalog=Catalog({"m": ModelEntry("m", backend, "held")}))
    now = [datetime.now(UTC)]
    container.service.wall_clock = lambda: now[0]
    headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()

    async def scenario() -> tuple[Reply, Reply, Reply]:
        held = asyncio.create_task(call(container.app, "POST", CHAT, headers, body))
        await asyncio.to_thread(backend.started.wait, 30)
        refused = await call(container.app, "POST", CHAT, headers, body)
        gate.set()
        answered = await held  # its settlement runs before the app returns (a background task)
        now[0] += timedelta(seconds=2)  # past the local one-second repeat of the refusal
        return refused, answered, await call(container.app, "POST", CHAT, headers, body)

    refused, answered, after = asyncio.run(scenario())
    assert refused.status == 429 and refused.json()["error"]["message"].startswith(
        "Too many requests in flight for this key: 1 at once."
    )
    assert (answered.status, after.status) == (200, 200)
    assert backend.calls == 2  # the refused request never reached the backend
