"""What building the app imports: the Responses and Messages doors' modules wait for their first
request (a cold environment pays for the door it serves), the before-snapshot hook loads them, and
no route makes FastAPI build a response model (which imports `pydantic.v1`, ~18 ms of CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fastapi.routing import APIRoute

from chatgw.compose import Container

DOOR_MODULES = [
    "chatgw.api.openai_responses.endpoint",
    "chatgw.api.openai_responses.wire",
    "chatgw.api.anthropic_messages.endpoints",
    "chatgw.api.anthropic_messages.wire",
]

BUILD_THEN_CALL = """
import json, sys
from pathlib import Path
from fastapi.testclient import TestClient
from chatgw.compose import build
from chatgw.settings import Settings
from chatgw.aws_lambda import snapstart_hooks

modules = {modules!r}
loaded = lambda: [m for m in modules if m in sys.modules]
container = build(Settings(state_dir=Path({state!r})))
seen = {{"built": loaded(), "pydantic.v1": "pydantic.v1" in sys.modules}}
with TestClient(container.app) as client:
    r = client.post("/v1/messages", json={{}}, headers={{"x-api-key": "nope"}})
    seen["messages"] = [r.status_code, r.json()["type"], loaded()]
snapstart_hooks.before_snapshot()
seen["snapshot"] = loaded()
container.store.close()
print(json.dumps(seen))
"""


def test_the_new_doors_load_at_their_first_request_or_before_a_snapshot(tmp_path: Path) -> None:
    code = BUILD_THEN_CALL.format(modules=DOOR_MODULES, state=str(tmp_path / "state"))
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=60, capture_output=True, text=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["built"] == []
    assert seen["pydantic.v1"] is False
    status, kind, loaded = seen["messages"]
    assert (status, kind) == (401, "error")  # Anthropic's envelope, from the door's own module
    assert loaded == ["chatgw.api.anthropic_messages.endpoints", "chatgw.api.anthropic_messages.wire"]
    assert seen["snapshot"] == DOOR_MODULES


def test_no_route_has_a_response_model(make_container: Callable[..., Container]) -> None:
    routes = [r for r in make_container().app.routes if isinstance(r, APIRoute)]
    assert routes
    assert [r.path for r in routes if r.response_field is not None] == []
