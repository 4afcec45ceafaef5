"""Limits and the ledger end to end: `chatgw serve` in a subprocess, keys made with the real CLI,
the official openai SDK as the client; on SQLite and on DynamoDB (a moto server on loopback)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import openai_client

BIN = Path(sys.executable).parent
PEPPER = "e2e-pepper"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    base_url: str
    store_args: list[str]
    env: dict[str, str]
    log: Path

    def cli(self, *argv: str) -> Any:
        done = subprocess.run(
            [str(BIN / "chatgw"), *argv, *self.store_args, "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def client(self, key: str) -> openai.OpenAI:
        return openai_client(f"{self.base_url}/v2/llms", key, max_retries=0, timeout=30)

    def secrets_in_log(self, secret: str) -> bool:
        return secret in self.log.read_text()


@pytest.fixture(params=["sqlite", "dynamodb"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    env = {**os.environ, "CHATGW_KEY_PEPPER": PEPPER, "CHATGW_LOG_LEVEL": "DEBUG"}
    for name in ("CHATGW_KEYS_TABLE", "CHATGW_USAGE_TABLE", "CHATGW_MODELS"):
        env.pop(name, None)
    with _serve(store_args(request, env, tmp_path), env, tmp_path) as served_:
        yield served_


def store_args(request: pytest.FixtureRequest, env: dict[str, str], tmp_path: Path) -> list[str]:
    """`chatgw serve`'s store options for the fixture's param: a state folder, or the moto tables
    (whose endpoint goes into `env`)."""
    if request.param == "sqlite":
        return ["--state-dir", str(tmp_path / "state")]
    tables = request.getfixturevalue("dynamo_tables")
    env["AWS_ENDPOINT_URL_DYNAMODB"] = tables.endpoint
    return ["--keys-table", tables.keys, "--usage-table", tables.usage]


@contextmanager
def _serve(store_args: list[str], env: dict[str, str], tmp_path: Path) -> Iterator[Served]:
    """`chatgw serve` in a subprocess on a free port, its output in a log file."""
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "chatgw"), "serve", "--port", str(port), *store_args],
            env={**env, "CHATGW_STATE_DIR": str(tmp_path / "state")},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield Served(base_url, store_args, env, log)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _away_from_a_minute_boundary(need_seconds: int = 15) -> None:
    """Rate windows are calendar minutes, and this gateway is another process (no clock to inject):
    start a few requests that take well under a second at least 15 s before a minute ends (15x)."""
    second = datetime.now(UTC).second
    if second > 60 - need_seconds:
        time.sleep(61 - second)


def _ask(client: openai.OpenAI, text: str) -> Any:
    return client.chat.completions.create(model="echo", messages=[{"role": "user", "content": text}])


def _burst(client: openai.OpenAI, label: str, n: int) -> list[str]:
    """`n` requests at once: "200" or "429" for each."""

    def one(i: int) -> str:
        try:
            _ask(client, f"{label} {i}")
        except openai.RateLimitError:
            return "429"
        return "200"

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def test_rpm_refuses_the_third_request_and_usage_matches(served: Served) -> None:
    created = served.cli("keys", "create", "--name", "e2e", "--models", "echo", "--rpm", "2")
    key, key_id = created["key"], created["key_id"]
    client = served.client(key)
    _away_from_a_minute_boundary()

    answers = [_ask(client, "hello there"), _ask(client, "a somewhat longer question, with more tokens in it")]
    with pytest.raises(openai.RateLimitError) as refused:
        _ask(client, "one too many")
    response = refused.value.response
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-ratelimit-limit-requests"] == "2"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.value.code == "rate_limit_exceeded"

    reported = {
        "requests": 2,
        "prompt_tokens": sum(a.usage.prompt_tokens for a in answers),
        "completion_tokens": sum(a.usage.completion_tokens for a in answers),
        "total_tokens": sum(a.usage.total_tokens for a in answers),
    }
    deadline = time.monotonic() + 30  # the event is written just after the response (30 s bounds a bug)
    while True:
        rows = served.cli("usage", "--key", key_id)
        if (rows and rows[0]["requests"] == 2) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(rows) == 1
    assert {k: rows[0][k] for k in reported} == reported
    by_model = served.cli("usage", "--key", key_id, "--by-model")
    assert [(r["model"], r["total_tokens"]) for r in by_model] == [("echo", reported["total_tokens"])]
    assert not served.secrets_in_log(key.rsplit("_", 1)[1])


def test_fifty_concurrent_requests_at_five_left_admit_five(served: Served) -> None:
    created = served.cli("keys", "create", "--name", "burst", "--models", "echo", "--rpm", "7")
    client = served.client(created["key"])
    _away_from_a_minute_boundary(25)
    _ask(client, "one")
    _ask(client, "two")  # 5 left in this minute

    outcomes = _burst(client, "request", 50)
    assert outcomes.count("200") == 5
    assert outcomes.count("429") == 45


def test_rotation_replaces_the_secret_at_the_gateway(served: Served) -> None:
    created = served.cli("keys", "create", "--name", "r", "--models", "echo")
    rotated = served.cli("keys", "rotate", created["key_id"])
    # The gateway caches a key record for CHATGW_KEY_CACHE_SECONDS (30 s): this key was never
    # used before the rotation, so the new secret works and the old one does not, at once.
    assert _ask(served.client(rotated["key"]), "hi").choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        _ask(served.client(created["key"]), "hi")


def test_a_failed_usage_write_is_logged_and_the_answer_kept(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """DynamoDB with a usage table that does not exist: admission is impossible (503 for a
    limited key), and for an unlimited key the answer arrives and the event becomes a log line."""
    tables = request.getfixturevalue("dynamo_tables")
    env = {**os.environ, "CHATGW_KEY_PEPPER": PEPPER, "AWS_ENDPOINT_URL_DYNAMODB": tables.endpoint}
    store_args = ["--keys-table", tables.keys, "--usage-table", "no-such-usage-table"]
    admin = Served("", store_args, env, tmp_path / "unused.log")
    free = admin.cli("keys", "create", "--name", "free", "--models", "echo")
    limited = admin.cli("keys", "create", "--name", "limited", "--models", "echo", "--rpm", "5")
    with _serve(store_args, env, tmp_path) as served:
        with pytest.raises(openai.InternalServerError) as unavailable:
            _ask(served.client(limited["key"]), "hi")
        assert unavailable.value.status_code == 503
        answer = _ask(served.client(free["key"]), "keep this answer")
        assert answer.usage is not None
        deadline = time.monotonic() + 30  # a bound against a bug
        lines: list[dict[str, Any]] = []
        while not lines and time.monotonic() < deadline:
            time.sleep(0.2)
            lines = [json.loads(x) for x in served.log.read_text().splitlines() if '"usage_event"' in x]
        assert len(lines) == 1
        event = lines[0]["usage_event"]
        assert event["key_id"] == free["key_id"]
        assert event["total_tokens"] == answer.usage.total_tokens
        for key in (free["key"], limited["key"]):
            assert not served.secrets_in_log(key.rsplit("_", 1)[1])


def test_store_round_trips_per_request_on_dynamodb(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Counted at the moto server while the gateway serves real requests."""
    tables = request.getfixturevalue("dynamo_tables")
    moto = request.getfixturevalue("moto_server")
    env = {**os.environ, "CHATGW_KEY_PEPPER": PEPPER, "AWS_ENDPOINT_URL_DYNAMODB": tables.endpoint}
    store_args = ["--keys-table", tables.keys, "--usage-table", tables.usage]
    admin = Served("", store_args, env, tmp_path / "unused.log")
    limited = admin.cli("keys", "create", "--name", "limited", "--models", "echo", "--rpm", "100")
    free = admin.cli("keys", "create", "--name", "free", "--models", "echo")
    with _serve(store_args, env, tmp_path) as served:
        _away_from_a_minute_boundary()

        def settled(expected: Counter[str]) -> Counter[str]:
            deadline = time.monotonic() + 30  # the usage writes run just after the response
            while any(moto.operations[op] < n for op, n in expected.items()) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.1)  # and nothing more arrives
            return moto.take()

        moto.take()
        # settlement: the event's PutItem, then the month and the day item (2 UpdateItem); no transaction
        _ask(served.client(limited["key"]), "cold key cache")
        expected = Counter(GetItem=1, UpdateItem=1 + 2, PutItem=1)
        assert settled(expected) == expected
        for _ in range(3):
            _ask(served.client(limited["key"]), "warm key cache")
            expected = Counter(UpdateItem=1 + 2, PutItem=1)
            assert settled(expected) == expected
        _ask(served.client(free["key"]), "no limits")
        _ask(served.client(free["key"]), "no limits, warm")
        expected = Counter(GetItem=1, PutItem=2, UpdateItem=4)
        assert settled(expected) == expected
