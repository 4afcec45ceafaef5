"""`handler/bootstrap`, the function's AWS_LAMBDA_EXEC_WRAPPER, run as Lambda runs it: a subprocess
given the managed runtime's command line, with AWS_LAMBDA_RUNTIME_API pointing at a fake."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatgw.aws_lambda.fake_runtime_api import FakeRuntimeAPI
from tests.support.bootstrap import BOOTSTRAP, MANAGED_RUNTIME_COMMAND, wrapper_env
from tests.support.lambda_events import http_v2_event, rest_v1_event


@pytest.fixture
def fake() -> Iterator[FakeRuntimeAPI]:
    with FakeRuntimeAPI() as runtime_api:
        yield runtime_api


@pytest.fixture
def container(fake: FakeRuntimeAPI, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with (tmp_path / "container.log").open("wb") as log:
        process = subprocess.Popen(
            [str(BOOTSTRAP), *MANAGED_RUNTIME_COMMAND],
            env=wrapper_env(fake.address, CHATGW_ASGI_FACTORY="tests.support.lambda_events:probe_app"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        yield process
        process.kill()
        process.wait(timeout=10)


def test_the_wrapper_starts_the_streaming_runtime_for_many_invocations(
    fake: FakeRuntimeAPI, container: subprocess.Popen[bytes]
) -> None:
    first = fake.push(rest_v1_event("GET", "/hello"))
    streamed = fake.push(http_v2_event("GET", "/sse"))
    second = fake.push(rest_v1_event("GET", "/hello"))
    for invocation in (first, streamed, second):
        assert invocation.wait(60)
        assert invocation.succeeded
    assert invocation.response_headers["lambda-runtime-function-response-mode"] == "streaming"
    assert [chunk for _, chunk in streamed.body_chunks] == [
        b"data: one\n\n",
        b"data: two\n\n",
        b"data: three\n\n",
    ]
    # One warm process served them all.
    assert json.loads(first.body)["pid"] == json.loads(second.body)["pid"] == container.pid
    context = json.loads(second.body)
    assert context["request_id"] == second.request_id
    assert (context["function_name"], context["memory_limit_in_mb"]) == ("chatgw", 1024)
    assert (context["log_group_name"], context["log_stream_name"]) == ("/aws/lambda/chatgw", "2026/11/25/[$LATEST]abc")


def test_an_app_that_cannot_be_built_is_an_init_error(fake: FakeRuntimeAPI) -> None:
    result = subprocess.run(
        [str(BOOTSTRAP), *MANAGED_RUNTIME_COMMAND],
        env=wrapper_env(fake.address, CHATGW_ASGI_FACTORY="no_such_module:app"),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert fake.init_error is not None and "no_such_module" in fake.init_error["errorMessage"]


def test_under_sam_local_the_wrapper_hands_over_to_the_managed_runtime(fake: FakeRuntimeAPI) -> None:
    result = subprocess.run(
        [str(BOOTSTRAP), sys.executable, "-c", "print('managed runtime')"],
        env=wrapper_env(fake.address, AWS_SAM_LOCAL="true"),
        capture_output=True,
        timeout=60,
    )
    assert result.stdout == b"managed runtime\n"
    assert fake.next_calls == 0
