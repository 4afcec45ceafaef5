"""template.yaml: linted by cfn-lint and `sam validate --lint`, translated by SAM into streaming
routes, built by `sam build`, and in step with what the code reads (tables, env vars, wrapper)."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatgw.settings import Settings
from tests.support.template import (
    ROOT,
    SAM_BIN,
    SAM_ENV,
    TEMPLATE,
    resources_of,
    translate,
)
from tests.support.template import sam as sam
from tests.support.template import template as template
from tests.support.tools import missing_tool

ROUTES = {
    ("/v2/llms/chat/completions", "post"),
    ("/v1/chat/completions", "post"),
    ("/v2/llms/responses", "post"),
    ("/v1/responses", "post"),
    ("/v1/messages", "post"),
    ("/v1/messages/count_tokens", "post"),
    ("/v2/llms", "get"),
    ("/v1/models", "get"),
    ("/health", "get"),
    ("/{proxy+}", "x-amazon-apigateway-any-method"),
}


def test_cfn_lint_passes() -> None:
    cfn_lint = (
        [str(SAM_BIN / "cfn-lint")]
        if (SAM_BIN / "cfn-lint").exists()
        else [str(Path(sys.executable).parent / "cfn-lint")]
    )
    result = subprocess.run([*cfn_lint, str(TEMPLATE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint_passes(sam: Path) -> None:
    result = subprocess.run(
        [str(sam / "sam"), "validate", "--lint", "--template", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
        env=SAM_ENV,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def resolve(value: Any, translated: dict[str, Any], parameters: dict[str, str]) -> Any:
    """Fn::If / Fn::Equals / Ref of a parameter, as CloudFormation evaluates them at deploy."""
    if isinstance(value, dict) and len(value) == 1:
        ((name, argument),) = value.items()
        if name == "Ref" and argument in translated["Parameters"]:
            return parameters.get(argument, translated["Parameters"][argument].get("Default"))
        if name == "Fn::Equals":
            return resolve(argument[0], translated, parameters) == resolve(argument[1], translated, parameters)
        if name == "Fn::If":
            condition = resolve(translated["Conditions"][argument[0]], translated, parameters)
            return resolve(argument[1] if condition else argument[2], translated, parameters)
    return value


@pytest.mark.parametrize("snap_start", ["false", "true"])
def test_sam_turns_every_route_into_a_streaming_lambda_integration(sam: Path, snap_start: str) -> None:
    parameters = {"SnapStart": snap_start}
    translated = translate(sam, parameters)
    resources = translated["Resources"]
    paths = resources["Api"]["Properties"]["Body"]["paths"]
    routes = {(path, method) for path, methods in paths.items() for method in methods}
    assert routes == ROUTES
    for methods in paths.values():
        for operation in methods.values():
            integration = operation["x-amazon-apigateway-integration"]
            assert integration["type"] == "aws_proxy"
            assert integration["responseTransferMode"] == "STREAM"
            assert "/2021-11-15/functions/" in integration["uri"]["Fn::Sub"]
            assert integration["uri"]["Fn::Sub"].endswith("/response-streaming-invocations")
            assert integration["timeoutInMillis"] > 29_000  # longer than a buffered integration
            # The API invokes the alias of the published version (what SnapStart applies to).
            assert "/functions/${FunctionAliaslive}/" in integration["uri"]["Fn::Sub"]
    assert resources["FunctionAliaslive"]["Type"] == "AWS::Lambda::Alias"
    (version,) = (r for r in resources.values() if r["Type"] == "AWS::Lambda::Version")
    assert resources["FunctionAliaslive"]["Properties"]["FunctionVersion"]["Fn::GetAtt"][1] == "Version"
    assert "snapstart=${SnapStart}" in version["Properties"]["Description"]["Fn::Sub"]
    apply_on = resolve(resources["Function"]["Properties"]["SnapStart"]["ApplyOn"], translated, parameters)
    assert apply_on == ("PublishedVersions" if snap_start == "true" else "None")
    for name in ("FunctionUrl", "FunctionUrlPublicInvoke", "FunctionUrlPublicInvokeUrl"):
        target = resources[name]["Properties"].get("TargetFunctionArn") or resources[name]["Properties"]["FunctionName"]
        assert target == {"Ref": "FunctionAliaslive"}
    api_permissions = [
        r
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission" and r["Properties"].get("Principal") == "apigateway.amazonaws.com"
    ]
    assert api_permissions and all(
        p["Properties"]["FunctionName"] == {"Ref": "FunctionAliaslive"} for p in api_permissions
    )
    (logs_permission,) = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission" and r["Properties"].get("Principal") == "logs.amazonaws.com"
    ]
    assert logs_permission["FunctionName"] == {"Ref": "LedgerReplayFunction"}
    assert logs_permission["SourceArn"] == {"Fn::GetAtt": ["FunctionLogGroup", "Arn"]}


def test_the_function_starts_the_streaming_runtime_through_the_wrapper(template: dict[str, Any]) -> None:
    function = template["Resources"]["Function"]["Properties"]
    assert function["Runtime"] == "python3.13"
    assert function["Architectures"] == ["arm64"]
    assert function["Handler"] == "chatgw.aws_lambda.buffered.handler"
    code = ROOT / function["CodeUri"]
    assert (code / "chatgw" / "aws_lambda/buffered.py").exists()
    assert (code / "chatgw" / "aws_lambda/stream_runtime.py").exists()
    wrapper = function["Environment"]["Variables"]["AWS_LAMBDA_EXEC_WRAPPER"]
    assert wrapper == "/var/task/bootstrap"  # CodeUri is unpacked into /var/task
    bootstrap = code / "bootstrap"
    assert bootstrap.read_text().startswith("#!/bin/bash\n")
    assert bootstrap.stat().st_mode & stat.S_IXUSR


def test_the_environment_is_what_settings_read(template: dict[str, Any]) -> None:
    variables = template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
    chatgw_vars = {name for name in variables if name.startswith("CHATGW_")}
    settings_source = (ROOT / "handler" / "chatgw" / "settings.py").read_text()
    read_by_settings = set(re.findall(r'"(CHATGW_[A-Z_]+)"', settings_source))
    assert chatgw_vars <= read_by_settings
    assert variables["CHATGW_KEYS_TABLE"] == {"Ref": "KeysTable"}
    assert variables["CHATGW_USAGE_TABLE"] == {"Ref": "UsageTable"}
    sample = {
        "CHATGW_KEYS_TABLE": "stack-KeysTable-1",
        "CHATGW_USAGE_TABLE": "stack-UsageTable-1",
        "CHATGW_MODELS": "",
        "CHATGW_LOG_LEVEL": "INFO",
        "CHATGW_KEY_CACHE_SECONDS": "30",
        "CHATGW_PEPPER_SECRET": "arn:aws:secretsmanager:us-east-1:123456789012:secret:PepperSecret-abc-AbCdEf",
        "CHATGW_USAGE_TTL_DAYS": "90",
        "CHATGW_METRICS": "emf",
        "CHATGW_METRICS_NAMESPACE": "chatgw",
    }
    assert set(sample) == chatgw_vars
    settings = Settings.from_env(sample)  # the template's defaults are valid settings
    assert settings.uses_dynamodb
    assert (settings.keys_table, settings.usage_table) == ("stack-KeysTable-1", "stack-UsageTable-1")
    parameters = template["Parameters"]
    assert str(parameters["KeyCacheSeconds"]["Default"]) == sample["CHATGW_KEY_CACHE_SECONDS"]
    assert str(parameters["UsageTtlDays"]["Default"]) == sample["CHATGW_USAGE_TTL_DAYS"]


@pytest.mark.parametrize("table", ["KeysTable", "UsageTable"])
def test_tables_keep_the_store_contract(template: dict[str, Any], table: str) -> None:
    from chatgw.store.dynamodb.tables import ATTRIBUTES, KEY_SCHEMA, TTL_ATTRIBUTE

    resource = template["Resources"][table]
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"
    properties = resource["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert (
        properties["KeySchema"]
        == KEY_SCHEMA
        == [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ]
    )
    assert properties["AttributeDefinitions"] == ATTRIBUTES
    assert TTL_ATTRIBUTE == "expires_at"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {"SSEEnabled": True}
    ttl = properties.get("TimeToLiveSpecification")
    if table == "UsageTable":
        assert ttl == {"AttributeName": "expires_at", "Enabled": True}
    else:
        assert ttl is None


def test_the_function_url_is_optional_and_streams(template: dict[str, Any]) -> None:
    assert template["Parameters"]["EnableFunctionUrl"]["Default"] == "false"
    (url,) = resources_of(template, "AWS::Lambda::Url").values()
    assert url["Condition"] == "FunctionUrlEnabled"
    assert url["Properties"]["InvokeMode"] == "RESPONSE_STREAM"
    outputs = template["Outputs"]
    assert outputs["OpenAIBaseUrl"]["Value"]["Fn::Sub"].endswith("/${StageName}/v2/llms")
    assert outputs["OpenAIBaseUrlV1"]["Value"]["Fn::Sub"].endswith("/${StageName}/v1")
    assert outputs["FunctionUrlBase"]["Condition"] == "FunctionUrlEnabled"


def python313() -> str | None:
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [
        shutil.which("python3.13"),
        *sorted(glob.glob(f"{pyenv_root}/versions/3.13*/bin/python3.13")),
    ]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True)
        if probe.returncode == 0:
            return probe.stdout.strip()
    return None


@pytest.mark.slow
def test_sam_build_packages_the_function_without_a_container(sam: Path, tmp_path: Path) -> None:
    interpreter = python313()
    if interpreter is None:
        missing_tool("python3.13", "sam build without a container needs it (on PATH or under pyenv)")
        return
    env = {**SAM_ENV, "PATH": f"{Path(interpreter).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [str(sam / "sam"), "build", "--build-dir", str(tmp_path / "build"), "--template", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    package = tmp_path / "build" / "Function"
    assert (package / "bootstrap").stat().st_mode & stat.S_IXUSR
    assert (package / "chatgw" / "aws_lambda/stream_runtime.py").exists()
    assert (package / "mangum").is_dir() and (package / "fastapi").is_dir()
    native = glob.glob(str(package / "pydantic_core" / "*.so"))
    assert native and all("cpython-313-aarch64" in name for name in native)  # arm64, Python 3.13
    # What ships is exactly the lock (handler/requirements.txt, `make lock`): same names, same versions.
    from tests.support.lock import locked

    shipped = {}
    for dist in package.glob("*.dist-info"):
        name, _, version = dist.name.removesuffix(".dist-info").partition("-")
        shipped[name.lower().replace("_", "-")] = version
    pins = {name: versions[0] for name, versions in locked(ROOT / "handler" / "requirements.txt").items()}
    assert shipped == pins


def test_snap_start_is_a_parameter_off_by_default(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["SnapStart"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("false", ["true", "false"])
    assert template["Conditions"]["SnapStartOn"] == {"Fn::Equals": [{"Ref": "SnapStart"}, "true"]}
    function = template["Resources"]["Function"]["Properties"]
    assert function["AutoPublishAlias"] == "live"
    assert function["SnapStart"] == {"ApplyOn": {"Fn::If": ["SnapStartOn", "PublishedVersions", "None"]}}


READS_AN_OUTPUT = re.compile(r'(?:outputs(?:\([^)]*\))?\.get\(|_OUTPUT = )"([A-Za-z0-9]+)"')
"""`outputs(...).get("Name")`, `outputs.get("Name")`, `NAME_OUTPUT = "Name"`: how the code reads a stack output."""


def test_every_output_the_cli_reads_is_one_the_template_has(template: dict[str, Any]) -> None:
    read = {
        name
        for source in (ROOT / "handler" / "chatgw").rglob("*.py")
        for name in READS_AN_OUTPUT.findall(source.read_text())
    }
    # the names `--stack` depends on today: the scan must find at least these
    assert read >= {"KeysTableName", "UsageTableName", "PepperSecretArn", "OpenAIBaseUrl"}
    assert read <= set(template["Outputs"]), read - set(template["Outputs"])
    assert all("Condition" not in template["Outputs"][name] for name in read)  # every stack has them


def test_the_gateway_s_usage_event_lines_feed_the_ledger_replay_function(template: dict[str, Any]) -> None:
    """The subscription selects, on the gateway's own log group, the lines service.py logs when a
    settlement fails (`{"msg": "usage_event", ...}`), and feeds the replay function: same code
    package, its own handler, role and log group, the tables the gateway writes."""
    import logging

    from chatgw.observability import logs
    from tests.support.asgi import captured_logs

    resources = template["Resources"]
    (subscription,) = resources_of(template, "AWS::Logs::SubscriptionFilter").values()
    properties = subscription["Properties"]
    assert properties["LogGroupName"] == {"Ref": "FunctionLogGroup"}
    assert properties["DestinationArn"] == {"Fn::GetAtt": "LedgerReplayFunction.Arn"}
    assert subscription["DependsOn"] == "LedgerReplayInvokePermission"
    field, value = re.fullmatch(r'\{ \$\.(\w+) = "(\w+)" \}', properties["FilterPattern"]).groups()  # type: ignore[union-attr]
    with captured_logs() as lines:
        logs.event("usage_event", logging.ERROR, usage_event={"request_id": "r"}, reason="StoreUnavailable")
    assert json.loads(lines.lines[0])[field] == value
    replay = resources["LedgerReplayFunction"]["Properties"]
    gateway = resources["Function"]["Properties"]
    assert replay["CodeUri"] == gateway["CodeUri"] and replay["Runtime"] == gateway["Runtime"]
    module, _, name = replay["Handler"].rpartition(".")
    assert (ROOT / "handler" / Path(*module.split("."))).with_suffix(".py").exists() and name == "handler"
    assert replay["Role"] == {"Fn::GetAtt": "LedgerReplayRole.Arn"}
    assert replay["LoggingConfig"] == {"LogGroup": {"Ref": "LedgerReplayLogGroup"}}
    variables = replay["Environment"]["Variables"]
    for name in ("CHATGW_KEYS_TABLE", "CHATGW_USAGE_TABLE", "CHATGW_USAGE_TTL_DAYS"):
        assert variables[name] == gateway["Environment"]["Variables"][name]
    assert "AWS_LAMBDA_EXEC_WRAPPER" not in variables  # a plain handler, not the streaming runtime
    assert resources["LedgerReplayLogGroup"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
