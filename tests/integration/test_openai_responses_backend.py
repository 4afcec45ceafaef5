"""The openai backend with `api: responses` against the fake Responses server: a body of the same
dialect goes through unchanged (encrypted reasoning, hosted tools, unknown fields), a chat-door
conversation is translated, answers and stream events map to the conversation model, errors map to
the gateway's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from chatgw.backends import CatalogError, build_backend
from chatgw.backends.base import BackendDeps, ChatBackend
from chatgw.conversation import Answer, Conversation, Event, Message, Original, Reasoning, Text, ToolCall
from chatgw.deadline import Deadline
from chatgw.errors import ChatgwError, UpstreamError, UpstreamRateLimited, UpstreamRejected
from tests.fakes.fake_responses import ENCRYPTED, SUMMARY, FakeResponses, Script
from tests.support.backend_calls import answer_text, chat, collect, stops, streamed_text, tool_deltas

T = TypeVar("T")
TOOLS = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "fetch", "description": "Fetch a page."}},
]


def run(server: FakeResponses, scenario: Callable[[ChatBackend], Coroutine[Any, Any, T]]) -> T:
    async def main() -> T:
        deps = BackendDeps()
        options = {"base_url": server.base_url, "upstream_model": "gpt-up", "api": "responses", "max_retries": 0}
        backend = build_backend("openai", "public", options, deps)
        try:
            return await scenario(backend)
        finally:
            await deps.aclose()

    return asyncio.run(main())


def buffered(server: FakeResponses, request: Conversation) -> Answer:
    async def scenario(backend: ChatBackend) -> Answer:
        backend.check(request)
        return await backend.complete(request, Deadline.in_seconds(20))

    return run(server, scenario)


def streamed(server: FakeResponses, request: Conversation) -> tuple[list[Event], ChatgwError | None]:
    async def scenario(backend: ChatBackend) -> tuple[list[Event], ChatgwError | None]:
        backend.check(request)
        return await collect(backend.stream(request, Deadline.in_seconds(20)))

    return run(server, scenario)


# ---- the same dialect: the client's body as it came ---------------------------------------

CODEX_LIKE: dict[str, Any] = {
    "model": "public",
    "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be brief"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first question"}]},
        {"type": "reasoning", "summary": [], "encrypted_content": "gAAAAB-client-held-reasoning=="},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "first answer"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second question"}]},
    ],
    "tools": [{"type": "web_search", "external_web_access": False}],
    "include": ["reasoning.encrypted_content"],
    "reasoning": {"effort": "medium", "summary": "auto"},
    "prompt_cache_key": "thread-1",
    "client_metadata": {"anything": ["the", "gateway", "does", "not", "know"]},
    "max_output_tokens": 4000,
    "store": True,
}


def same_dialect(stream: bool) -> Conversation:
    raw = json.dumps({**CODEX_LIKE, "stream": stream}).encode()
    messages = (Message("user", (Text("second question"),)),)
    return Conversation(
        "public", messages, max_output_tokens=50, stream=stream, original=Original("openai_responses", raw)
    )


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_a_body_of_the_same_dialect_reaches_the_upstream_unchanged_but_model_cap_and_store(
    fake_responses: FakeResponses, stream: bool
) -> None:
    fake_responses.then(Script(reasoning=True))
    if stream:
        events, error = streamed(fake_responses, same_dialect(True))
        assert error is None and stops(events) == ["end"]
    else:
        buffered(fake_responses, same_dialect(False))
    (seen,) = fake_responses.requests
    expected = {**CODEX_LIKE, "model": "gpt-up", "max_output_tokens": 50, "store": False}
    if stream:
        expected["stream"] = True
    assert seen.body == expected
    assert seen.path == "/v1/responses"


def test_encrypted_reasoning_comes_back_unchanged_in_the_native_answer_and_the_reasoning_part(
    fake_responses: FakeResponses,
) -> None:
    fake_responses.then(Script(reasoning=True, web_search=True))
    answer = buffered(fake_responses, same_dialect(False))
    assert answer.native is not None and answer.native.dialect == "openai_responses"
    assert answer.native.body["output"][0]["encrypted_content"] == ENCRYPTED
    assert answer.native.body["id"] == "resp_fake0001"
    # a hosted tool's item has no part; a door of the dialect has it natively
    assert [item["type"] for item in answer.native.body["output"]] == ["reasoning", "web_search_call", "message"]
    (reasoning, text) = answer.outputs[0].parts
    assert reasoning == Reasoning(SUMMARY, encrypted=ENCRYPTED, dialect="openai_responses")
    assert isinstance(text, Text) and text.text.startswith("Hello from the fake model")


def test_every_stream_event_reaches_a_door_of_the_dialect_as_the_upstream_sent_it(
    fake_responses: FakeResponses,
) -> None:
    fake_responses.then(Script(reasoning=True))
    events, error = streamed(fake_responses, same_dialect(True))
    assert error is None
    assert all(e.dialect == "openai_responses" and e.native is not None for e in events)
    natives = [e.native for e in events if e.native is not None]
    assert [n["sequence_number"] for n in natives] == list(range(len(natives)))
    assert natives[0]["type"] == "response.created" and natives[-1]["type"] == "response.completed"
    done = [n["item"] for n in natives if n["type"] == "response.output_item.done"]
    assert done[0]["encrypted_content"] == ENCRYPTED
    assert "".join(d.reasoning for e in events for d in e.deltas) == SUMMARY


# ---- another door: the conversation translated ----------------------------------------------


def test_a_chat_conversation_is_translated_to_a_responses_body(fake_responses: FakeResponses) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/i.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    request = chat(
        "public",
        "unused",
        messages=messages,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "lookup"}},
        parallel_tool_calls=False,
        temperature=0.2,
        top_p=0.9,
        max_completion_tokens=64,
        reasoning_effort="low",
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": True}},
        user="u-1",
        verbosity="low",
        store=False,
    )
    buffered(fake_responses, request)
    (seen,) = fake_responses.requests
    assert seen.body == {
        "model": "gpt-up",
        "instructions": "You are terse.",
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://x/i.png", "detail": "auto"},
                ],
            },
            {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        ],
        "tools": [
            {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}, "strict": False},
            {
                "type": "function",
                "name": "fetch",
                "parameters": {"type": "object", "properties": {}},
                "strict": False,
                "description": "Fetch a page.",
            },
        ],
        "tool_choice": {"type": "function", "name": "lookup"},
        "parallel_tool_calls": False,
        "temperature": 0.2,
        "top_p": 0.9,
        "max_output_tokens": 64,
        "reasoning": {"effort": "low"},
        "text": {"format": {"type": "json_schema", "name": "n", "schema": schema, "strict": True}, "verbosity": "low"},
        "user": "u-1",
        "store": False,
    }


def test_reasoning_a_responses_model_made_goes_back_to_it_encrypted() -> None:
    from chatgw.backends._responses_dialect import translate

    turn = (
        Reasoning("thought", encrypted="gAAAAB-x", dialect="openai_responses"),
        Reasoning("other", signature="s", dialect="anthropic"),
        Text("hi"),
    )
    body = translate(Conversation("m", (Message("user", (Text("q"),)), Message("assistant", turn))))
    assert body["input"][1:] == [
        {
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "thought"}],
            "encrypted_content": "gAAAAB-x",
        },
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi", "annotations": []}]},
    ]


def test_text_usage_with_cached_and_reasoning_tokens(fake_responses: FakeResponses) -> None:
    fake_responses.then(Script(cached_tokens=2, reasoning_tokens=7), Script(cached_tokens=2, reasoning_tokens=7))
    answer = buffered(fake_responses, chat("public", "say something please"))
    assert answer.usage is not None
    assert (answer.usage.input, answer.usage.cache_read, answer.usage.reasoning) == (3, 2, 7)
    assert answer.usage.output == len(answer_text(answer).split()) + 7
    events, error = streamed(fake_responses, chat("public", "say something please", stream=True))
    assert error is None and streamed_text(events) == answer_text(answer)
    (usage,) = [e.usage for e in events if e.usage is not None]
    assert usage == answer.usage


def test_parallel_function_calls_each_with_its_own_index(fake_responses: FakeResponses) -> None:
    fake_responses.then(Script(parallel_calls=2), Script(parallel_calls=2))
    answer = buffered(fake_responses, chat("public", "find it", tools=TOOLS))
    assert answer.outputs[0].stop == "tool_use"
    calls = [p for p in answer.outputs[0].parts if isinstance(p, ToolCall)]
    assert [(c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_fake_1", "lookup", {"query": "find it"}),
        ("call_fake_2", "fetch", {"query": "find it"}),
    ]
    events, error = streamed(fake_responses, chat("public", "find it", tools=TOOLS, stream=True))
    assert error is None and stops(events) == ["tool_use"]
    deltas = tool_deltas(events)
    assert [(d.index, d.id, d.name) for d in deltas if d.id] == [
        (0, "call_fake_1", "lookup"),
        (1, "call_fake_2", "fetch"),
    ]
    for index, call in enumerate(calls):
        assert "".join(d.arguments for d in deltas if d.index == index) == call.arguments


def test_a_content_filter_stop_is_kept(fake_responses: FakeResponses) -> None:
    fake_responses.then(Script(incomplete="content_filter"), Script(incomplete="content_filter"))
    answer = buffered(fake_responses, chat("public", "hm"))
    assert (answer.outputs[0].stop, answer.outputs[0].native_stop) == ("content_filter", "content_filter")
    events, _ = streamed(fake_responses, chat("public", "hm", stream=True))
    assert stops(events) == ["content_filter"]


def test_settings_a_responses_body_has_no_place_for_are_refused_by_name() -> None:
    from chatgw.backends.openai_responses import from_options

    backend = from_options("public", {"base_url": "http://127.0.0.1:9/v1", "api": "responses"}, BackendDeps())
    for params in ({"stop": ["x"]}, {"seed": 1}, {"n": 2}, {"logprobs": True}, {"presence_penalty": 0.1}):
        with pytest.raises(ChatgwError) as caught:
            backend.check(chat("public", "q", **params))
        assert f"`{next(iter(params))}`" in caught.value.message
    backend.check(chat("public", "q", temperature=0.1, max_tokens=5, user="u"))
    audio = [{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]
    with pytest.raises(ChatgwError) as caught:
        backend.check(chat("public", "q", messages=[{"role": "user", "content": audio}]))
    assert "`messages`" in caught.value.message and "input_audio" in caught.value.message


# ---- errors ----------------------------------------------------------------------------------


def test_upstream_statuses_map_to_the_gateways_errors(fake_responses: FakeResponses) -> None:
    too_many = {"error": {"message": "Slow down.", "type": "requests", "code": "rate_limit_exceeded"}}
    bad = {"error": {"message": "Unknown parameter: 'x'.", "param": "x", "code": "unknown_parameter"}}
    fake_responses.then(Script(status=429, body=too_many, headers={"retry-after": "3"}), Script(status=400, body=bad))
    with pytest.raises(UpstreamRateLimited) as limited:
        buffered(fake_responses, chat("public", "q"))
    assert limited.value.retry_after == 3 and "Slow down." in limited.value.message
    with pytest.raises(UpstreamRejected) as rejected:
        buffered(fake_responses, chat("public", "q"))
    assert rejected.value.param == "x" and "Unknown parameter" in rejected.value.message


def test_a_failed_response_is_an_error_and_a_rate_limit_keeps_its_kind(fake_responses: FakeResponses) -> None:
    limited = ("rate_limit_exceeded", "Rate limit reached. Please try again in 2s.")
    fake_responses.then(Script(failed=limited), Script(failed=("server_error", "boom")), Script(failed=limited))
    events, error = streamed(fake_responses, chat("public", "q", stream=True))
    assert streamed_text(events) == "Hello" and isinstance(error, UpstreamRateLimited)
    assert error.retry_after == 2
    events, error = streamed(fake_responses, chat("public", "q", stream=True))
    assert type(error) is UpstreamError and "(server_error): boom" in error.message
    with pytest.raises(UpstreamRateLimited):
        buffered(fake_responses, chat("public", "q"))
    too_long = ("context_length_exceeded", "Your input exceeds the context window of this model.")
    fake_responses.then(Script(failed=too_long))
    with pytest.raises(UpstreamRejected, match="exceeds the context window"):
        buffered(fake_responses, chat("public", "q"))
    fake_responses.then(Script(body={"object": "response", "status": "failed", "error": None, "output": []}))
    with pytest.raises(UpstreamError, match="the response failed"):
        buffered(fake_responses, chat("public", "q"))


def test_an_error_event_and_a_stream_cut_before_completion_are_errors(fake_responses: FakeResponses) -> None:
    fake_responses.then(Script(error_event=("server_error", "the model crashed")), Script(end_after_events=6))
    events, error = streamed(fake_responses, chat("public", "q", stream=True))
    assert isinstance(error, UpstreamError) and "the model crashed" in error.message
    events, error = streamed(fake_responses, chat("public", "q", stream=True))
    assert streamed_text(events) and stops(events) == []
    assert isinstance(error, UpstreamError) and "without response.completed" in error.message


def test_the_catalog_checks_the_api_option() -> None:
    with pytest.raises(CatalogError, match="field 'api' must be one of chat, responses"):
        build_backend("openai", "m", {"base_url": "http://127.0.0.1:9/v1", "api": "assistants"}, BackendDeps())
    with pytest.raises(CatalogError, match="field 'token_param' is not an option"):
        build_backend(
            "openai",
            "m",
            {"base_url": "http://127.0.0.1:9/v1", "api": "responses", "token_param": "max_tokens"},
            BackendDeps(),
        )
