"""The Responses door in front of a Responses upstream (the `openai` backend with `api: responses`,
the fake Responses server): the client's body goes nearly as is, so hosted tools reach the upstream
(even when `tool_choice` requires one), encrypted reasoning comes back unchanged and goes up again
as it was, and the upstream's own events are forwarded, renumbered, to the SDK and to Codex."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fakes.fake_responses import ENCRYPTED, FakeResponses, Script
from tests.integration.test_responses_clients import codex_exec
from tests.support.sdk import openai_client
from tests.support.served import PEPPER, Served, serve


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, _responses_server: FakeResponses) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("responses-same")
    env = {**os.environ, "CHATGW_KEY_PEPPER": PEPPER, "CHATGW_LOG_LEVEL": "INFO", "FAKE_UPSTREAM_KEY": "sk-fake"}
    env["CHATGW_MODELS"] = json.dumps({"gpt-5.5": _responses_server.catalog_entry("gpt-5.5")})
    for name in ("CHATGW_KEYS_TABLE", "CHATGW_USAGE_TABLE"):
        env.pop(name, None)
    with serve(["--state-dir", str(tmp_path / "state")], env, tmp_path) as served_:
        yield served_


@pytest.fixture(scope="module")
def key(served: Served) -> str:
    return str(served.cli("keys", "create", "--name", "same")["key"])


@pytest.fixture
def upstream(_responses_server: FakeResponses) -> Iterator[FakeResponses]:
    _responses_server.reset()
    yield _responses_server
    _responses_server.reset()


@pytest.mark.parametrize("stream", [False, True])
def test_encrypted_reasoning_round_trips_and_hosted_tools_pass(
    served: Served, key: str, upstream: FakeResponses, stream: bool
) -> None:
    gw = openai_client(served.base_url + "/v1", key, max_retries=0, timeout=30)
    upstream.then(Script(reasoning=True))
    asked = {
        "model": "gpt-5.5",
        "input": "hello",
        "include": ["reasoning.encrypted_content"],
        "tools": [{"type": "web_search"}],
        "tool_choice": "required",
    }
    if stream:
        with gw.responses.stream(**asked) as events:
            first = events.get_final_response()
    else:
        first = gw.responses.create(**asked)
    assert first.id.startswith("resp_") and first.model == "gpt-5.5"
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content == ENCRYPTED
    assert upstream.requests[-1].body["tools"] == [{"type": "web_search"}]  # hosted, required, and sent
    history = [{"role": "user", "content": "hello"}, *[item.model_dump(exclude_none=True) for item in first.output]]
    gw.responses.create(model="gpt-5.5", input=[*history, {"role": "user", "content": "more"}])
    sent = upstream.requests[-1].body["input"]
    (reasoning_sent,) = [i for i in sent if i.get("type") == "reasoning"]
    assert reasoning_sent["encrypted_content"] == ENCRYPTED


def test_codex_through_the_door_to_a_responses_upstream(
    served: Served, key: str, upstream: FakeResponses, tmp_path: Path
) -> None:
    """The fake model calls Codex's first tool; Codex answers the call and the fake's final text
    quotes that answer. Codex's hosted tools reach the upstream, as it sent them."""
    done = codex_exec(served, key, tmp_path / "codex", "gpt-5.5", "say hi")
    assert done.returncode == 0, done.stderr
    first, second = (r.body for r in upstream.requests)
    assert {"web_search", "tool_search"} <= {t["type"] for t in first["tools"]}
    (result,) = [i for i in second["input"] if i.get("type") == "function_call_output"]
    assert done.stdout.strip() == f"The tool said: {result['output']}"


def test_a_required_hosted_tool_is_not_refused_for_this_upstream(
    served: Served, key: str, upstream: FakeResponses
) -> None:
    gw = openai_client(served.base_url + "/v1", key, max_retries=0, timeout=30)
    answer = gw.responses.create(
        model="gpt-5.5", input="x", tools=[{"type": "web_search"}], tool_choice={"type": "web_search"}
    )
    assert answer.status == "completed"
    with pytest.raises(openai.BadRequestError):  # the stateless rule holds for every backend
        gw.responses.create(model="gpt-5.5", input="x", previous_response_id="resp_1")
