"""Limits and the ledger end to end: `chatgw serve` in a subprocess, keys made with the real CLI,
the official openai SDK as the client; on SQLite and on DynamoDB (a moto server on loopback)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.served import (
    PEPPER,
    Served,
    ask,
    away_from_a_minute_boundary,
    burst,
    serve,
    store_args,
)


@pytest.fixture(params=["sqlite", "dynamodb"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    env = {**os.environ, "CHATGW_KEY_PEPPER": PEPPER, "CHATGW_LOG_LEVEL": "DEBUG"}
    for name in ("CHATGW_KEYS_TABLE", "CHATGW_USAGE_TABLE", "CHATGW_MODELS"):
        env.pop(name, None)
    with serve(store_args(request, env, tmp_path), env, tmp_path) as served_:
        yield served_


def test_rpm_refuses_the_third_request_and_usage_matches(served: Served) -> None:
    created = served.cli("keys", "create", "--name", "e2e", "--models", "echo", "--rpm", "2")
    key, key_id = created["key"], created["key_id"]
    client = served.client(key)
    away_from_a_minute_boundary()

    answers = [ask(client, "hello there"), ask(client, "a somewhat longer question, with more tokens in it")]
    with pytest.raises(openai.RateLimitError) as refused:
        ask(client, "one too many")
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
    away_from_a_minute_boundary(25)
    ask(client, "one")
    ask(client, "two")  # 5 left in this minute

    outcomes = burst(client, "request", 50)
    assert outcomes.count("200") == 5
    assert outcomes.count("429") == 45


def test_rotation_replaces_the_secret_at_the_gateway(served: Served) -> None:
    created = served.cli("keys", "create", "--name", "r", "--models", "echo")
    rotated = served.cli("keys", "rotate", created["key_id"])
    # The gateway caches a key record for CHATGW_KEY_CACHE_SECONDS (30 s): this key was never
    # used before the rotation, so the new secret works and the old one does not, at once.
    assert ask(served.client(rotated["key"]), "hi").choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        ask(served.client(created["key"]), "hi")


def test_a_failed_usage_write_is_logged_and_the_answer_kept(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """DynamoDB with a usage table that does not exist: admission is impossible (503 for a
    limited key), and for an unlimited key the answer arrives and the event becomes a log line."""
    tables = request.getfixturevalue("dynamo_tables")
    env = {**os.environ, "CHATGW_KEY_PEPPER": PEPPER, "AWS_ENDPOINT_URL_DYNAMODB": tables.endpoint}
    store_args = ["--keys-table", tables.keys, "--usage-table", "no-such-usage-table"]
    admin = Served("", store_args, env, tmp_path / "unused.log")
    free = admin.cli("keys", "create", "--name", "free", "--models", "echo")
    limited = admin.cli("keys", "create", "--name", "limited", "--models", "echo", "--rpm", "5")
    with serve(store_args, env, tmp_path) as served:
        with pytest.raises(openai.InternalServerError) as unavailable:
            ask(served.client(limited["key"]), "hi")
        assert unavailable.value.status_code == 503
        answer = ask(served.client(free["key"]), "keep this answer")
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
    with serve(store_args, env, tmp_path) as served:
        away_from_a_minute_boundary()

        def settled(expected: Counter[str]) -> Counter[str]:
            deadline = time.monotonic() + 30  # the usage writes run just after the response
            while any(moto.operations[op] < n for op, n in expected.items()) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.1)  # and nothing more arrives
            return moto.take()

        moto.take()
        # settlement: the event's PutItem, then the month and the day item (2 UpdateItem); no transaction
        ask(served.client(limited["key"]), "cold key cache")
        expected = Counter(GetItem=1, UpdateItem=1 + 2, PutItem=1)
        assert settled(expected) == expected
        for _ in range(3):
            ask(served.client(limited["key"]), "warm key cache")
            expected = Counter(UpdateItem=1 + 2, PutItem=1)
            assert settled(expected) == expected
        ask(served.client(free["key"]), "no limits")
        ask(served.client(free["key"]), "no limits, warm")
        expected = Counter(GetItem=1, PutItem=2, UpdateItem=4)
        assert settled(expected) == expected
