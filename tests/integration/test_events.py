"""Every sample event in events/ through the buffered Lambda handler (Mangum), as `chatgw invoke` runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatgw.cli import main as cli
from chatgw.cli.invoke import PLACEHOLDER
from tests.support.events import EVENTS, EXPECTED, stream_end
from tests.support.tools import ROOT


def test_every_event_file_is_covered() -> None:
    assert {p.name for p in EVENTS} == set(EXPECTED)


@pytest.mark.parametrize("event", EVENTS, ids=lambda p: p.name)
def test_event_through_buffered_handler(
    event: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATGW_LOG_LEVEL", "WARNING")
    assert cli.main(["invoke", str(event), "--state-dir", str(tmp_path)]) == 0
    response = json.loads(capsys.readouterr().out)
    assert response["statusCode"] == EXPECTED[event.name], response
    headers = {k.lower(): v for k, v in response["headers"].items()}
    assert headers["x-request-id"]
    body = response["body"]
    assert PLACEHOLDER not in body
    if response["statusCode"] != 200:
        envelope = json.loads(body)
        assert "detail" not in envelope and envelope["request_id"] == headers["x-request-id"]
    elif "responses" in event.name:
        assert_responses_answer(body, streamed="stream" in event.name)
    elif "stream" in event.name:
        assert headers["content-type"].startswith("text/event-stream")
        assert body.endswith(stream_end(event.name))
    elif "chat" in event.name:
        completion = json.loads(body)
        assert completion["choices"][0]["message"]["content"] == "What is the capital of France?"
    elif "messages" in event.name:
        message = json.loads(body)
        assert message["content"] == [{"type": "text", "text": "What is the capital of France?"}]


def assert_responses_answer(body: str, *, streamed: bool) -> None:
    """The Responses door's answer to its sample event: the echo of the input, whole (buffered) or
    as the last event of the stream, `response.completed`."""
    if streamed:
        last = body.strip().split("\n\n")[-1]
        assert last.startswith("event: response.completed\n")
        answer = json.loads(last.split("\n", 1)[1].removeprefix("data: "))["response"]
    else:
        answer = json.loads(body)
    assert answer["status"] == "completed"
    assert answer["output"][0]["content"][0]["text"].startswith("Hello from a sample Responses event")


def test_lambda_buffered_module_builds_once_from_the_environment(tmp_path: Path) -> None:
    """Import the real entry point in a fresh interpreter, as Lambda does, and call it twice."""
    script = f"""
import json, sys
from chatgw.aws_lambda.context import LambdaContext
from chatgw.cli.invoke import load_event
from chatgw.cli.local import dev_key
from chatgw import compose
from chatgw.aws_lambda.buffered import handler
c = compose.container()
key, _ = dev_key(c.store, c.settings.state_dir, c.service.peppers.peppers)
ev = load_event({str(ROOT / "events" / "http-v2-chat.json")!r}, key)
r1 = handler(ev, LambdaContext.local()); r2 = handler(ev, LambdaContext.local())
assert compose.container() is c
print(json.dumps([r1["statusCode"], r2["statusCode"]]))
"""
    env = {**os.environ, "CHATGW_STATE_DIR": str(tmp_path), "CHATGW_LOG_LEVEL": "WARNING"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [200, 200]
