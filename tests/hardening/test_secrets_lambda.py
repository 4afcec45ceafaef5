"""No secret and no prompt in the output of the two Lambda entry points at DEBUG, with Secrets Manager
(the upstream key), DynamoDB (the keys and the ledger) and Bedrock (the prompt) in play.

Each entry point runs as a real process, as in Lambda: the buffered handler under a root logger at
DEBUG (what the managed runtime sets up when the function's log level is DEBUG), and the streaming
runtime (`python -m chatgw.aws_lambda.stream_runtime`) against the fake Runtime API, which configures logging
itself. botocore logs every request and response body at DEBUG: the upstream key in the
`GetSecretValue` answer, DynamoDB items, Bedrock prompts. Only chatgw's loggers may follow
CHATGW_LOG_LEVEL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from chatgw.aws_lambda.fake_runtime_api import FakeRuntimeAPI
from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_openai import FakeOpenAI
from tests.support.dynamo import Tables
from tests.support.lambda_events import rest_v1_event
from tests.support.servers import stop

CHAT = "/v2/llms/chat/completions"

BUFFERED_DRIVER = """
import json, logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)  # as the managed runtime at DEBUG
from chatgw.aws_lambda.buffered import handler
from chatgw.aws_lambda.context import LambdaContext
for event in json.loads(sys.stdin.read()):
    response = handler(event, LambdaContext.local())
    print(json.dumps(response), flush=True)
"""


@pytest.fixture
def lambda_env(
    dynamo_tables: Tables, fake_openai: FakeOpenAI, fake_bedrock: FakeBedrock, tmp_path: Path
) -> dict[str, Any]:
    upstream_key = f"sk-upstream-{uuid.uuid4().hex}"
    secrets = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=dynamo_tables.endpoint)
    arn = secrets.create_secret(Name=f"chatgw/upstream-{uuid.uuid4().hex[:8]}", SecretString=upstream_key)["ARN"]
    pepper = f"pepper-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        **FakeBedrock.AWS_ENV,
        "CHATGW_LOG_LEVEL": "DEBUG",
        "CHATGW_KEY_PEPPER": pepper,
        "CHATGW_KEYS_TABLE": dynamo_tables.keys,
        "CHATGW_USAGE_TABLE": dynamo_tables.usage,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamo_tables.endpoint,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": dynamo_tables.endpoint,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": fake_bedrock.url,
        "CHATGW_MODELS": json.dumps(
            {
                "gpt": {"backend": "openai", "base_url": fake_openai.base_url, "api_key_secret": arn},
                "claude": {"backend": "bedrock", "model_id": "anthropic.claude-test", "region": "us-east-1"},
            }
        ),
    }
    env.pop("CHATGW_STATE_DIR", None)
    created = subprocess.run(
        [sys.executable, "-m", "chatgw.cli.main", "keys", "create", "--name", "lambda", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = json.loads(created.stdout)["key"]
    marker = f"PROMPT-MARKER-{uuid.uuid4().hex}"
    return {"env": env, "key": key, "pepper": pepper, "upstream": upstream_key, "marker": marker}


def events(key: str, marker: str) -> list[dict[str, Any]]:
    user = [{"role": "user", "content": f"please keep {marker} secret"}]
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    bodies: list[dict[str, Any]] = [
        {"model": "gpt", "messages": user},
        {"model": "gpt", "messages": user, "stream": True, "stream_options": {"include_usage": True}},
        {"model": "claude", "messages": user},
        {"model": "claude", "messages": user, "stream": True},
    ]
    return [rest_v1_event("POST", CHAT, body, headers) for body in bodies]


def assert_clean(output: str, secrets: dict[str, Any]) -> None:
    key = secrets["key"]
    for name, value in {
        "the API key": key,
        "the key's secret": key.split("_")[2],
        "the pepper": secrets["pepper"],
        "the upstream key": secrets["upstream"],
        "the prompt": secrets["marker"],
    }.items():
        assert value not in output, f"{name} in the output"


def test_buffered_handler_at_debug_logs_no_secret_or_prompt(
    lambda_env: dict[str, Any], fake_openai: FakeOpenAI, fake_bedrock: FakeBedrock
) -> None:
    run = subprocess.run(
        [sys.executable, "-c", BUFFERED_DRIVER],
        input=json.dumps(events(lambda_env["key"], lambda_env["marker"])),
        env=lambda_env["env"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    responses = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["statusCode"] for r in responses] == [200] * 4
    assert {r.headers["authorization"] for r in fake_openai.requests} == {f"Bearer {lambda_env['upstream']}"}
    assert len(fake_bedrock.requests) == 2  # the prompt did go to Bedrock
    assert '"msg": "chat"' in run.stderr  # chatgw's own DEBUG-level logging is on
    assert_clean(run.stderr, lambda_env)


def test_streaming_runtime_at_debug_logs_no_secret_or_prompt(
    lambda_env: dict[str, Any], fake_openai: FakeOpenAI, fake_bedrock: FakeBedrock, tmp_path: Path
) -> None:
    output = tmp_path / "runtime.log"
    with FakeRuntimeAPI() as fake, output.open("w") as out:
        deadline = int((time.time() + 120) * 1000)
        invocations = [fake.push(e, deadline_ms=deadline) for e in events(lambda_env["key"], lambda_env["marker"])]
        process = subprocess.Popen(
            [sys.executable, "-m", "chatgw.aws_lambda.stream_runtime"],
            env={**lambda_env["env"], "AWS_LAMBDA_RUNTIME_API": fake.address},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            assert all(i.wait(timeout=60) for i in invocations)
        finally:
            stop(process)
    assert [i.prelude and i.prelude["statusCode"] for i in invocations] == [200] * 4
    assert all(i.succeeded for i in invocations)
    assert {r.headers["authorization"] for r in fake_openai.requests} == {f"Bearer {lambda_env['upstream']}"}
    assert len(fake_bedrock.requests) == 2
    logs = output.read_text()
    assert '"msg": "chat"' in logs
    assert_clean(logs, lambda_env)
