"""The stack's roles against every AWS call the code makes in them: the gateway's calls to
DynamoDB, Secrets Manager, SSM and Bedrock, recorded on its real botocore clients against moto and
the fake Bedrock, through every outcome (admitted buffered and streamed, each refusal, a reservation
that can never fit, a sharded key, settlement), and the ledger replay's calls (`chatgw replay` and
the replay function), each held against the role's statements as CloudFormation deploys them.

Why a recorded-call check and not moto's IAM mode: moto authorizes DynamoDB calls against the
resource `*` only (its DynamoDB handler names no table), so a role scoped to the stack's own tables,
as this one is, would be refused everything; the check below compares each call's table ARN with
the statements instead. A missing grant here is a 503 `store_unavailable` in AWS, not in moto."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from chatgw.access.keys import parse_key
from chatgw.cli.main import main as cli
from chatgw.compose import Container, build
from chatgw.settings import Settings
from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_openai import FakeOpenAI
from tests.support.asgi import CHAT, Reply, call
from tests.support.aws_calls import AwsCall, aws_calls
from tests.support.cfn_template import Deployment, allows, generated_secret, load
from tests.support.dynamo import Tables
from tests.support.lambda_events import cloudwatch_logs_event, usage_event_line

BEDROCK_MODEL = "anthropic.claude-test"


@dataclass
class Stack:
    deployment: Deployment
    env: dict[str, str]


@pytest.fixture
def stack(
    dynamo_tables: Tables,
    fake_openai: FakeOpenAI,
    fake_bedrock: FakeBedrock,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Stack:
    """A stack on moto: the pepper secret as the template generates it, the catalog in an SSM
    parameter (ModelsParameter), upstream keys in a secret (SecretArns) and a parameter
    (ParameterArns), a Bedrock model (BedrockModelArns)."""
    template = load()
    endpoint, suffix = dynamo_tables.endpoint, uuid.uuid4().hex[:8]
    for service in ("DYNAMODB", "SECRETS_MANAGER", "SSM"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake_bedrock.url)
    secrets = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=endpoint)
    ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=endpoint)
    pepper = secrets.create_secret(
        Name=f"pepper-{suffix}", SecretString=generated_secret(template["Resources"]["PepperSecret"])
    )["ARN"]
    upstream_secret = secrets.create_secret(Name=f"upstream-{suffix}", SecretString="sk-upstream-a")["ARN"]
    upstream_parameter = f"/chatgw-{suffix}/upstream"
    ssm.put_parameter(Name=upstream_parameter, Value="sk-upstream-b", Type="SecureString")
    models = {
        "gpt": {"backend": "openai", "base_url": fake_openai.base_url, "api_key_secret": upstream_secret},
        "gpt-p": {"backend": "openai", "base_url": fake_openai.base_url, "api_key_parameter": upstream_parameter},
        "claude": {"backend": "bedrock", "model_id": BEDROCK_MODEL, "region": "us-east-1"},
    }
    catalog_parameter = f"/chatgw-{suffix}/models"
    ssm.put_parameter(Name=catalog_parameter, Value=json.dumps(models), Type="String")
    env = {
        "CHATGW_KEYS_TABLE": dynamo_tables.keys,
        "CHATGW_USAGE_TABLE": dynamo_tables.usage,
        "CHATGW_MODELS": f"ssm:{catalog_parameter}",
        "CHATGW_PEPPER_SECRET": pepper,
        "CHATGW_KEY_CACHE_SECONDS": "0",
        "CHATGW_LOG_LEVEL": "WARNING",
        "CHATGW_STATE_DIR": str(tmp_path / "state"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parameter_arn = f"arn:aws:ssm:us-east-1:123456789012:parameter{upstream_parameter}"
    deployment = Deployment(
        template,
        parameters={
            "ModelsParameter": catalog_parameter,
            "BedrockModelArns": [f"arn:aws:bedrock:us-east-1::foundation-model/{BEDROCK_MODEL}"],
            "SecretArns": [upstream_secret],
            "ParameterArns": [parameter_arn],
        },
        physical={
            "KeysTable": dynamo_tables.keys,
            "UsageTable": dynamo_tables.usage,
            "PepperSecret": pepper,
            "FunctionLogGroup": "/aws/lambda/chatgw-gateway",
            "LedgerReplayLogGroup": "/aws/lambda/chatgw-ledger-replay",
        },
    )
    return Stack(deployment, env)


def new_key(capsys: pytest.CaptureFixture[str], *limits: str) -> str:
    """A key made as an operator makes it (`chatgw keys create`, the operator's credentials)."""
    capsys.readouterr()
    assert cli(["keys", "create", "--name", "iam", "--json", *limits]) == 0
    key: str = json.loads(capsys.readouterr().out)["key"]
    return key


async def chat(container: Container, key: str, model: str = "gpt", stream: bool = False, **params: Any) -> Reply:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream, **params}
    headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
    return await call(container.app, "POST", CHAT, headers, json.dumps(body).encode())


