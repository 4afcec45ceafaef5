"""Property tests of the Responses door, byte for byte through the ASGI app: whatever items, tools
and settings a client sends, the answer is never a 5xx and every error is the one envelope; a body
the door's rules accept is answered (or refused as unsupported by the model), never a crash."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chatgw.api.openai_responses.validation import parse_responses_request
from chatgw.errors import InvalidRequest
from tests.support.asgi import assert_envelope, run
from tests.support.fuzz import Fuzzed

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PATH = "/v1/responses"
MODELS = ("echo", "scripted")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
text_part = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "output_text"]), "text": st.text(max_size=12)}
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "developer"]), "content": st.text(max_size=12)},
    optional={"type": st.just("message"), "id": st.text(max_size=6)},
)
message_with_parts = st.fixed_dictionaries(
    {
        "type": st.just("message"),
        "role": st.sampled_from(["user", "developer"]),
        "content": st.lists(text_part, max_size=3),
    }
)
call = st.fixed_dictionaries(
    {
        "type": st.just("function_call"),
        "call_id": st.sampled_from(["c1", "c2"]),
        "name": st.sampled_from(["f", "apply_patch"]),
        "arguments": st.sampled_from(["{}", '{"a": 1}', "not json"]),
    }
)
output = st.fixed_dictionaries(
    {
        "type": st.just("function_call_output"),
        "call_id": st.sampled_from(["c1", "c2", "c9"]),
        "output": st.text(max_size=8),
    }
)
summary = st.fixed_dictionaries({"type": st.just("summary_text"), "text": st.text(max_size=8)})
reasoning = st.fixed_dictionaries(
    {
        "type": st.just("reasoning"),
        "summary": st.lists(
            st.fixed_dictionaries({"type": st.just("summary_text"), "text": st.text(max_size=8)}), max_size=2
        ),
    },
    optional={"encrypted_content": st.text(max_size=8)},
)
odd_item = st.dictionaries(
    st.sampled_from(["type", "role", "content", "call_id", "output", "id"]), json_values, max_size=4
)
tool = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("function"), "name": st.sampled_from(["f", "g"]), "parameters": st.just({"type": "object"})}
    ),
    st.fixed_dictionaries({"type": st.just("custom"), "name": st.just("apply_patch")}),
    st.fixed_dictionaries({"type": st.sampled_from(["web_search", "namespace", "tool_search", "code_interpreter"])}),
    st.dictionaries(st.sampled_from(["type", "name"]), json_values, max_size=2),
)
choice = st.one_of(
    st.sampled_from(["auto", "none", "required"]),
    st.sampled_from(["auto", "none"]),
    st.fixed_dictionaries({"type": st.sampled_from(["function", "web_search", "allowed_tools"]), "name": st.just("f")}),
    json_values,
)


def settings_of(**fields: Any) -> Any:
    return st.fixed_dictionaries({}, optional=fields)


bodies = st.fixed_dictionaries(
    {
        "model": st.one_of(st.sampled_from(MODELS), st.sampled_from(MODELS), st.just("no-such-model")),
        "input": st.one_of(
            st.text(min_size=1, max_size=20),
            st.lists(st.one_of(message, message_with_parts, call, output, reasoning), min_size=1, max_size=5),
            st.lists(st.one_of(message, message_with_parts, call, output, reasoning), min_size=1, max_size=5),
            st.lists(odd_item, max_size=3),
        ),
    },
    optional={
        "stream": st.booleans(),
        "instructions": st.text(max_size=10) | json_values,
        "tools": st.lists(tool, max_size=3),
        "tool_choice": choice,
        "max_output_tokens": st.integers(0, 5),
        "reasoning": settings_of(effort=st.sampled_from(["low", "x"]), summary=st.just("auto")),
        "text": settings_of(format=json_values, verbosity=st.sampled_from(["low", "loud"])),
        "include": st.lists(st.sampled_from(["reasoning.encrypted_content", "nope"]), max_size=2),
        "store": st.booleans(),
        "previous_response_id": st.none() | st.text(max_size=5),
    },
)  # fmt: skip


def accepted(body: Any) -> bool:
    try:
        parse_responses_request(json.dumps(body).encode())
    except InvalidRequest:
        return False
    return True


@FUZZ
@given(body=bodies | bodies | json_values)
def test_any_responses_body(fuzzed: Fuzzed, body: Any) -> None:
    reply = run(
        fuzzed.app,
        "POST",
        PATH,
        [(b"x-api-key", fuzzed.key.encode()), (b"content-type", b"application/json")],
        json.dumps(body).encode(),
    )
    assert_envelope(reply)
    event(f"status {reply.status}")
    if reply.status == 200:
        assert accepted(body)
    elif accepted(body) and isinstance(body, dict) and body.get("model") in MODELS:
        assert reply.status == 400 and reply.json()["error"]["code"] == "unsupported_parameter", reply.body
