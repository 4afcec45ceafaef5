"""`chatgw serve` as a real process on SQLite or DynamoDB, its keys made with the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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

from tests.support.sdk import openai_client
from tests.support.servers import free_port

BIN = Path(sys.executable).parent

PEPPER = "e2e-pepper"


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


def store_args(request: pytest.FixtureRequest, env: dict[str, str], tmp_path: Path) -> list[str]:
    """`chatgw serve`'s store options for the fixture's param: a state folder, or the moto tables
    (whose endpoint goes into `env`)."""
    if request.param == "sqlite":
        return ["--state-dir", str(tmp_path / "state")]
    tables = request.getfixturevalue("dynamo_tables")
    env["AWS_ENDPOINT_URL_DYNAMODB"] = tables.endpoint
    return ["--keys-table", tables.keys, "--usage-table", tables.usage]


@contextmanager
def serve(store_args: list[str], env: dict[str, str], tmp_path: Path) -> Iterator[Served]:
    """`chatgw serve` in a subprocess on a free port, its output in a log file."""
    port = free_port()
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


def away_from_a_minute_boundary(need_seconds: int = 15) -> None:
    """Rate windows are calendar minutes, and this gateway is another process (no clock to inject):
    start a few requests that take well under a second at least 15 s before a minute ends (15x)."""
    second = datetime.now(UTC).second
    if second > 60 - need_seconds:
        time.sleep(61 - second)


def ask(client: openai.OpenAI, text: str) -> Any:
    return client.chat.completions.create(model="echo", messages=[{"role": "user", "content": text}])


def burst(client: openai.OpenAI, label: str, n: int) -> list[str]:
    """`n` requests at once: "200" or "429" for each."""

    def one(i: int) -> str:
        try:
            ask(client, f"{label} {i}")
        except openai.RateLimitError:
            return "429"
        return "200"

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))
