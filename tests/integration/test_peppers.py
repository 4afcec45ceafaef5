"""Versioned key peppers: in Secrets Manager (a moto server on loopback) and in the state folder.
Rotation keeps old keys working; an unknown or unreadable pepper is an error that says so."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from chatgw.access.keys import new_key
from chatgw.access.peppers import PEPPER_FILE, FileSource, PepperBook, PepperError, SecretSource, parse, rotated
from chatgw.cli import main as chatgw_cli
from chatgw.compose import Container, build, open_store
from chatgw.observability import logs
from chatgw.settings import Settings
from tests.support.cfn_template import moto_stack_outputs, pepper_secret
from tests.support.dynamo import MotoServer

LEGACY_PEPPER = "the-old-env-pepper"


def models(container: Container, key: str) -> int:
    async def go() -> int:
        transport = httpx.ASGITransport(app=container.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return (await client.get("/v1/models", headers={"authorization": f"Bearer {key}"})).status_code

    return asyncio.run(go())


@pytest.fixture
def secret_arn(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDFORMATION", moto_server.endpoint)
    client = boto3.client("secretsmanager", region_name="us-east-1")
    # What the stack's GenerateSecretString writes (from template.yaml): {"current": "v1", "v1": <generated>}.
    arn = client.create_secret(Name=f"chatgw-pepper-{uuid.uuid4().hex[:8]}", SecretString=pepper_secret())["ARN"]
    client.close()
    return str(arn)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CHATGW_KEYS_TABLE", "CHATGW_USAGE_TABLE", "CHATGW_MODELS", "CHATGW_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name in ("CHATGW_PEPPER_SECRET",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHATGW_KEY_PEPPER", LEGACY_PEPPER)


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str], *store_args: str) -> None:
        self.capsys, self.store_args = capsys, list(store_args)

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = chatgw_cli.main([*argv, *self.store_args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def containers(tmp_path: Path) -> Iterator[list[Container]]:
    made: list[Container] = []
    yield made
    for c in made:
        c.store.close()


def gateway(made: list[Container], settings: Settings) -> Container:
    container = build(settings)
    made.append(container)
    return container


def test_rotation_in_secrets_manager_keeps_keys_of_both_versions_working(
    env: None, secret_arn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], containers: list[Container]
) -> None:
    state = tmp_path / "state"
    cli = Cli(capsys, "--state-dir", str(state), "--pepper-secret", secret_arn)
    settings = replace(Settings.from_env(), state_dir=state, pepper_secret=secret_arn, log_level="WARNING")
    settings = replace(settings, key_cache_seconds=0)  # `keys rotate` must show at once, not after the cache time

    # A key from before versions (CHATGW_KEY_PEPPER, no version field) and one of v1.
    legacy_key, legacy = new_key("old", pepper=LEGACY_PEPPER.encode())
    gw = gateway(containers, settings)
    gw.store.create_key(legacy)
    v1 = cli.json("keys", "create", "--name", "v1-app")
    assert gw.store.get_key(v1["key_id"]).pepper_version == "v1"  # type: ignore[union-attr]
    assert models(gw, v1["key"]) == 200
    assert models(gw, legacy_key) == 200

    code, out, _ = cli("pepper", "rotate")
    assert code == 0 and "v2" in out
    stored = boto3.client("secretsmanager", region_name="us-east-1").get_secret_value(
        SecretId=secret_arn, VersionStage="AWSCURRENT"
    )
    assert sorted(json.loads(stored["SecretString"])) == ["current", "v1", "v2"]
    v2 = cli.json("keys", "create", "--name", "v2-app")
    rotated_v1 = cli.json("keys", "rotate", v1["key_id"])

    # The gateway started before the rotation reads v2 on the first key of it; every key works.
    for key in (v2["key"], rotated_v1["key"], legacy_key):
        assert models(gw, key) == 200
    assert models(gw, v1["key"]) == 401  # the secret it replaced
    fresh = gateway(containers, settings)  # a container started after it
    assert [models(fresh, k) for k in (v2["key"], rotated_v1["key"], legacy_key)] == [200, 200, 200]

    status = cli.json("pepper", "status")
    assert status["current"] == "v2" and status["source"] == f"secret {secret_arn}"
    assert {r["version"]: r["keys"] for r in status["versions"]} == {"legacy": 1, "v1": 0, "v2": 2}


def test_the_stack_output_names_the_secret(env: None, secret_arn: str, tmp_path: Path) -> None:
    from chatgw.cli.peppers import pepper_source

    cfn = boto3.client("cloudformation", region_name="us-east-1")
    template = {
        "Resources": {"T": {"Type": "AWS::SNS::Topic"}},
        "Outputs": moto_stack_outputs({"PepperSecret": secret_arn}),  # template.yaml's own output
    }
    cfn.create_stack(StackName="chatgw-peppers", TemplateBody=json.dumps(template))
    args = chatgw_cli.parser().parse_args(["keys", "list", "--stack", "chatgw-peppers"])
    source = pepper_source(args, Settings.from_env(), create=False)
    assert isinstance(source, SecretSource) and source.secret_id == secret_arn
    assert source.load().current == "v1"


def test_an_unreadable_secret_stops_the_gateway_and_the_cli_with_one_line(
    env: None, secret_arn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = secret_arn.replace("chatgw-pepper", "nothing-here")
    settings = replace(Settings.from_env(), state_dir=tmp_path, pepper_secret=missing)
    store = open_store(settings)  # closed here: build opens its store before it reads the peppers
    with pytest.raises(PepperError, match=r"cannot read the pepper secret .*ResourceNotFoundException"):
        build(settings, store=store)
    store.close()
    cli = Cli(capsys, "--state-dir", str(tmp_path), "--pepper-secret", missing)
    code, out, err = cli("keys", "create", "--name", "a")
    assert code == 2 and out == ""
    assert err.startswith("chatgw: cannot read the pepper secret") and len(err.splitlines()) == 1


def test_a_malformed_secret_is_named(env: None, secret_arn: str) -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    client.put_secret_value(SecretId=secret_arn, SecretString="just a string")
    with pytest.raises(PepperError, match="not JSON"):
        SecretSource(secret_arn, b"").load()
    client.put_secret_value(SecretId=secret_arn, SecretString=json.dumps({"current": "v3", "v1": "x" * 20}))
    with pytest.raises(PepperError, match="'current' is 'v3'"):
        SecretSource(secret_arn, b"").load()


def test_a_key_of_an_unknown_version_is_logged_with_the_reason_once_a_minute(
    env: None,
    tmp_path: Path,
    containers: list[Container],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client holding such a key can send it on every request: one ERROR line per key per minute."""
    clock = [1000.0]
    monkeypatch.setitem(logs._throttles, "key_pepper_unknown", logs.Throttle(clock=lambda: clock[0]))
    gw = gateway(containers, replace(Settings.from_env(), state_dir=tmp_path, log_level="WARNING"))
    key, record = new_key("lost", pepper=b"a pepper nobody has any more", pepper_version="v9")
    other_key, other = new_key("lost too", pepper=b"a pepper nobody has any more", pepper_version="v7")
    gw.store.create_key(record)
    gw.store.create_key(other)

    def lines_after(*keys: str) -> list[dict[str, Any]]:
        caplog.clear()
        assert [models(gw, k) for k in keys] == [401] * len(keys)
        unique = {id(r): r for r in caplog.records}.values()  # the handler may see a record twice
        return [r.fields for r in unique if r.getMessage() == "key_pepper_unknown"]  # type: ignore[attr-defined]

    logger = logging.getLogger("chatgw")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.ERROR, logger="chatgw"):
            (line,) = lines_after(*[key] * 5)
            assert line["key_id"] == record.key_id and line["pepper_version"] == "v9"
            assert "holds versions: v1" in line["problem"]
            assert [f["key_id"] for f in lines_after(key, other_key, other_key)] == [other.key_id]
            clock[0] += 59
            assert lines_after(key, other_key) == []
            clock[0] += 2  # a minute after the first line
            again = lines_after(key, key)
    finally:
        logger.removeHandler(caplog.handler)
    assert [(f["key_id"], f["suppressed"]) for f in again] == [(record.key_id, 6)]  # 4 + 1 + 1 held back


