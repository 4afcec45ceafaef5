"""`sam deploy --guided` succeeds on every parameter's default: each default satisfies its own
constraints, no parameter is NoEcho (guided asks for those with no default, again and again), and the
SAM CLI's own prompts, answered with Enter, take every default. The README names the questions asked."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.template import SAM_BIN, SAM_ENV, TEMPLATE, CfnLoader
from tests.support.tools import missing_tool

ROOT = Path(__file__).resolve().parents[2]
AWS_SPECIFIC = re.compile(r"^(List<)?AWS::")


def parameters() -> dict[str, dict[str, Any]]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    return dict(loaded["Parameters"])


def violations(name: str, spec: dict[str, Any], value: str) -> list[str]:
    """What CloudFormation would refuse about `value` for this parameter (its documented checks)."""
    problems: list[str] = []
    kind = spec["Type"]
    items = [v.strip() for v in value.split(",")] if kind == "CommaDelimitedList" and value else [value]
    if kind == "Number":
        try:
            number = float(value)
        except ValueError:
            return [f"{name}: {value!r} is not a number"]
        if "MinValue" in spec and number < float(spec["MinValue"]):
            problems.append(f"{name}: {value} < MinValue {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            problems.append(f"{name}: {value} > MaxValue {spec['MaxValue']}")
    if AWS_SPECIFIC.match(kind) and not value:
        problems.append(f"{name}: an empty value is not a valid {kind} (use CommaDelimitedList or String)")
    for item in items:
        if "AllowedValues" in spec and item not in [str(v) for v in spec["AllowedValues"]]:
            problems.append(f"{name}: {item!r} not in AllowedValues")
        if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], item):
            problems.append(f"{name}: {item!r} does not match AllowedPattern {spec['AllowedPattern']}")
        if "MinLength" in spec and len(item) < int(spec["MinLength"]):
            problems.append(f"{name}: {item!r} shorter than MinLength {spec['MinLength']}")
        if "MaxLength" in spec and len(item) > int(spec["MaxLength"]):
            problems.append(f"{name}: {item!r} longer than MaxLength {spec['MaxLength']}")
    return problems


def test_every_default_satisfies_its_own_constraints() -> None:
    problems: list[str] = []
    for name, spec in parameters().items():
        if "Default" not in spec:
            problems.append(f"{name}: no Default")
            continue
        if spec.get("NoEcho"):
            problems.append(f"{name}: NoEcho (guided prompts it hidden, with no default)")
        problems += violations(name, spec, str(spec["Default"]))
    assert problems == []


def test_the_checker_catches_what_cloudformation_refuses() -> None:
    assert violations("P", {"Type": "String", "AllowedPattern": "^[a-z]+$"}, "")
    assert violations("P", {"Type": "String", "AllowedPattern": "[a-z]+"}, "ab1")  # anchored, as CloudFormation does
    assert violations("P", {"Type": "Number", "MinValue": 1}, "")
    assert violations("P", {"Type": "Number", "MinValue": 1, "MaxValue": 5}, "6")
    assert violations("P", {"Type": "String", "AllowedValues": ["a"]}, "")
    assert violations("P", {"Type": "List<AWS::EC2::Subnet::Id>"}, "")
    assert violations("P", {"Type": "String", "MinLength": 1}, "")
    assert not violations("P", {"Type": "CommaDelimitedList"}, "")


def test_sam_guided_takes_every_default_on_enter() -> None:
    if not (SAM_BIN / "python").exists():
        missing_tool("sam", "`make sam-install` puts the AWS SAM CLI in .venv-sam (make test does it)")
    out = subprocess.run(
        [str(SAM_BIN / "python"), str(Path(__file__).parents[1] / "support" / "sam_guided.py"), str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
        env=SAM_ENV,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["exit"] == 0, result["output"]
    answers = json.loads(result["output"].split("RESULT ", 1)[1])
    params = parameters()
    assert answers == {name: str(spec["Default"]) for name, spec in params.items()}
    asked = [name for name, authorized in result["auth"] if not authorized]
    readme = (ROOT / "README.md").read_text() + (ROOT / "docs" / "deploy.md").read_text()
    if asked:  # the question the README must prepare the user for, as many times as SAM asks it
        assert "Function has no authentication. Is this okay? [y/N]" in readme
        assert f"asked {len(asked)} times" in readme, f"SAM asks {len(asked)} times"


@pytest.mark.parametrize("name", sorted(parameters()))
def test_every_parameter_is_documented(name: str) -> None:
    assert f"`{name}`" in (ROOT / "docs" / "deploy.md").read_text()
