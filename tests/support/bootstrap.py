"""handler/bootstrap, the wrapper the Lambda runtime starts, run against a fake Runtime API."""

from __future__ import annotations

import os
import sys

from tests.support.tools import ROOT

BOOTSTRAP = ROOT / "handler" / "bootstrap"
MANAGED_RUNTIME_COMMAND = [sys.executable, "/var/runtime/bootstrap.py"]


def wrapper_env(runtime_api: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CHATGW_", "PYTEST"))}
    env.update(
        AWS_LAMBDA_RUNTIME_API=runtime_api,
        AWS_LAMBDA_FUNCTION_NAME="chatgw",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1024",
        AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/chatgw",
        AWS_LAMBDA_LOG_STREAM_NAME="2026/11/25/[$LATEST]abc",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env
