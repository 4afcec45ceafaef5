"""The fake Responses server speaks OpenAI's grammar as the openai SDK types it (strict pydantic
validation of every buffered Response and every stream event): the backend's tests against it are
tests against the real protocol's shapes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.fakes.fake_responses import FakeResponses, Script

EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
BODY: dict[str, Any] = {
    "model": "m",
    "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "find it"}]}],
    "store": False,
}
TOOLS = [
    {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}, "strict": False},
    {"type": "function", "name": "fetch", "parameters": {"type": "object", "properties": {}}, "strict": False},
]
SCRIPTS = {
    "text-and-reasoning": (Script(reasoning=True, cached_tokens=1, reasoning_tokens=4), {}),
    "web-search": (Script(web_search=True), {"tools": [{"type": "web_search"}]}),
    "parallel-calls": (Script(parallel_calls=2), {"tools": TOOLS}),
    "incomplete": (Script(), {"max_output_tokens": 2}),
    "content-filter": (Script(incomplete="content_filter"), {}),
    "failed": (Script(failed=("server_error", "boom")), {}),
    "error-event": (Script(error_event=("server_error", "boom")), {}),
}


def post(server: FakeResponses, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/responses", json=body, timeout=10)


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_every_event_and_answer_parses_with_the_sdks_types(fake_responses: FakeResponses, name: str) -> None:
    script, extra = SCRIPTS[name]
    fake_responses.then(script, script)
    Response.model_validate(post(fake_responses, {**BODY, **extra}).json(), strict=True)
    streamed = post(fake_responses, {**BODY, **extra, "stream": True})
    datas = [line[len("data: ") :] for line in streamed.text.splitlines() if line.startswith("data: ")]
    events = [EVENT.validate_python(json.loads(data), strict=True) for data in datas]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created"
    last = {"failed": "response.failed", "error-event": "error"}.get(name)
    ending = ("response.incomplete",) if name in ("incomplete", "content-filter") else ("response.completed",)
    assert events[-1].type == (last or ending[0])
