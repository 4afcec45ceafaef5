"""The real clients of the Responses door through `chatgw serve`: Codex itself (`codex exec`, the
pinned CLI of tests/clients) and an Agents SDK tool loop (`Runner.run` over `OpenAIResponsesModel`),
to the echo model and to the fake OpenAI chat server (the door translates both ways)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.fake_openai import FakeOpenAI
from tests.support.served import PEPPER, Served, serve
from tests.support.tools import ROOT, missing_tool

CODEX = ROOT / "tests" / "clients" / "node_modules" / ".bin" / "codex"
CONFIG = """\
model = "{model}"
model_provider = "chatgw"
check_for_update_on_startup = false

[model_providers.chatgw]
name = "chatgw"
base_url = "{base_url}"
wire_api = "responses"
env_key = "CHATGW_API_KEY"
supports_websockets = false
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 30000

[features]
plugins = false

[analytics]
enabled = false
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, _openai_server: FakeOpenAI) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("responses-clients")
    env = {**os.environ, "CHATGW_KEY_PEPPER": PEPPER, "CHATGW_LOG_LEVEL": "INFO", "FAKE_UPSTREAM_KEY": "sk-fake"}
    # Codex asks for a model of its own catalog (gpt-5.5): the gateway's names are what it sends.
    models = {"gpt-5.5": {"backend": "echo"}, "gpt-5.1": _openai_server.catalog_entry("gpt-5.1")}
    env["CHATGW_MODELS"] = json.dumps(models)
    for name in ("CHATGW_KEYS_TABLE", "CHATGW_USAGE_TABLE"):
        env.pop(name, None)
    with serve(["--state-dir", str(tmp_path / "state")], env, tmp_path) as served_:
        yield served_


@pytest.fixture(scope="module")
def key(served: Served) -> str:
    return str(served.cli("keys", "create", "--name", "clients")["key"])


def codex_exec(served: Served, key: str, home: Path, model: str, prompt: str, prefix: str = "/v1") -> Any:
    if not CODEX.exists():
        missing_tool("codex", "run `make clients` (npm installs the pinned Codex CLI into tests/clients)")
    home.mkdir()
    (home / "work").mkdir()
    (home / "config.toml").write_text(CONFIG.format(model=model, base_url=served.base_url + prefix))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "CODEX_HOME": str(home),
        "TERM": "dumb",
        "LANG": "C.UTF-8",
        "CHATGW_API_KEY": key,
    }
    argv = [str(CODEX), "exec", "--skip-git-repo-check", "--ephemeral", prompt]
    return subprocess.run(
        argv, env=env, cwd=home / "work", stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )


def test_codex_exec_answers_through_the_door_to_echo(served: Served, key: str, tmp_path: Path) -> None:
    done = codex_exec(served, key, tmp_path / "codex", "gpt-5.5", "say hello to the gateway")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "say hello to the gateway"


def test_codex_exec_to_the_chat_upstream_on_the_v2_prefix(
    served: Served, key: str, tmp_path: Path, _openai_server: FakeOpenAI
) -> None:
    """The fake model calls Codex's first tool (with arguments Codex cannot use); Codex answers the
    call, and the fake's final text quotes that answer: a whole tool turn through the door."""
    _openai_server.reset()
    done = codex_exec(served, key, tmp_path / "codex", "gpt-5.1", "what is new", prefix="/v2/llms")
    assert done.returncode == 0, done.stderr
    first, second = (r.body for r in _openai_server.requests)
    assert first["stream"] is True and {t["type"] for t in first["tools"]} == {"function"}  # hosted ones dropped
    call = second["messages"][-2]["tool_calls"][0]
    result = second["messages"][-1]
    assert call["id"] == result["tool_call_id"] == "call_fake_1" and result["role"] == "tool"
    assert done.stdout.strip() == f"The tool said: {result['content']}"


def test_agents_sdk_tool_loop_finishes(served: Served, key: str, _openai_server: FakeOpenAI) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    asked: list[str] = []

    @function_tool
    def lookup(query: str) -> str:
        """Look something up."""
        asked.append(query)
        return f"found {query}"

    async def run() -> Any:
        client = AsyncOpenAI(base_url=served.base_url + "/v1", api_key=key, max_retries=0, timeout=30)
        try:
            model = OpenAIResponsesModel(model="gpt-5.1", openai_client=client)
            agent = Agent(name="helper", instructions="Use the tool.", tools=[lookup], model=model)
            return await Runner.run(agent, "otters", max_turns=4)
        finally:
            await client.close()

    _openai_server.reset()
    result = asyncio.run(run())
    assert asked == ["otters"]
    assert result.final_output == "The tool said: found otters"
    assert len(_openai_server.requests) == 2