def hold(container: Container, key: str, reserve: int) -> None:
    """A request of the key in flight elsewhere (another container): admitted, not yet settled."""
    key_id = parse_key(key)[0]
    record = container.store.get_key(key_id)
    assert record is not None
    admission = container.store.admit(
        key_id, record.limits, datetime.now(UTC), request_id=uuid.uuid4().hex, reserve=reserve
    )
    assert admission.refused is None


def refused_for(reply: Reply) -> str:
    assert reply.status == 429, (reply.status, reply.body[:300])
    message = reply.json()["error"]["message"]
    for cause, words in {
        "requests": "requests per minute",
        "tokens": "tokens per minute",
        "budget": "monthly token budget",
        "concurrent": "in flight",
    }.items():
        if words in message:
            return cause
    raise AssertionError(message)


KEYS = {
    "plain": [],
    "rpm": ["--rpm", "1"],
    "tpm": ["--tpm", "3000"],
    "budget": ["--monthly-tokens", "5000"],
    "concurrent": ["--max-concurrent", "1"],
    "never": ["--tpm", "1000"],
    # each of the 3 items holds a third of the limits, so 1,500 tokens never fit one shard
    "sharded": ["--shards", "3", "--tpm", "3000", "--max-concurrent", "6"],
    "replay": [],
}


async def gateway_outcomes(container: Container, keys: dict[str, str]) -> dict[str, Any]:
    """Every outcome a client can cause, with what it answered."""
    seen: dict[str, Any] = {}
    seen["admitted"] = [
        (await chat(container, keys["plain"], model, stream)).status
        for model in ("gpt", "gpt-p", "claude")
        for stream in (False, True)
    ]
    seen["rpm"] = [(await chat(container, keys["rpm"])).status, refused_for(await chat(container, keys["rpm"]))]
    hold(container, keys["tpm"], 2500)
    seen["tpm"] = refused_for(await chat(container, keys["tpm"], max_tokens=1000))
    hold(container, keys["budget"], 4500)
    seen["budget"] = refused_for(await chat(container, keys["budget"], max_tokens=1000))
    hold(container, keys["concurrent"], 10)
    seen["max_concurrent"] = refused_for(await chat(container, keys["concurrent"]))
    # a reservation larger than the key's tpm: refused on one read of the ledger, whatever it holds
    seen["never_fits"] = refused_for(await chat(container, keys["never"], max_tokens=5000))
    seen["sharded"] = [(await chat(container, keys["sharded"], max_tokens=100)).status for _ in range(4)]
    seen["sharded_large"] = [(await chat(container, keys["sharded"], max_tokens=1500)).status for _ in range(2)]
    return seen


async def pending_events(container: Container, key: str) -> list[Any]:
    """Two settlements whose writes are all pending, as a settlement that outlived its budget logs them."""
    assert (await chat(container, key)).status == 200
    (settled,) = container.store.usage_events(parse_key(key)[0])
    return [replace(settled, request_id=uuid.uuid4().hex, pending=("month", "day")) for _ in range(2)]


