"""Schemathesis against the app's own OpenAPI document (`app.openapi()`): data that fits the
schema and data that does not, through the ASGI app, with schemathesis' response checks
(no server error, the documented status codes, content types and bodies, auth not ignored)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response

from tests.support.fuzz import Fuzzed

# pytest compiles schemathesis' modules itself (it is a pytest plugin, so they are rewritten on
# import). Import the lazily imported ones now, at collection, and not in the middle of a test run:
# CPython 3.11's AST recursion-depth bookkeeping (python/cpython#106905) can fail such a compile with
# "SystemError: AST constructor recursion depth mismatch" once threads and hypothesis are running.
for _module in (
    "schemathesis.specs.openapi.schemas",
    "schemathesis.specs.openapi.coverage",
    "schemathesis.specs.openapi.stateful",
    "schemathesis.specs.openapi.auth_flow",
    "schemathesis.specs.openapi.auth_jwt",
    "schemathesis.specs.openapi.object_authorization",
    "schemathesis.transport.asgi",
    "schemathesis.transport.requests",
    "schemathesis.transport.wsgi",
    "schemathesis.engine.supervisor",
    "schemathesis.engine.link_calibration",
    "schemathesis.generation.jsonschema.strategy",
    "schemathesis.generation.body_overrides",
    "schemathesis.generation.dictionaries",
    "schemathesis.generation.stateful.control",
    "schemathesis.wfc.escalation",
):
    importlib.import_module(_module)

NEGATIVE = GenerationMode.NEGATIVE
MODES = [GenerationMode.POSITIVE, NEGATIVE]


@pytest.fixture
def api_schema(fuzzed: Fuzzed) -> Any:
    loaded = schemathesis.openapi.from_dict(fuzzed.container.app.openapi())
    loaded.app = fuzzed.container.app
    return loaded


def test_openapi_document_is_the_real_contract(fuzzed: Fuzzed) -> None:
    document = fuzzed.container.app.openapi()
    text = str(document)
    assert "HTTPValidationError" not in text and "'422'" not in text  # FastAPI's `{"detail": ...}` never happens
    chat = document["paths"]["/v2/llms/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatRequest"}
    assert chat["responses"]["default"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorEnvelope")
    assert chat["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert "security" not in document["paths"]["/health"]["get"]
    for path in CHAT_PATHS:  # a 200 is JSON or, with `stream: true`, SSE: both documented with their schemas
        ok = document["paths"][path]["post"]["responses"]["200"]["content"]
        assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatCompletion"}
        event_data = ok["text/event-stream"]["itemSchema"]["properties"]["data"]["anyOf"]
        assert {"const": "[DONE]"} in event_data
        assert {"$ref": "#/components/schemas/ChatCompletionChunk"} in event_data[1]["contentSchema"]["anyOf"]


CHAT_PATHS = ["/v2/llms/chat/completions", "/v1/chat/completions"]
OPERATIONS = [
    "GET /health",
    "POST /v2/llms/chat/completions",
    "POST /v1/chat/completions",
    "GET /v2/llms",
    "GET /v1/models",
    "GET /v2/llms/models",
    "GET /v1/models/{model}",
    "GET /v2/llms/models/{model}",
]


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    labels = {op.ok().label for op in api_schema.get_all_operations()}
    assert labels == set(OPERATIONS)


# /health takes no input, so there is no negative case to make for it.
CASES = [(label, mode) for label in OPERATIONS for mode in MODES if (label, mode) != ("GET /health", NEGATIVE)]


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{label}-{mode.value}" for label, mode in CASES])
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_schema_conformance(api_schema: Any, fuzzed: Fuzzed, label: str, mode: GenerationMode, data: Any) -> None:
    operation = api_schema.find_operation_by_label(label)
    case = data.draw(operation.as_strategy(generation_mode=mode))
    if mode == GenerationMode.POSITIVE and isinstance(case.body, dict) and data.draw(st.booleans()):
        case.body["model"] = "echo"  # a model that exists, so that more than the 404 is exercised
        if "messages" in case.body:  # a chat body: answered as JSON or as SSE, both checked against the document
            case.body["stream"] = data.draw(st.booleans())
    response = case.call(headers={"x-api-key": fuzzed.key})
    assert "x-request-id" in response.headers
    assert response.status_code < 500, response.text
    # Not `positive_data_acceptance`: schema-valid is not always acceptable, by design: a backend
    # refuses parameters it cannot honour (400 unsupported_parameter), unknown models are 404s, and
    # cross-field rules (`stream_options` only with `stream`, ...) are checked in code.
    case.validate_response(response, headers={"x-api-key": fuzzed.key}, excluded_checks=[positive_data_acceptance])
    if mode == GenerationMode.POSITIVE and response.status_code == 400:
        assert response.json()["error"]["code"] in ("unsupported_parameter", "invalid_value"), response.text


def _streamed_case(api_schema: Any, path: str) -> Any:
    operation = api_schema.find_operation_by_label(f"POST {path}")
    body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": "one two three"}]}
    return operation.Case(body=body, media_type="application/json")


@pytest.mark.parametrize("path", CHAT_PATHS)
def test_streamed_answer_conforms_to_the_document(api_schema: Any, fuzzed: Fuzzed, path: str) -> None:
    """The streamed 200 on every run, not only when hypothesis happens to draw `stream: true`."""
    case = _streamed_case(api_schema, path)
    response = case.call(headers={"x-api-key": fuzzed.key})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"][0].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]" and len(events) == 6, events  # role, three words, finish, [DONE]
    case.validate_response(response, headers={"x-api-key": fuzzed.key})


@pytest.mark.parametrize(
    "bad_event",
    [
        b'data: {"id":"x","object":"chat.completion","created":1,"model":"echo","choices":[]}\n\n',
        b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"echo"}\n\n',
        b"data: not json\n\n",
    ],
    ids=["not-a-chunk", "no-choices", "not-json"],
)
def test_stream_events_are_checked_against_the_chunk_schema(api_schema: Any, fuzzed: Fuzzed, bad_event: bytes) -> None:
    """The SSE item schema is really applied: a stream whose event is not a chunk fails the check."""
    case = _streamed_case(api_schema, CHAT_PATHS[0])
    real = Response.from_any(case.call(headers={"x-api-key": fuzzed.key}))
    assert real.status_code == 200
    forged = Response(
        status_code=200,
        headers=real.headers,
        content=bad_event + b"data: [DONE]\n\n",
        request=real.request,
        elapsed=real.elapsed,
        verify=real.verify,
    )
    with pytest.raises(FailureGroup):
        case.validate_response(forged, headers={"x-api-key": fuzzed.key})
