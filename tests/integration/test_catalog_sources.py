"""CHATGW_MODELS from an SSM parameter (moto on loopback) or a file shipped in the package; the
template lets the function read exactly that parameter, and puts it in a VPC or reserves concurrency
only when asked."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from chatgw.backends import BackendDeps, CatalogError
from chatgw.catalog import load_catalog, read_source
from tests.support.dynamo import MotoServer
from tests.support.template import TEMPLATE, CfnLoader

CATALOG = {
    "big": {"backend": "echo", "description": "x" * 5000},  # more than Lambda's 4 KB environment allows
    "small": {"backend": "echo", "delay_ms": 1},
}


@pytest.fixture
def ssm(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_server.endpoint)
    return boto3.client("ssm", region_name="us-east-1")


def test_a_catalog_in_an_ssm_parameter_is_read_at_start(ssm: Any) -> None:
    name = f"/chatgw-{uuid.uuid4().hex[:8]}/models"
    ssm.put_parameter(Name=name, Value=json.dumps(CATALOG), Type="SecureString", Tier="Advanced")
    catalog = load_catalog(f"ssm:{name}", BackendDeps())
    assert sorted(e.name for e in catalog.entries()) == ["big", "small"]


def test_a_missing_parameter_is_one_clear_error(ssm: Any) -> None:
    with pytest.raises(
        CatalogError, match=r"^CHATGW_MODELS: cannot read the SSM parameter /nope/models: ParameterNotFound$"
    ):
        read_source("ssm:/nope/models", BackendDeps())


def test_a_catalog_file_in_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "catalog.json").write_text(json.dumps(CATALOG))
    monkeypatch.chdir(tmp_path)  # Lambda's working directory is the package (/var/task = handler/)
    assert read_source("catalog.json") == CATALOG


def _template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    return loaded


def test_the_role_may_read_exactly_the_catalog_parameter() -> None:
    template = _template()
    statements = template["Resources"]["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    (grant,) = [
        s["Fn::If"]
        for s in statements
        if isinstance(s, dict) and "Fn::If" in s and s["Fn::If"][0] == "HasModelsParameter"
    ]
    assert grant[1]["Action"] == "ssm:GetParameter"
    assert grant[1]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${ModelsParameter}"
    }
    variables = template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
    assert variables["CHATGW_MODELS"] == {
        "Fn::If": ["HasModelsParameter", {"Fn::Sub": "ssm:${ModelsParameter}"}, {"Ref": "Models"}]
    }


def test_vpc_and_reserved_concurrency_are_off_by_default() -> None:
    template = _template()
    parameters, function = template["Parameters"], template["Resources"]["Function"]["Properties"]
    assert parameters["VpcSubnetIds"]["Default"] == parameters["VpcSecurityGroupIds"]["Default"] == ""
    assert parameters["ReservedConcurrency"]["Default"] == -1
    assert function["VpcConfig"]["Fn::If"][0] == "InVpc"
    assert function["VpcConfig"]["Fn::If"][2] == {"Ref": "AWS::NoValue"}
    assert function["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    assert template["Conditions"]["HasReservedConcurrency"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ReservedConcurrency"}, -1]}]
    }
