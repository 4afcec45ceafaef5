"""Property tests of the Messages door, byte for byte through the ASGI app: whatever a client sends
to `/v1/messages` (bodies mostly Messages-shaped, blocks of every kind and of none), the answer is
never a 5xx; every error is Anthropic's envelope with a `request-id`; a stream ends with
`message_stop` or `error`."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.asgi import run
from tests.support.fuzz import Fuzzed

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
BLOCK_TYPES = [
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "server_tool_use",
]
blocks = st.fixed_dictionaries(
    {"type": st.sampled_from(BLOCK_TYPES)},
    optional={
        "text": st.text(max_size=10),
        "source": st.fixed_dictionaries({"type": st.sampled_from(["base64", "url", "file", "text", "content"])})
        | json_values,
        "id": st.text(max_size=6),
        "name": st.text(max_size=6),
        "input": json_values,
        "tool_use_id": st.text(max_size=6),
        "content": st.text(max_size=6) | json_values,
        "thinking": st.text(max_size=6),
        "signature": st.text(max_size=6),
        "data": st.text(max_size=6),
        "cache_control": st.just({"type": "ephemeral"}) | json_values,
    },
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "tool"]),
            "content": st.text(max_size=10) | st.lists(blocks, max_size=3),
        }
    ),
    max_size=3,
)
tools = st.lists(
    st.fixed_dictionaries(
        {"name": st.text(max_size=5)}, optional={"input_schema": json_values, "type": st.text(max_size=8)}
    ),
    max_size=2,
)
tool_choices = st.fixed_dictionaries({"type": st.sampled_from(["auto", "any", "tool", "none", "x"])}) | json_values
thinkings = st.fixed_dictionaries(
    {"type": st.sampled_from(["enabled", "adaptive", "disabled", "x"])}, optional={"budget_tokens": json_values}
)
plain = st.lists(
    st.fixed_dictionaries({"role": st.just("user"), "content": st.text(min_size=1, max_size=10)}), min_size=1
)
# Most bodies are right but for one or two fields, so that the fuzzing reaches the backends and the streams.
bodies = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["echo", "echo", "scripted", "nope"]) | json_values,
        "messages": plain | plain | messages | json_values,
        "max_tokens": st.integers(1, 20) | st.integers(1, 20) | json_values,
    },
    optional={
        "stream": st.booleans(),
        "system": st.text(max_size=8) | st.lists(blocks, max_size=2) | json_values,
        "tools": tools,
        "thinking": thinkings,
        "stop_sequences": st.lists(st.text(min_size=1, max_size=4), max_size=2),
        "temperature": st.floats(0, 1) | json_values,
        "output_config": st.fixed_dictionaries({"effort": st.sampled_from(["low", "high"])}) | json_values,
        "metadata": st.fixed_dictionaries({"user_id": st.text(max_size=5)}) | json_values,
        "context_management": json_values,
        "service_tier": json_values,
    },
)  # fmt: skip

block_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system"]), "content": st.lists(blocks, min_size=1, max_size=3)}
    ),
    min_size=1,
    max_size=3,
)
good_bodies = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["echo", "scripted"]),
        "messages": plain | block_messages,
        "max_tokens": st.integers(1, 20),
    },
    optional={
        "stream": st.booleans(),
        "system": st.text(max_size=8),
        "temperature": st.floats(0, 1),
        "stop_sequences": st.lists(st.text(min_size=1, max_size=3), max_size=2),
        "thinking": st.sampled_from([{"type": "adaptive"}, {"type": "enabled", "budget_tokens": 9}]),
        "metadata": st.fixed_dictionaries({"user_id": st.text(max_size=5)}),
        "context_management": json_values,
        "output_config": st.fixed_dictionaries({"effort": st.sampled_from(["low", "high"])}),
    },
)


def check(reply: Any) -> None:
    event(f"status {reply.status}")
    assert reply.status < 500, (reply.status, reply.body[:500])
    assert b"Traceback" not in reply.body
    if reply.status >= 400:
        body = reply.json()
        assert set(body) == {"type", "error", "request_id"} and body["type"] == "error", body
        assert set(body["error"]) == {"type", "message"} and body["request_id"] == reply.header("request-id")[0]
    elif reply.header("content-type")[0].startswith("text/event-stream"):
        last = reply.body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
        assert last.startswith((b"event: message_stop\n", b"event: error\n")), reply.body[-300:]


@FUZZ
@given(body=bodies | good_bodies, choice=st.none() | st.none() | tool_choices)
def test_messages_bodies(fuzzed: Fuzzed, body: dict[str, Any], choice: Any) -> None:
    if choice is not None:
        body["tool_choice"] = choice
    headers = [(b"x-api-key", fuzzed.key.encode()), (b"content-type", b"application/json")]
    check(run(fuzzed.app, "POST", b"/v1/messages?beta=true", headers, json.dumps(body).encode()))


@FUZZ
@given(body=st.binary(max_size=60) | st.text(max_size=60).map(str.encode))
def test_messages_bytes(fuzzed: Fuzzed, body: bytes) -> None:
    headers = [(b"authorization", f"Bearer {fuzzed.key}".encode()), (b"content-type", b"application/json")]
    for path in (b"/v1/messages", b"/v1/messages/count_tokens"):
        check(run(fuzzed.app, "POST", path, headers, body))