def replay_outcomes(container: Container, pending: list[Any], tmp_path: Path) -> None:
    """`chatgw replay` and the replay function, each given one of the `pending` events."""
    from chatgw.aws_lambda.ledger_replay import handler

    log = tmp_path / "serve.log"
    log.write_text(usage_event_line(pending[0]) + "\n")
    assert cli(["replay", str(log)]) == 0
    assert handler(cloudwatch_logs_event([usage_event_line(pending[1])]), store=container.store)["recorded"] == 1


def refused(calls: list[AwsCall], deployment: Deployment, role: str) -> list[AwsCall]:
    statements = deployment.statements(role)
    return sorted({c for c in calls if not allows(statements, c.action, c.resource)}, key=str)


def test_every_call_the_gateway_makes_is_allowed_by_its_role(
    stack: Stack, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys = {name: new_key(capsys, *limits) for name, limits in KEYS.items()}  # the operator's calls

    async def scenario() -> dict[str, Any]:
        with recorder.recording() as calls:
            container = build(Settings.from_env(os.environ))
            seen = await gateway_outcomes(container, keys)
        gateway_calls.extend(calls)
        pending = await pending_events(container, keys["replay"])
        with recorder.recording() as calls:
            replay_outcomes(container, pending, tmp_path)
        replay_calls.extend(calls)
        await container.deps.aclose()
        container.store.close()
        return seen

    gateway_calls: list[AwsCall] = []
    replay_calls: list[AwsCall] = []
    with aws_calls() as recorder:
        seen = asyncio.run(scenario())
    assert seen["admitted"] == [200] * 6
    assert seen["rpm"] == [200, "requests"]
    assert (seen["tpm"], seen["budget"], seen["max_concurrent"]) == ("tokens", "budget", "concurrent")
    assert seen["never_fits"] == "tokens"
    assert seen["sharded"] == [200] * 4 and seen["sharded_large"] == [429, 429]  # over one shard's share
    deployment = stack.deployment
    usage_table = deployment.arn_of("UsageTable")
    # the check saw what it is about: the ledger read of "never fits", settlement, every service
    assert AwsCall("dynamodb:GetItem", usage_table) in gateway_calls
    assert AwsCall("dynamodb:PutItem", usage_table) in gateway_calls
    assert {c.action.split(":")[0] for c in gateway_calls} == {"dynamodb", "secretsmanager", "ssm", "bedrock"}
    assert refused(gateway_calls, deployment, "FunctionRole") == []
    assert {c.action for c in replay_calls} >= {"dynamodb:PutItem", "dynamodb:UpdateItem"}
    assert refused(replay_calls, deployment, "LedgerReplayRole") == []


def test_the_roles_name_their_own_resources_only() -> None:
    """No wildcard resource or action in the gateway's and the replay function's roles, and the
    replay function may write the usage table and read keys, nothing else."""
    deployment = Deployment(
        load(),
        physical={
            "KeysTable": "k",
            "UsageTable": "u",
            "PepperSecret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:p-AbCdEf",
            "FunctionLogGroup": "g",
            "LedgerReplayLogGroup": "r",
        },
    )
    for role in ("FunctionRole", "LedgerReplayRole"):
        for statement in deployment.statements(role):
            assert "*" not in json.dumps(statement["Action"]), statement
            assert statement["Resource"] != "*" and not json.dumps(statement["Resource"]).endswith('/*"'), statement
    replay = {
        (a, r)
        for s in deployment.statements("LedgerReplayRole")
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
        if not a.startswith("logs:")
    }
    assert replay == {
        ("dynamodb:GetItem", deployment.arn_of("KeysTable")),
        ("dynamodb:PutItem", deployment.arn_of("UsageTable")),
        ("dynamodb:UpdateItem", deployment.arn_of("UsageTable")),
    }
