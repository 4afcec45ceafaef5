"""The request contract: OpenAI's ranges and shapes, unknown and routing fields refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatgw.api.openai_chat.validation import parse_chat_request
from chatgw.errors import InvalidRequest, UnknownParameter

USER = [{"role": "user", "content": "hi"}]


def parse(body: Any) -> Any:
    return parse_chat_request(json.dumps(body).encode() if not isinstance(body, bytes) else body)


def refused(body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse(body)
    return info.value


GOOD = [
    {"model": "m", "messages": USER},
    {"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "developer", "content": "d"}, *USER]},
    {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                    {"type": "file", "file": {"file_id": "file-1"}},
                ],
            }
        ],
    },
    {
        "model": "m",
        "messages": [
            *USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
    },
    {
        "model": "m",
        "messages": USER,
        "temperature": 0,
        "top_p": 1,
        "n": 2,
        "stop": ["a", "b", "c", "d"],
        "max_tokens": 1,
        "max_completion_tokens": 5,
        "presence_penalty": -2,
        "frequency_penalty": 2,
        "logit_bias": {"50256": -100},
        "seed": 7,
        "user": "u",
        "logprobs": True,
        "top_logprobs": 20,
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
        "metadata": {"team": "a"},
        "store": False,
    },
    {"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": True}},
    {
        "model": "m",
        "messages": USER,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"api_key": {"type": "string"}}}},
        },
    },
    {
        "model": "m",
        "messages": USER,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"api_key": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    },
    {"model": "m", "messages": USER, "temperature": 2, "stop": "x"},
]


@pytest.mark.parametrize("body", GOOD)
def test_valid_requests_are_accepted(body: dict[str, Any]) -> None:
    request = parse(body)
    assert request.model == "m"
    assert request.given() == set(body)


BAD = [
    ({"messages": USER}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0]"),
    ({"model": "m", "messages": [{"content": "x"}]}, "messages[0]"),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "assistant", "content": None}]}, "messages[0]"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"model": "m", "messages": USER, "temperature": 2.5}, "temperature"),
    ({"model": "m", "messages": USER, "temperature": "0.5"}, "temperature"),
    ({"model": "m", "messages": USER, "top_p": 1.1}, "top_p"),
    ({"model": "m", "messages": USER, "n": 0}, "n"),
    ({"model": "m", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": USER, "max_completion_tokens": -1}, "max_completion_tokens"),
    ({"model": "m", "messages": USER, "presence_penalty": 3}, "presence_penalty"),
    ({"model": "m", "messages": USER, "frequency_penalty": -2.1}, "frequency_penalty"),
    ({"model": "m", "messages": USER, "logit_bias": {"1": 101}}, "logit_bias.1"),
    ({"model": "m", "messages": USER, "top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ({"model": "m", "messages": USER, "stream": "yes"}, "stream"),
    ({"model": "m", "messages": USER, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "m", "messages": USER, "top_logprobs": 2}, "top_logprobs"),
    ({"model": "m", "messages": USER, "stop": ["a", ""]}, "stop"),
    ({"model": "m", "messages": USER, "response_format": {"type": "xml"}}, "response_format"),
    ({"model": "m", "messages": USER, "tool_choice": "maybe", "tools": []}, "tool_choice"),
    (
        {"model": "m", "messages": USER, "tools": [{"type": "function", "function": {"name": "bad name"}}]},
        "tools[0].function.name",
    ),
    ({"model": "m", "messages": USER, "reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"model": "m", "messages": USER, "metadata": {"api_key": "sk-x"}}, "metadata"),
    ({"model": "", "messages": USER}, "model"),
]


@pytest.mark.parametrize(("body", "param"), BAD)
def test_invalid_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    error = refused(body)
    assert error.status == 400
    assert param in error.field_errors
    assert error.message


@pytest.mark.parametrize("name", ["frobnicate", "api_base", "base_url", "api_key", "extra_headers", "functions"])
def test_unknown_top_level_fields_are_refused_by_name(name: str) -> None:
    error = refused({"model": "m", "messages": USER, name: "x"})
    assert isinstance(error, UnknownParameter)
    assert error.param == name
    assert name in error.message


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [{"role": "user", "content": "hi", "api_key": "k"}]},
        {"model": "m", "messages": USER, "stream": True, "stream_options": {"base_url": "http://evil"}},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a", "headers": {}}]}]},
    ],
)
def test_nested_routing_fields_are_refused(body: dict[str, Any]) -> None:
    error = refused(body)
    assert isinstance(error, UnknownParameter)
    assert "not allowed" in error.message


@pytest.mark.parametrize("raw", [b"", b"   ", b"{", b"[]", b"null", b'"text"', b"\xff\xfe", b"{'model': 1}"])
def test_bodies_that_are_not_json_objects(raw: bytes) -> None:
    error = refused(raw)
    assert error.status == 400
    assert error.field_errors


def test_token_cap_prefers_max_completion_tokens() -> None:
    request = parse({"model": "m", "messages": USER, "max_tokens": 9, "max_completion_tokens": 3})
    assert request.token_cap == 3


def test_the_request_validator_is_built_at_import_not_on_the_first_request() -> None:
    # The parts of a request defer their own validators (a cheaper cold start); the request model
    # itself must not: its build would move onto the first request. A fresh interpreter, no request.
    import subprocess
    import sys

    code = (
        "import chatgw.api.openai_chat.wire as w; "
        "print(w.ChatRequest.__pydantic_complete__, w.TextPart.__pydantic_complete__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "False"]
