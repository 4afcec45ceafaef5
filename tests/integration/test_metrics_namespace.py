"""The CloudWatch namespace of the EMF metrics: what CHATGW_METRICS_NAMESPACE names reaches the lines a
container built by compose writes, and the stack's default is the code's, since the dashboard and the
alarms read the template's namespace (another would show an empty dashboard and alarms that never fire)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatgw.access.keys import new_key
from chatgw.compose import build
from chatgw.observability.metrics import NAMESPACE
from chatgw.settings import Settings
from tests.support.template import template as template


def test_a_container_built_from_the_environment_writes_its_namespace(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    env = {"CHATGW_METRICS": "emf", "CHATGW_METRICS_NAMESPACE": "chatgw-staging", "CHATGW_STATE_DIR": str(tmp_path)}
    container = build(Settings.from_env(env))
    try:
        key, record = new_key("ns", pepper=b"")
        container.store.create_key(record)
        chat = {"model": "echo", "messages": [{"role": "user", "content": "hello"}]}

        async def ask() -> int:
            transport = httpx.ASGITransport(app=container.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                headers = {"authorization": f"Bearer {key}"}
                return (await client.post("/v1/chat/completions", json=chat, headers=headers)).status_code

        capfd.readouterr()
        assert asyncio.run(ask()) == 200
    finally:
        container.store.close()
    emf = [json.loads(line) for line in capfd.readouterr().err.splitlines() if '"_aws"' in line]
    assert emf, "no EMF line written"
    namespaces = {d["Namespace"] for blob in emf for d in blob["_aws"]["CloudWatchMetrics"]}
    assert namespaces == {"chatgw-staging"}


def test_the_templates_default_namespace_is_the_codes(template: dict[str, Any]) -> None:
    default = template["Parameters"]["MetricsNamespace"]["Default"]
    assert default == NAMESPACE == Settings.from_env({}).metrics_namespace == Settings().metrics_namespace
