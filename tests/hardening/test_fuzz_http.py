"""Property tests of the HTTP API, byte for byte through the ASGI app: whatever a client sends
(bodies, headers, paths, methods), the answer is never a 5xx, every error is the one envelope,
and every response carries one `x-request-id`."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chatgw.api.openai_chat.validation import parse_chat_request
from chatgw.errors import InvalidRequest
from tests.support.asgi import CHAT, assert_envelope, run
from tests.support.fuzz import BODY_LIMIT, Fuzzed

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
VALID: dict[str, Any] = {"model": "echo", "messages": [{"role": "user", "content": "hello there"}]}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
known_fields = st.sampled_from(
    [
        "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "stop", "max_tokens",
        "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias", "seed", "user",
        "response_format", "tools", "tool_choice", "metadata", "logprobs", "top_logprobs", "api_key",
        "base_url", "extra_headers", "reasoning_effort", "modalities", "audio", "prediction",
    ]
)  # fmt: skip
message_fields = st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id", "refusal", "api_base"])
huge_numbers = st.sampled_from(
    [
        "1" + "0" * 400, "-1" + "0" * 400, "1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity",
        "9223372036854775808", "-9223372036854775809", "18446744073709551616", "0.0000000000000000000001",
        "-0", "1.7976931348623157e308", "4.9e-324", "00", "0x10", "1_000", "+1", ".5",
    ]
)  # fmt: skip
numeric_fields = st.sampled_from(
    ["temperature", "top_p", "n", "max_tokens", "max_completion_tokens", "presence_penalty", "seed", "top_logprobs"]
)


def headers_for(key: str, content_type: bytes = b"application/json") -> list[tuple[bytes, bytes]]:
    return [(b"x-api-key", key.encode()), (b"content-type", content_type)]


MODELS = ("echo", "scripted")
a_message = st.fixed_dictionaries({"role": st.just("user"), "content": st.text(min_size=1, max_size=20)})
odd_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "developer", "assistant", "tool", "bot"])},
    optional={"content": st.text(max_size=20) | json_values, "name": st.text(max_size=8)},
)
# Half the bodies are chat-shaped (`model` and `messages` both there, mostly right), so that the
# fuzzing reaches past the first missing field into validation, the catalog and the backends.
chat_bodies = st.fixed_dictionaries(
    {
        "model": st.one_of(st.sampled_from(MODELS), st.sampled_from(MODELS), st.just("no-such-model"), json_values),
        "messages": st.one_of(
            st.lists(a_message, min_size=1, max_size=3),
            st.lists(a_message, min_size=1, max_size=3),
            st.lists(odd_message, max_size=3),
            json_values,
        ),
    },
    optional={"stream": st.booleans(), "n": st.integers(1, 3), "max_tokens": st.integers(1, 5)},
)


def expected_status(body: Any) -> int | None:
    """The status this body must get, where the rules alone decide it (None: 200 or a 400)."""
    if not isinstance(body, dict) or "model" not in body or "messages" not in body:
        return 400
    try:
        parse_chat_request(json.dumps(body).encode())
    except InvalidRequest:
        return 400
    return 404 if body["model"] not in MODELS else None


@FUZZ
@given(body=json_values | chat_bodies)
def test_any_json_body(fuzzed: Fuzzed, body: Any) -> None:
    reply = run(fuzzed.app, "POST", CHAT, headers_for(fuzzed.key), json.dumps(body).encode())
    assert_envelope(reply)
    event(f"status {reply.status}")  # `pytest --hypothesis-show-statistics` shows the spread
    expected = expected_status(body)
    if expected is None:  # valid, for a model that exists: answered, or refused as unsupported by it
        assert reply.status == 200 or reply.json()["error"]["code"] == "unsupported_parameter", reply.body
    else:
        assert reply.status == expected, reply.body
    if reply.status == 404:
        assert reply.json()["error"]["code"] == "model_not_found"


@FUZZ
@given(field=known_fields, value=json_values, in_message=st.booleans(), mfield=message_fields, drop=st.booleans())
def test_mutated_valid_request(
    fuzzed: Fuzzed, field: str, value: Any, in_message: bool, mfield: str, drop: bool
) -> None:
    body = json.loads(json.dumps(VALID))
    target, name = (body["messages"][0], mfield) if in_message else (body, field)
    if drop:
        target.pop(name, None)
    else:
        target[name] = value
    reply = run(fuzzed.app, "POST", CHAT, headers_for(fuzzed.key), json.dumps(body).encode())
    assert_envelope(reply)
    if reply.status >= 400:
        assert reply.json()["field_errors"] or reply.status != 400
    if drop and not in_message and name in ("model", "messages"):
        assert reply.status == 400 and name in reply.json()["field_errors"], reply.body  # a missing field, named
    if not drop and not in_message and name in ("api_key", "base_url", "extra_headers"):
        assert reply.status == 400 and name in reply.json()["field_errors"], reply.body  # never taken from a client


@FUZZ
@given(field=numeric_fields, literal=huge_numbers)
def test_huge_and_odd_numbers(fuzzed: Fuzzed, field: str, literal: str) -> None:
    text = json.dumps(VALID)[:-1] + f', "{field}": {literal}}}'
    reply = run(fuzzed.app, "POST", CHAT, headers_for(fuzzed.key), text.encode())
    assert_envelope(reply)


@FUZZ
@given(depth=st.integers(1, 20_000), opener=st.sampled_from(["[", '{"a":']), where=st.sampled_from(["body", "content"]))
def test_deep_nesting(fuzzed: Fuzzed, depth: int, opener: str, where: str) -> None:
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + "1" + closer * depth
    wrapped = '{"model": "echo", "messages": [{"role": "user", "content": ' + nested + "}]}"
    text = nested if where == "body" else wrapped
    reply = run(fuzzed.app, "POST", CHAT, headers_for(fuzzed.key), text.encode())
    assert_envelope(reply)
    assert reply.status == (413 if len(text.encode()) > BODY_LIMIT else 400), reply.body


@FUZZ
@given(
    raw=st.binary(max_size=300) | st.text(max_size=100).map(lambda t: t.encode("utf-16")),
    content_type=st.sampled_from(
        [b"application/json", b"text/plain", b"multipart/form-data; boundary=x", b"", b"image/png"]
    ),
)
def test_arbitrary_bytes_and_content_types(fuzzed: Fuzzed, raw: bytes, content_type: bytes) -> None:
    reply = run(fuzzed.app, "POST", CHAT, headers_for(fuzzed.key, content_type), raw)
    assert_envelope(reply)
    assert reply.status == 400


@pytest.mark.parametrize(
    "text",
    [
        b'{"model": "echo", "messages": [{"role": "user", "content": "caf\xe9"}]}',  # latin-1, not UTF-8
        b'{"model": "echo", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',  # a UTF-8 surrogate
        b'{"model": "echo", "messages": [{"role": "user", "content": "\\ud800"}]}',  # a lone escaped surrogate
        b'\xef\xbb\xbf{"model": "echo", "messages": [{"role": "user", "content": "bom"}]}',
        b'{"model": "echo\x00", "messages": [{"role": "user", "content": "nul"}]}',
    ],
)
def test_invalid_utf8_and_odd_encodings(fuzzed: Fuzzed, text: bytes) -> None:
    reply = run(fuzzed.app, "POST", CHAT, headers_for(fuzzed.key), text)
    assert_envelope(reply)
    assert reply.status == 400


@pytest.mark.parametrize(
    ("body", "extra_headers", "status"),
    [
        (b"", [], 400),
        (b"   \n", [], 400),
        (b"null", [], 400),
        (b"x" * (BODY_LIMIT + 1), [], 413),
        (b"x" * (BODY_LIMIT + 1), [(b"content-length", str(BODY_LIMIT + 1).encode())], 413),
        ([b"x" * 30_000] * 3, [], 413),  # chunked, no content-length
        (b"{}", [(b"content-length", str(10**30).encode())], 413),  # a declared length over the limit
        (b"{}", [(b"content-length", b"-5")], 400),
        (b"{}", [(b"content-length", b"lots")], 400),
    ],
)
def test_empty_and_over_limit_bodies(
    fuzzed: Fuzzed, body: bytes | list[bytes], extra_headers: list[tuple[bytes, bytes]], status: int
) -> None:
    reply = run(fuzzed.app, "POST", CHAT, headers_for(fuzzed.key) + extra_headers, body)
    assert_envelope(reply)
    assert reply.status == status, reply.body
    if status == 413:
        assert reply.json()["error"]["code"] == "request_too_large"


header_names = st.sampled_from(
    [b"x-api-key", b"authorization", b"content-type", b"content-length", b"x-request-id", b"host", b"x-forwarded-for"]
) | st.binary(min_size=1, max_size=20)
header_values = (
    st.binary(max_size=60)
    | st.text(max_size=30).map(lambda t: t.encode("utf-8"))
    | st.integers(1, 70_000).map(lambda n: b"v" * n)
    | st.sampled_from([b"Bearer ", b"Bearer cgw_", b"bearer  ", b"Basic Zm9vOmJhcg==", b"cgw_abc_def", "ключ".encode()])
)


@FUZZ
@given(extra=st.lists(st.tuples(header_names, header_values), max_size=6), with_key=st.booleans())
def test_arbitrary_headers(fuzzed: Fuzzed, extra: list[tuple[bytes, bytes]], with_key: bool) -> None:
    headers = [(k.lower(), v) for k, v in extra]
    if with_key:
        headers.insert(0, (b"x-api-key", fuzzed.key.encode()))
    reply = run(fuzzed.app, "POST", CHAT, headers, json.dumps(VALID).encode())
    assert_envelope(reply)
    assert fuzzed.key.encode() not in reply.body
    names = {name for name, _ in headers}
    if not names & {b"x-api-key", b"authorization"}:
        assert reply.status == 401, reply.body  # no key at all
    elif (
        with_key
        and not names & {b"authorization", b"content-length", b"content-type"}
        and len(headers) == len({k for k, _ in headers})
    ):
        assert reply.status == 200, reply.body  # the key, and headers the gateway does not read


def _wrong(key: str) -> str:
    return key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")


@pytest.mark.parametrize(
    ("shape", "status"),
    [
        ("x-api-key", 200),
        ("bearer", 200),
        ("both-agree", 200),
        ("twice-agree", 200),
        ("bearer-lowercase", 200),
        ("both-disagree", 401),
        ("x-api-key-twice-disagree", 401),
        ("bearer-twice-disagree", 401),
        ("good-x-api-key-basic-auth", 401),
        ("wrong-secret", 401),
        ("non-ascii", 401),
        ("query-string-only", 401),
        ("none", 401),
    ],
)
def test_key_headers(fuzzed: Fuzzed, shape: str, status: int) -> None:
    key = fuzzed.key.encode()
    other = _wrong(fuzzed.key).encode()
    path = CHAT
    headers = {
        "x-api-key": [(b"x-api-key", key)],
        "bearer": [(b"authorization", b"Bearer " + key)],
        "both-agree": [(b"x-api-key", key), (b"authorization", b"Bearer " + key)],
        "twice-agree": [(b"x-api-key", key), (b"x-api-key", key)],
        "bearer-lowercase": [(b"authorization", b"bearer " + key)],
        "both-disagree": [(b"x-api-key", key), (b"authorization", b"Bearer " + other)],
        "x-api-key-twice-disagree": [(b"x-api-key", key), (b"x-api-key", other)],
        "bearer-twice-disagree": [(b"authorization", b"Bearer " + key), (b"authorization", b"Bearer " + other)],
        "good-x-api-key-basic-auth": [(b"x-api-key", key), (b"authorization", b"Basic Zm9vOmJhcg==")],
        "wrong-secret": [(b"x-api-key", other)],
        "non-ascii": [(b"x-api-key", key + "é".encode())],
        "query-string-only": [],
        "none": [],
    }[shape]
    if shape == "query-string-only":
        path = f"{CHAT}?api_key={fuzzed.key}&key={fuzzed.key}"
    headers.append((b"content-type", b"application/json"))
    reply = run(fuzzed.app, "POST", path, headers, json.dumps(VALID).encode())
    assert_envelope(reply)
    assert reply.status == status, reply.body
    assert key not in reply.body and other not in reply.body
    if status == 401:
        assert reply.json()["error"]["type"] == "authentication_error"


segments = st.sampled_from(
    [
        "", ".", "..", "%2e%2e", "%2E.", "%2F", "%2f..%2f", "v1", "v2", "llms", "chat", "completions", "models",
        "echo", "health", "%65cho", "é", "%C3%A9", "%ff", "%", "%zz", "%00", ";x", "..;", "~", "*",
    ]
)  # fmt: skip
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "BREW"])


@FUZZ
@given(parts=st.lists(segments, min_size=0, max_size=6), trailing=st.booleans(), method=methods, query=st.booleans())
def test_paths_and_methods(fuzzed: Fuzzed, parts: list[str], trailing: bool, method: str, query: bool) -> None:
    path = "/" + "/".join(parts) + ("/" if trailing else "") + ("?x=%ff&y" if query else "")
    reply = run(fuzzed.app, method, path.encode(), headers_for(fuzzed.key), json.dumps(VALID).encode())
    assert_envelope(reply)
    route = unquote(path.partition("?")[0])
    routed = route == "/" or route.startswith(("/v1/", "/v2/llms", "/health"))  # `/`: Claude Code's probe
    if not routed:
        assert reply.status == 404, (path, reply.body)  # no route: the one 404 envelope
    else:
        assert reply.status in (200, 404, 405), (path, reply.body)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "//v2/llms/chat/completions", 404),
        ("POST", "/v2/llms/chat/completions/", 404),  # no redirect: it would drop the stage prefix and the body
        ("POST", "/v2/llms/../llms/chat/completions", 404),
        ("POST", "/v2/llms/%2e%2e/llms/chat/completions", 404),
        ("POST", "/v2/llms/chat%2Fcompletions", 200),  # unquoted by the server, as uvicorn does
        ("POST", "/v2//llms/chat/completions", 404),
        ("GET", "/v2/llms/chat/completions", 405),
        ("GET", "/health/", 404),
        ("GET", "/v1/models/", 404),
        ("GET", "/v1/models/..%2F..%2Fhealth", 404),
        ("GET", "/v1/models/%2e%2e", 404),
        ("GET", "/v1/models/echo", 200),
        ("GET", "/v1/models/echo/", 404),
        ("DELETE", "/v1/models/echo", 405),
    ],
)
def test_path_edges(fuzzed: Fuzzed, method: str, path: str, status: int) -> None:
    reply = run(fuzzed.app, method, path.encode(), headers_for(fuzzed.key), json.dumps(VALID).encode())
    assert_envelope(reply)
    assert reply.status == status, reply.body
    if status == 405:
        assert reply.header("allow"), reply.headers


def test_narrow_key_refusals_are_envelopes(fuzzed: Fuzzed) -> None:
    for body, status in [
        ({**VALID, "model": "scripted"}, 404),  # not allowed: as if missing
        ({**VALID, "stream": True}, 403),
        ({**VALID, "model": "no-such-model"}, 404),
    ]:
        reply = run(fuzzed.app, "POST", CHAT, headers_for(fuzzed.narrow_key), json.dumps(body).encode())
        assert_envelope(reply)
        assert reply.status == status


def test_client_cannot_choose_the_request_id(fuzzed: Fuzzed) -> None:
    """Usage events are idempotent by request id: were it the client's, a client could replay one
    id and be metered once for many calls."""
    headers = [*headers_for(fuzzed.key), (b"x-request-id", b"chosen-by-client"), (b"x-amzn-requestid", b"chosen")]
    replies = [run(fuzzed.app, "POST", CHAT, headers, json.dumps(VALID).encode()) for _ in range(2)]
    ids = [r.request_id for r in replies]
    assert all(r.status == 200 for r in replies) and len(set(ids)) == 2 and "chosen-by-client" not in ids
    key_id = fuzzed.key.split("_")[1]
    recorded = {e.request_id for e in fuzzed.container.store.usage_events(key_id)}
    assert set(ids) <= recorded