def test_the_state_folder_holds_a_generated_pepper_file(env: None, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert FileSource(state, b"", create=False).load().current is None
    assert not state.exists()  # reading made nothing
    peppers = FileSource(state, b"", create=True).load()
    path = state / PEPPER_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert peppers.current == "v1" and len(peppers.versions["v1"]) >= 32
    assert FileSource(state, b"", create=True).load() == peppers  # made once
    book = PepperBook(FileSource(state, b"", create=False))
    FileSource(state, b"", create=False).save(rotated(peppers))
    assert book.get("v2") is None
    found, _ = book.reload_for("v2")
    assert found is not None and book.get("v1") == peppers.versions["v1"]


def test_parse_rejects_short_peppers_and_odd_names() -> None:
    with pytest.raises(PepperError, match="shorter than 16"):
        parse(json.dumps({"current": "v1", "v1": "short"}), b"", "x")
    with pytest.raises(PepperError, match="v1, v2"):
        parse(json.dumps({"current": "v1", "v1": "x" * 20, "latest": "y" * 20}), b"", "x")


def test_an_upgraded_stack_keeps_its_old_pepper_in_the_secret(env: None, secret_arn: str) -> None:
    """Keys of a stack deployed with the old KeyPepper parameter: its value moves into the secret as `legacy`."""
    client = boto3.client("secretsmanager", region_name="us-east-1")
    text = json.dumps({"current": "v1", "v1": "x" * 20, "legacy": "the-old-parameter-value"})
    client.put_secret_value(SecretId=secret_arn, SecretString=text)
    source = SecretSource(secret_arn, LEGACY_PEPPER.encode())
    assert source.load().get(None) == b"the-old-parameter-value"
    source.save(rotated(source.load()))
    after = json.loads(client.get_secret_value(SecretId=secret_arn, VersionStage="AWSCURRENT")["SecretString"])
    assert after["legacy"] == "the-old-parameter-value" and after["current"] == "v2"


def test_a_key_made_with_another_pepper_of_the_same_version_is_named(
    env: None,
    secret_arn: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    containers: list[Container],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The CLI pointed at another secret (both hold a `v1`): not a silent 401, a log line and a status."""
    client = boto3.client("secretsmanager", region_name="us-east-1")
    other = json.dumps({"current": "v1", "v1": "another-stack-s-pepper-0123456789"})
    other_arn = client.create_secret(Name=f"other-{uuid.uuid4().hex[:8]}", SecretString=other)["ARN"]
    state = tmp_path / "state"
    made = Cli(capsys, "--state-dir", str(state), "--pepper-secret", other_arn).json("keys", "create", "--name", "x")
    gw = gateway(containers, replace(Settings.from_env(), state_dir=state, pepper_secret=secret_arn))
    logger = logging.getLogger("chatgw")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.ERROR, logger="chatgw"):
            assert models(gw, made["key"]) == 401
    finally:
        logger.removeHandler(caplog.handler)
    unique = {id(r): r for r in caplog.records}.values()
    (line,) = [r for r in unique if r.getMessage() == "key_pepper_mismatch"]
    assert line.fields["key_id"] == made["key_id"]  # type: ignore[attr-defined]
    assert "different pepper v1" in line.fields["problem"]  # type: ignore[attr-defined]
    code, out, err = Cli(capsys, "--state-dir", str(state), "--pepper-secret", secret_arn)("pepper", "status")
    assert code == 1 and "1 made with another pepper" in out and "another pepper of the same version" in err


def test_the_deployed_init_reads_the_secret_without_boto3(env: None, secret_arn: str, moto_server: MotoServer) -> None:
    """What Lambda's init runs as the stack deploys it (DynamoDB store, pepper secret) makes its AWS
    clients from one botocore session: `import boto3` and a second session cost ~80 ms of CPU per
    cold start (docs/bench.md, "Init")."""
    code = (
        "import sys, chatgw.aws_lambda.buffered as entry; "
        "book = __import__('chatgw.compose').compose.container().service.peppers; "
        "assert book.peppers.current == 'v1', book.peppers.current; "
        "assert 'boto3' not in sys.modules, 'boto3 imported at init'"
    )
    run_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHATGW_")},
        "CHATGW_KEYS_TABLE": "init-keys",
        "CHATGW_USAGE_TABLE": "init-usage",
        "CHATGW_PEPPER_SECRET": secret_arn,
        "CHATGW_LOG_LEVEL": "ERROR",
        "AWS_ENDPOINT_URL_DYNAMODB": moto_server.endpoint,
    }
    done = subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
