"""Upstream keys from Secrets Manager and SSM: read on first use, once per container."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chatgw.backends import build_backend
from chatgw.backends.base import BackendDeps
from chatgw.deadline import Deadline
from chatgw.errors import UpstreamError
from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_openai import FakeOpenAI
from tests.support.conversations import conversation_of

REQUEST = conversation_of({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in FakeBedrock.AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


def twice(options: dict[str, Any], between: Any = None) -> None:
    """Two calls through one backend, with `between()` run after the first."""

    async def main() -> None:
        deps = BackendDeps()
        backend = build_backend("openai", "m", options, deps)
        try:
            await backend.complete(REQUEST, Deadline.in_seconds(20))
            if between is not None:
                between()
            await backend.complete(REQUEST, Deadline.in_seconds(20))
        finally:
            await deps.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("secret", ["sk-from-secret", json.dumps({"api_key": "sk-from-secret"})])
def test_key_from_secrets_manager_is_read_once(aws: None, fake_openai: FakeOpenAI, secret: str) -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    arn = client.create_secret(Name="chatgw/upstream", SecretString=secret)["ARN"]
    twice(
        {"base_url": fake_openai.base_url, "api_key_secret": arn},
        between=lambda: client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True),
    )
    assert [r.headers["authorization"] for r in fake_openai.requests] == ["Bearer sk-from-secret"] * 2


def test_key_from_an_ssm_secure_string(aws: None, fake_openai: FakeOpenAI) -> None:
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name="/chatgw/upstream-key", Value="sk-from-ssm", Type="SecureString"
    )
    twice({"base_url": fake_openai.base_url, "api_key_parameter": "/chatgw/upstream-key"})
    assert [r.headers["authorization"] for r in fake_openai.requests] == ["Bearer sk-from-ssm"] * 2


def test_a_missing_secret_is_a_502_naming_it_without_calling_the_upstream(aws: None, fake_openai: FakeOpenAI) -> None:
    with pytest.raises(UpstreamError, match="chatgw/missing") as caught:
        twice({"base_url": fake_openai.base_url, "api_key_secret": "chatgw/missing"})
    assert "ResourceNotFoundException" in caught.value.message
    assert fake_openai.requests == []


def test_building_the_backend_touches_no_network(fake_openai: FakeOpenAI) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("an AWS client was made at catalog build")

    build_backend(
        "openai",
        "m",
        {"base_url": fake_openai.base_url, "api_key_secret": "x"},
        BackendDeps(http_client_factory=refuse, aws_client_factory=refuse),
    )
    build_backend("bedrock", "b", {"model_id": "x"}, BackendDeps(http_client_factory=refuse, aws_client_factory=refuse))
