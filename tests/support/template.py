"""template.yaml parsed, and translated by the SAM CLI's own translator."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.tools import ROOT, missing_tool

TEMPLATE = ROOT / "template.yaml"
SAM_BIN = ROOT / ".venv-sam" / "bin"


@pytest.fixture
def sam() -> Path:
    """The SAM CLI's venv (`make sam-install`, which `make test` runs first): missing fails under `make test`."""
    if not (SAM_BIN / "sam").exists():
        missing_tool("sam", "`make sam-install` puts the AWS SAM CLI in .venv-sam (make test does it)")
    return SAM_BIN


SAM_ENV = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"}


class CfnLoader(yaml.SafeLoader):
    pass


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {name: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


CfnLoader.add_multi_constructor("!", _intrinsic)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


TRANSLATE = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies:
    def load(self):
        return {}

template = yaml_parse(open(sys.argv[1]).read())
for name in ("Function", "LedgerReplayFunction"):
    template["Resources"][name]["Properties"]["CodeUri"] = "s3://bucket/code.zip"
json.dump(transform(template, json.loads(sys.argv[2]), NoManagedPolicies()), sys.stdout, default=str)
"""


def translate(sam: Path, parameters: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [str(sam / "python"), "-c", TRANSLATE, str(TEMPLATE), json.dumps(parameters)],
        capture_output=True,
        text=True,
        timeout=120,
        env=SAM_ENV,
    )
    assert result.returncode == 0, result.stderr
    translated: dict[str, Any] = json.loads(result.stdout)
    return translated
