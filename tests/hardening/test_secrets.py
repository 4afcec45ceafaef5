"""No secret anywhere it should not be. A representative session (keys made with `chatgw keys`,
requests to `chatgw serve` as a real process with DEBUG logs, on SQLite and on DynamoDB) collects
every log line it wrote, every error body it answered, and every byte or item its store holds,
and finds no API key, no key secret, no pepper, no upstream key, and no prompt text unless prompt
logging is on."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.fakes.fake_openai import FakeOpenAI, Script
from tests.support.polling import eventually
from tests.support.servers import free_port, stop, wait_healthy

CHAT = "/v2/llms/chat/completions"
BANNER = "development key (shown once"


@dataclass
class Session:
    base_url: str
    state_dir: Path
    output: Path
    keys: dict[str, str] = field(default_factory=dict)
    error_bodies: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    def post(self, key: str | None, body: bytes | dict[str, object], **headers: str) -> httpx.Response:
        if key is not None:
            headers.setdefault("authorization", f"Bearer {key}")
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.post(self.base_url + CHAT, content=content, headers=headers, timeout=20)
        self.collect(r.status_code, r.text)
        return r

    def collect(self, status: int, text: str) -> None:
        if status >= 400:
            self.error_bodies.append(text)
        else:
            self.answers.append(text)
            self.error_bodies += [e for e in text.split("\n\n") if e.startswith('data: {"error"')]


@contextlib.contextmanager
def serve(state_dir: Path, env: dict[str, str], store_args: list[str]) -> Iterator[Session]:
    port = free_port()
    output = state_dir.parent / f"serve-{port}.log"
    with output.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "chatgw.cli.main", "serve", "--port", str(port), *store_args],
            env={**os.environ, **env, "CHATGW_STATE_DIR": str(state_dir)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, process=process)
            yield Session(base, state_dir, output)
        finally:
            stop(process)


@dataclass
class StoreUnderTest:
    """How a session reaches its store: CLI options and environment, how to make its usage writes
    fail from outside, how many events it holds, and every byte it stores."""

    args: list[str]
    env: dict[str, str]
    fail_usage_writes: Callable[[], AbstractContextManager[object]]
    event_count: Callable[[], int]
    stored: Callable[[], bytes]


def sqlite_store(state_dir: Path) -> StoreUnderTest:
    db = state_dir / "chatgw.db"

    @contextlib.contextmanager
    def failing() -> Iterator[None]:
        outside = sqlite3.connect(str(db), isolation_level=None)
        outside.execute("CREATE TRIGGER fail BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
        try:
            yield
        finally:
            outside.execute("DROP TRIGGER fail")
            outside.close()

    def count() -> int:
        with contextlib.closing(sqlite3.connect(str(db))) as outside:
            return int(outside.execute("SELECT count(*) FROM events").fetchone()[0])

    def stored() -> bytes:
        skip = ("dev-key", "pepper.json")  # the key shown once by design, and the pepper file
        return b"".join(p.read_bytes() for p in sorted(state_dir.iterdir()) if p.is_file() and p.name not in skip)

    return StoreUnderTest(["--state-dir", str(state_dir)], {}, failing, count, stored)


@contextlib.contextmanager
def dynamodb_store(request: pytest.FixtureRequest) -> Iterator[StoreUnderTest]:
    from chatgw.store.dynamodb.tables import make_client
    from tests.support.faulty_proxy import TABLE_MISSING, Fault, faulty_proxy, operation

    tables = request.getfixturevalue("dynamo_tables")
    client = make_client(endpoint_url=tables.endpoint, region="us-east-1")
    with faulty_proxy(tables.endpoint) as proxy:

        def scan(table: str) -> list[dict[str, object]]:
            return list(client.scan(TableName=table, ConsistentRead=True)["Items"])

        def count() -> int:
            return sum(1 for item in scan(tables.usage) if str(item["sk"]["S"]).startswith("EV#"))  # type: ignore[index]

        def stored() -> bytes:
            return json.dumps([scan(tables.keys), scan(tables.usage)]).encode()

        env = {
            "CHATGW_KEYS_TABLE": tables.keys,
            "CHATGW_USAGE_TABLE": tables.usage,
            "AWS_ENDPOINT_URL_DYNAMODB": proxy.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        yield StoreUnderTest(
            [],
            env,
            lambda: proxy.injecting(Fault(operation("PutItem", containing=b"EV#"), answer=TABLE_MISSING)),
            count,
            stored,
        )
    client.close()


def admin(env: dict[str, str], store: StoreUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    """`chatgw keys ...` as an operator runs it. Its stdout shows a new key once, by design."""
    return subprocess.run(
        [sys.executable, "-m", "chatgw.cli.main", "keys", *args, *store.args],
        env={**os.environ, **env, **store.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def run_session(
    tmp_path: Path, log_prompts: bool, store: StoreUnderTest, upstream: FakeOpenAI
) -> tuple[Session, dict[str, str], str]:
    """Returns the session, the secrets that must never show, and the prompt marker."""
    state_dir = tmp_path / "state"
    pepper = f"pepper-{uuid.uuid4().hex}"
    upstream_key = f"sk-upstream-{uuid.uuid4().hex}"
    marker = f"PROMPT-MARKER-{uuid.uuid4().hex}"
    env = {
        "CHATGW_LOG_LEVEL": "DEBUG",
        "CHATGW_KEY_PEPPER": pepper,
        "CHATGW_LOG_PROMPTS": "true" if log_prompts else "false",
        "CHATGW_KEY_CACHE_SECONDS": "0",
        "CHATGW_MAX_BODY_BYTES": "4096",
        "SOME_UPSTREAM_API_KEY": upstream_key,
        "CHATGW_MODELS": json.dumps(
            {
                "echo": {"backend": "echo"},
                "gpt": {"backend": "openai", "base_url": upstream.base_url, "api_key_env": "SOME_UPSTREAM_API_KEY"},
            }
        ),
        **store.env,
    }
    keys: dict[str, str] = {}
    admin_stderr: list[str] = []
    for name, options in {
        "plain": [],
        "limited": ["--rpm", "2"],
        "no-stream": ["--no-streaming"],
        "disabled": [],
    }.items():
        created = admin(env, store, "create", "--name", name, "--json", *options)
        keys[name] = json.loads(created.stdout)["key"]
        admin_stderr.append(created.stderr)
    admin_stderr.append(admin(env, store, "disable", keys["disabled"].split("_")[1]).stderr)
    listed = admin(env, store, "list", "--json")
    admin_stderr.append(listed.stderr)
    assert not any(k in listed.stdout or k.split("_")[2] in listed.stdout for k in keys.values())
    user = [{"role": "user", "content": f"please keep {marker} secret"}]
    with serve(state_dir, env, [*store.args, "--dev-key"]) as s:  # on DynamoDB, only --dev-key makes one
        s.error_bodies += admin_stderr
        plain, limited = keys["plain"], keys["limited"]
        (dev_key_file,) = state_dir.glob("dev-key*")  # `dev-key`, or `dev-key.<table>` on DynamoDB
        keys["dev"] = dev_key_file.read_text().strip()
        s.post(plain, {"model": "echo", "messages": user})
        assert eventually(lambda: store.event_count() == 1)
        with store.fail_usage_writes():
            s.post(plain, {"model": "echo", "messages": user})  # its usage goes to a `usage_event` log line
            s.post(plain, {"model": "echo", "messages": user, "stream": True})
            assert eventually(lambda: s.output.read_text().count('"msg": "usage_event"') == 2, timeout=15)
        # an upstream model: its key goes to the upstream alone, even when the upstream echoes it
        s.post(plain, {"model": "gpt", "messages": user})
        s.post(plain, {"model": "gpt", "messages": user, "stream": True, "stream_options": {"include_usage": True}})
        echoed = {"error": {"message": f"Incorrect API key provided: {upstream_key}", "param": None}}
        upstream.then(Script(status=400, body=echoed))
        s.post(plain, {"model": "gpt", "messages": user})
        upstream.then(*[Script(status=500, body=echoed)] * 3)
        s.post(plain, {"model": "gpt", "messages": user, "stream": True})
        upstream.then(Script(error_event_after_chunks=2))
        s.post(plain, {"model": "gpt", "messages": user, "stream": True})
        assert {r.headers.get("authorization") for r in upstream.requests} == {f"Bearer {upstream_key}"}
        assert all(marker in json.dumps(r.body) for r in upstream.requests)  # prompts do reach the upstream
        s.post(keys["dev"], {"model": "echo", "messages": user}, **{"x-api-key": keys["dev"]})
        s.post(plain, {"model": "echo", "messages": user, "stream": True, "stream_options": {"include_usage": True}})
        for _ in range(3):
            s.post(limited, {"model": "echo", "messages": user})  # the third is a 429
        s.post(keys["no-stream"], {"model": "echo", "messages": user, "stream": True})  # 403
        s.post(keys["disabled"], {"model": "echo", "messages": user})  # 403
        s.post(plain[:-3] + "xyz", {"model": "echo", "messages": user})  # wrong secret
        s.post(plain + "extra", {"model": "echo", "messages": user})  # malformed
        s.post(None, {"model": "echo", "messages": user}, **{"x-api-key": plain, "authorization": f"Bearer {limited}"})
        s.post(None, {"model": "echo", "messages": user}, **{"x-api-key": f"{plain} {plain}"})
        s.post(plain, {"model": "nope", "messages": user})  # 404
        s.post(plain, {"model": "echo", "messages": [{"role": "wizard", "content": marker}]})  # 400
        s.post(plain, {"model": "echo", "messages": user, "api_key": plain, "base_url": "http://127.0.0.2"})  # 400
        s.post(plain, {"model": "echo", "messages": user, "metadata": {"api_key": upstream_key}})  # 400
        s.post(plain, {"model": "echo", "messages": user, "temperature": marker})  # 400
        s.post(plain, b'{"model": "echo", "messages": [{"role": "user", "content": "' + marker.encode() + b'"')
        s.post(plain, {"model": "echo", "messages": [{"role": "user", "content": marker * 200}]})  # 413
        s.post(
            plain,
            {
                "model": "echo",
                "messages": user,
                "tool_choice": "required",
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
        )
        r = httpx.get(s.base_url + f"/v1/models?api_key={plain}", timeout=10)  # never read from the query
        s.collect(r.status_code, r.text)
        for path in ("/v1/models", "/v2/llms", "/v1/models/echo", "/v1/models/nope"):
            r = httpx.get(s.base_url + path, headers={"x-api-key": plain}, timeout=10)
            s.collect(r.status_code, r.text)
        with httpx.stream(
            "POST",
            s.base_url + CHAT,
            json={"model": "echo", "messages": [{"role": "user", "content": marker + " word" * 300}], "stream": True},
            headers={"x-api-key": plain},
            timeout=10,
        ) as r:
            next(r.iter_lines())  # and the client leaves mid-stream
    versioned = {}
    if (state_dir / "pepper.json").exists():  # the state folder's generated pepper (SQLite)
        versioned = {"pepper v1": json.loads((state_dir / "pepper.json").read_text())["v1"]}
    return s, {**keys, "pepper": pepper, **versioned, "upstream": upstream_key}, marker


@pytest.mark.parametrize(
    ("store_kind", "log_prompts"),
    [("sqlite", False), ("sqlite", True), ("dynamodb", False)],
    ids=["sqlite-prompts-not-logged", "sqlite-prompts-logged", "dynamodb-prompts-not-logged"],
)
def test_no_secret_in_logs_errors_or_store(
    tmp_path: Path, request: pytest.FixtureRequest, fake_openai: FakeOpenAI, store_kind: str, log_prompts: bool
) -> None:
    with contextlib.ExitStack() as stack:
        if store_kind == "sqlite":
            store = sqlite_store(tmp_path / "state")
        else:
            store = stack.enter_context(dynamodb_store(request))
        session, secrets, marker = run_session(tmp_path, log_prompts, store, fake_openai)
        stored = store.stored()
    output = session.output.read_text()
    lines = output.splitlines()
    banner = [i for i, line in enumerate(lines) if BANNER in line]
    assert len(banner) == 1  # the development key is shown once, on the line after this one, by design
    del lines[banner[0] + 1]
    logs = "\n".join(lines)
    json_lines = [json.loads(line) for line in lines if line.startswith("{")]
    assert len([line for line in json_lines if line["msg"] == "usage_event"]) == 2  # the failed ledger writes
    assert any(line.get("key_id") for line in json_lines)  # keys are named by their public id
    errors = "\n".join(session.error_bodies)
    assert "Incorrect API key provided: ***" in errors  # the upstream's words, its key scrubbed
    assert len(session.error_bodies) >= 14
    assert stored

    for name, secret in secrets.items():
        pieces = [secret]
        if secret.startswith("cgw_"):
            pieces.append(secret.split("_")[2])  # the secret part alone
        for piece in pieces:
            assert piece not in logs, f"{name} in the logs"
            assert piece not in errors, f"{name} in an error body"
            assert piece.encode() not in stored, f"{name} in the store"
    assert marker not in errors, "prompt text in an error body"
    assert marker.encode() not in stored, "prompt text in the store"
    if log_prompts:
        assert marker in logs
        assert [line for line in json_lines if line["msg"] == "prompt" and marker in line["body"]]
    else:
        assert marker not in logs, "prompt text in the logs"
    assert "Traceback" not in output
