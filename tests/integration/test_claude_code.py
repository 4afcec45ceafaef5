"""Claude Code itself (the pinned CLI of tests/clients) answers through `chatgw serve` to the echo model,
with a chatgw key as `ANTHROPIC_AUTH_TOKEN` (Bearer) and as `ANTHROPIC_API_KEY` (x-api-key); and to the
fake Anthropic API (the `anthropic` backend) and the fake Bedrock runtime (`bedrock`, InvokeModel).

Claude Code falls back to a buffered request in silence when a stream breaks, so stdout alone proves
little: the gateway's ledger must hold exactly one request, streamed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.model import ANSWER
from tests.support.messages_door import INVOKE_MODEL_ID, claude_upstreams
from tests.support.polling import eventually
from tests.support.servers import Gateway, running_gateway
from tests.support.tools import ROOT, missing_tool

CLAUDE = ROOT / "tests" / "clients" / "node_modules" / ".bin" / "claude"
DEFAULT_MODEL = "claude-opus-5-5"
"""What this Claude Code version asks for unless told (`ANTHROPIC_MODEL`)."""
PROMPT = "the gateway answers Claude Code"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, _anthropic_server: FakeAnthropic, _bedrock_server: FakeBedrock
) -> Iterator[Gateway]:
    upstreams, env = claude_upstreams(_anthropic_server, _bedrock_server)
    catalog = {"echo": {"backend": "echo", "aliases": [DEFAULT_MODEL]}, **upstreams}
    env["CHATGW_MODELS"] = json.dumps(catalog)
    with running_gateway(tmp_path_factory.mktemp("gw") / "state", env) as gw:
        yield gw


def run_claude(base_url: str, home: Path, credentials: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if not CLAUDE.exists():
        missing_tool("claude", "run `make clients` (npm installs the pinned Claude Code into tests/clients)")
    work = home / "work"
    work.mkdir(parents=True)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TERM": "dumb",
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": base_url,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",  # a failure must show, not be retried for half a minute
        **credentials,
    }
    # options before -p; no tools: echo is not a model that can call one
    return subprocess.run(
        [str(CLAUDE), "--tools", "", "-p", PROMPT],
        env=env,
        cwd=work,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("credential", "model"),
    # its default model reaches echo by an alias; or it is told the catalog's name
    [("ANTHROPIC_AUTH_TOKEN", None), ("ANTHROPIC_API_KEY", "echo")],
)
def test_claude_code_answers_through_one_streamed_request(
    gateway: Gateway, tmp_path: Path, credential: str, model: str | None
) -> None:
    key = gateway.create_key()
    credentials = {credential: key, **({"ANTHROPIC_MODEL": model} if model else {})}
    done = run_claude(gateway.base_url, tmp_path / "home", credentials)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == PROMPT
    assert ledger(gateway, key) == [(True, "ok", model or DEFAULT_MODEL)]


def ledger(gateway: Gateway, key: str) -> list[tuple[bool, str, str]]:
    store = gateway.store()
    events = eventually(lambda: store.usage_events(key.split("_")[1]))
    store.close()
    return [(e.streamed, e.status, e.model) for e in events]


def test_claude_code_answers_from_the_anthropic_api_through_one_streamed_request(
    gateway: Gateway, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    key = gateway.create_key()
    credentials = {"ANTHROPIC_AUTH_TOKEN": key, "ANTHROPIC_MODEL": "claude-via-anthropic"}
    done = run_claude(gateway.base_url, tmp_path / "home", credentials)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ANSWER
    assert [(r.path, r.body["stream"], r.body["model"]) for r in fake_anthropic.requests] == [
        ("/v1/messages", True, "up-claude-via-anthropic")
    ]
    assert ledger(gateway, key) == [(True, "ok", "claude-via-anthropic")]


def test_claude_code_answers_from_bedrock_invoke_model_through_one_streamed_request(
    gateway: Gateway, fake_bedrock: FakeBedrock, tmp_path: Path
) -> None:
    key = gateway.create_key()
    credentials = {"ANTHROPIC_API_KEY": key, "ANTHROPIC_MODEL": "claude-via-bedrock"}
    done = run_claude(gateway.base_url, tmp_path / "home", credentials)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ANSWER
    assert [r.path for r in fake_bedrock.requests] == [f"/model/{INVOKE_MODEL_ID}/invoke-with-response-stream"]
    assert ledger(gateway, key) == [(True, "ok", "claude-via-bedrock")]
