"""`chatgw smoke` against `chatgw serve`: it passes; behind a proxy that buffers whole responses it
fails the streaming check (it cannot be fooled); with --stack (moto on loopback: CloudFormation
outputs, DynamoDB tables, the pepper secret) it makes a temporary key and finds the calls in the ledger."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from chatgw.cli import main as chatgw_cli
from chatgw.cli.smoke import report
from chatgw.cli.smoke_checks import Smoke, root_of
from tests.support.cfn_template import moto_stack_outputs, pepper_secret
from tests.support.dynamo import MotoServer, Tables
from tests.support.servers import Gateway, free_port, stop, wait_healthy

PACED_ECHO = json.dumps({"echo": {"backend": "echo", "delay_ms": 20}})


def smoke(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = chatgw_cli.main(["smoke", *argv, "--json", "--timeout", "30"])
    report = json.loads(capsys.readouterr().out)
    return code, {c["name"]: c for c in report["checks"]}


@contextlib.contextmanager
def buffering_proxy(upstream: str) -> Iterator[str]:
    """An HTTP proxy that reads the whole upstream response before sending any of it."""

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            with httpx.Client(timeout=30) as client:
                r = client.request(self.command, upstream + self.path, content=body, headers=headers)
            self.send_response(r.status_code)
            for name, value in r.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)

        do_GET = do_POST = _forward

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def gateway(start_gateway: Any) -> Gateway:
    gw: Gateway = start_gateway({"CHATGW_MODELS": PACED_ECHO})
    return gw


def test_smoke_passes_against_chatgw_serve(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = smoke(capsys, "--url", gateway.openai_base, "--key", gateway.key)
    assert [name for name, c in checks.items() if not c["ok"]] == []
    assert code == 0
    assert set(checks) == {
        "health",
        "model list",
        "buffered completion",
        "streamed completion",
        "bad key is a 401 envelope",
    }
    assert checks["streamed completion"]["detail"].startswith("spread out: TTFB")


def test_against_the_default_unpaced_echo_streaming_is_reported_unchecked(
    start_gateway: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default catalog's `echo` writes its answer at once. Seen through a clock that does not move
    (every event, and the model list, "took" no time: what an unpaced model looks like, decided here
    rather than by how busy the machine is), the real gateway's stream is not judged, and the report
    says so loudly instead of counting it a pass."""
    gw: Gateway = start_gateway()  # the default catalog: `echo` without delay_ms
    with httpx.Client(timeout=30) as client:
        checks = Smoke(gw.openai_base, gw.key, None, client, clock=lambda: 0.0).run()
    streamed = {c.name: c for c in checks}["streamed completion"]
    assert streamed.skipped and "cannot show streaming pacing" in streamed.detail
    assert [c.name for c in checks if not c.ok] == []
    capsys.readouterr()
    assert report(checks, as_json=False) == 0
    out, err = capsys.readouterr()
    (row,) = [line for line in out.splitlines() if line.startswith("streamed completion")]
    assert row.split()[2] == "WARN"
    assert "WARN: NOT CHECKED: streamed completion" in err.strip().splitlines()[-1]


def test_smoke_fails_the_streaming_check_behind_a_buffering_proxy(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    with buffering_proxy(gateway.base_url) as proxy:
        code, checks = smoke(capsys, "--url", f"{proxy}/v2/llms", "--key", gateway.key)
    assert code == 1
    assert [name for name, c in checks.items() if not c["ok"]] == ["streamed completion"]
    assert "chunks arrived together" in checks["streamed completion"]["detail"]


def test_a_table_and_an_exit_code(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    code = chatgw_cli.main(["smoke", "--url", gateway.base_url, "--key", gateway.key[:-2] + "zz"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.splitlines()[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert "FAIL" in out and "checks passed" in err


def test_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert chatgw_cli.main(["smoke"]) == 2
    assert chatgw_cli.main(["smoke", "--url", "http://127.0.0.1:9"]) == 2
    assert "--key" in capsys.readouterr().err


def test_root_of_what_users_hold() -> None:
    assert root_of("https://x.execute-api.us-east-1.amazonaws.com/prod/v2/llms") == (
        "https://x.execute-api.us-east-1.amazonaws.com/prod"
    )
    assert root_of("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000"


def test_smoke_on_a_stack_finds_its_calls_in_the_ledger(
    dynamo_tables: Tables, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    aws = {
        "AWS_ENDPOINT_URL_DYNAMODB": moto_server.endpoint,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_server.endpoint,
        "AWS_ENDPOINT_URL_CLOUDFORMATION": moto_server.endpoint,
    }
    for name, value in aws.items():
        monkeypatch.setenv(name, value)
    for name in ("CHATGW_KEYS_TABLE", "CHATGW_USAGE_TABLE", "CHATGW_STATE_DIR", "CHATGW_PEPPER_SECRET"):
        monkeypatch.delenv(name, raising=False)
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name=f"pepper-{uuid.uuid4().hex[:8]}", SecretString=pepper_secret())["ARN"]
    port = free_port()
    env = {
        **os.environ,
        "CHATGW_KEYS_TABLE": dynamo_tables.keys,
        "CHATGW_USAGE_TABLE": dynamo_tables.usage,
        "CHATGW_PEPPER_SECRET": arn,  # as the template sets it
        "CHATGW_MODELS": PACED_ECHO,
        "CHATGW_LOG_LEVEL": "WARNING",
        "CHATGW_STATE_DIR": str(tmp_path / "state"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "chatgw.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process=process)
        # template.yaml's own outputs, the API's URL pointed at the local server
        physical = {"KeysTable": dynamo_tables.keys, "UsageTable": dynamo_tables.usage, "PepperSecret": arn}
        template = {
            "Resources": {"T": {"Type": "AWS::SNS::Topic"}},
            "Outputs": moto_stack_outputs(physical, {"OpenAIBaseUrl": f"{base}/v2/llms"}),
        }
        stack = f"chatgw-smoke-{uuid.uuid4().hex[:6]}"
        boto3.client("cloudformation", region_name="us-east-1").create_stack(
            StackName=stack, TemplateBody=json.dumps(template)
        )
        code, checks = smoke(capsys, "--stack", stack)
    finally:
        stop(process)
    assert [name for name, c in checks.items() if not c["ok"]] == []
    assert code == 0
    assert [name for name, c in checks.items() if c["skipped"]] == []  # the paced echo's stream was judged
    assert checks["usage ledger recorded the calls"]["detail"] == "2 event(s) for 2 call(s)"
    from chatgw.store.dynamodb.store import DynamoStore
    from chatgw.store.dynamodb.tables import make_client

    client = make_client(endpoint_url=moto_server.endpoint, region="us-east-1")
    store = DynamoStore(client, dynamo_tables.keys, dynamo_tables.usage)
    assert store.list_keys() == []  # the temporary key is gone
    store.close()
