"""The Responses door (`POST /v1/responses`) through `chatgw serve`, read by the openai SDK with its
own types: buffered answers and every stream event parse as the SDK's models, tool calls arrive as
`function_call` items, errors as the SDK's exceptions. Upstreams: the echo model and the fake OpenAI
chat server (the door translates)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.model import ANSWER
from tests.support.polling import eventually
from tests.support.sdk import openai_client
from tests.support.served import PEPPER, Served, away_from_a_minute_boundary, serve

EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, _openai_server: FakeOpenAI) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("responses")
    env = {**os.environ, "CHATGW_KEY_PEPPER": PEPPER, "CHATGW_LOG_LEVEL": "INFO", "FAKE_UPSTREAM_KEY": "sk-fake"}
    models = {"echo": {"backend": "echo"}, "m": _openai_server.catalog_entry("m")}
    env["CHATGW_MODELS"] = json.dumps(models)
    for name in ("CHATGW_KEYS_TABLE", "CHATGW_USAGE_TABLE"):
        env.pop(name, None)
    with serve(["--state-dir", str(tmp_path / "state")], env, tmp_path) as served_:
        yield served_


@pytest.fixture(scope="module")
def key(served: Served) -> str:
    return str(served.cli("keys", "create", "--name", "responses", "--models", "echo", "m")["key"])


def client(served: Served, key: str, prefix: str = "/v1") -> openai.OpenAI:
    return openai_client(served.base_url + prefix, key, max_retries=0, timeout=30)


def completion_lines(served: Served, key_id: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in served.log.read_text().splitlines() if '"completion"' in line]
    return [line for line in lines if line.get("key_id") == key_id]


def events_of(stream: Any) -> list[Any]:
    events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


def test_buffered_echo_parses_as_the_sdks_response(served: Served, key: str) -> None:
    answer = client(served, key).responses.create(model="echo", input="hello there gateway", max_output_tokens=50)
    assert isinstance(answer, Response)
    assert answer.id.startswith("resp_") and answer.status == "completed" and answer.store is False
    assert answer.output_text == "hello there gateway"
    assert answer.max_output_tokens == 50
    assert answer.usage is not None and answer.usage.output_tokens == 3
    assert answer.usage.total_tokens == answer.usage.input_tokens + 3
    Response.model_validate(answer.model_dump(mode="json"), strict=True)


def test_usage_reaches_the_ledger_and_the_completion_line(served: Served, _openai_server: FakeOpenAI) -> None:
    from tests.fakes.fake_openai import Script

    created = served.cli("keys", "create", "--name", "ledger", "--models", "m")
    _openai_server.reset()
    _openai_server.then(Script(cached_tokens=2))
    with client(served, str(created["key"])).responses.stream(model="m", input="count these words") as stream:
        usage = stream.get_final_response().usage
    assert usage is not None and usage.input_tokens_details.cached_tokens == 2
    rows = eventually(lambda: served.cli("usage", "--key", created["key_id"]))
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (usage.input_tokens, usage.output_tokens)
    (mine,) = eventually(lambda: completion_lines(served, created["key_id"]))
    assert mine["path"] == "/v1/responses" and mine["streamed"] and mine["outcome"] == "ok"
    assert mine["cached_tokens"] == 2


def test_v2_prefix_and_instructions(served: Served, key: str) -> None:
    answer = client(served, key, "/v2/llms").responses.create(
        model="echo", instructions="be brief", input=[{"role": "user", "content": "from the second door"}]
    )
    assert answer.output_text == "from the second door" and answer.instructions == "be brief"


def test_stream_echo_every_event_parses(served: Served, key: str) -> None:
    with client(served, key).responses.create(model="echo", input="one two three four", stream=True) as stream:
        events = events_of(stream)
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "one two three four"
    done = events[-1].response
    assert done.output_text == text and done.usage is not None and done.usage.output_tokens == 4


def test_stream_helper_final_response(served: Served, key: str) -> None:
    with client(served, key).responses.stream(model="m", input="tell me something") as stream:
        final = stream.get_final_response()
    assert final.output_text == ANSWER and final.status == "completed"


def test_truncated_answer_is_incomplete(served: Served, key: str) -> None:
    answer = client(served, key).responses.create(model="echo", input="a b c d e f", max_output_tokens=2)
    assert answer.status == "incomplete"
    assert answer.incomplete_details is not None and answer.incomplete_details.reason == "max_output_tokens"
    assert answer.output_text == "a b"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip_through_the_chat_upstream(
    served: Served, key: str, stream: bool, _openai_server: FakeOpenAI
) -> None:
    gw = client(served, key)
    first = _answer(gw, stream, model="m", input="Paris", tools=[WEATHER, {"type": "web_search"}])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"query": "Paris"}
    upstream = _openai_server.requests[-1].body
    assert [t["function"]["name"] for t in upstream["tools"]] == ["get_weather"]  # the hosted tool dropped
    dropped = [json.loads(line) for line in served.log.read_text().splitlines() if "hosted_tools_dropped" in line]
    assert dropped and dropped[-1]["tools"] == ["web_search"]  # and the log says which
    history: list[Any] = [
        {"role": "user", "content": "Paris"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    second = _answer(gw, stream, model="m", input=history, tools=[WEATHER])
    assert second.output_text == "The tool said: sunny"
    sent = _openai_server.requests[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.call_id and sent[2] == {
        "role": "tool",
        "tool_call_id": call.call_id,
        "content": "sunny",
    }


def _answer(gw: openai.OpenAI, stream: bool, **kwargs: Any) -> Response:
    if not stream:
        return gw.responses.create(**kwargs)
    with gw.responses.create(stream=True, **kwargs) as events:
        seen = events_of(events)
    kinds = [e.type for e in seen]
    if any(k == "response.function_call_arguments.delta" for k in kinds):
        assert "response.function_call_arguments.done" in kinds
    return seen[-1].response  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"tools": [{"type": "web_search"}], "tool_choice": "required"}, "tool_choice"),
        ({"temperature": 7}, "temperature"),
        ({"api_key": "sk-x"}, "api_key"),
    ],
)
def test_refusals_are_400s_the_sdk_parses(served: Served, key: str, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(served, key).responses.create(model="echo", input=extra.pop("input", "hi"), extra_body=extra)
    assert refused.value.param == param
    if param in ("previous_response_id", "conversation", "input[0]"):
        assert "keeps no" in refused.value.message


def test_unknown_model_and_bad_key(served: Served, key: str) -> None:
    with pytest.raises(openai.NotFoundError):
        client(served, key).responses.create(model="nope", input="hi")
    with pytest.raises(openai.AuthenticationError):
        client(served, "sk-not-a-key").responses.create(model="echo", input="hi")


def test_a_key_over_its_rate_is_a_429_with_retry_after(served: Served) -> None:
    limited = str(served.cli("keys", "create", "--name", "slow", "--models", "echo", "--rpm", "1")["key"])
    away_from_a_minute_boundary()
    gw = client(served, limited)
    gw.responses.create(model="echo", input="first")
    with pytest.raises(openai.RateLimitError) as refused:
        gw.responses.create(model="echo", input="second")
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert refused.value.code == "rate_limit_exceeded"


def test_an_upstream_refusal_before_the_stream_is_an_http_error(
    served: Served, key: str, _openai_server: FakeOpenAI
) -> None:
    """Before the first byte an error is an ordinary HTTP error in OpenAI's envelope, streamed or not."""
    from tests.fakes.fake_openai import Script

    _openai_server.reset()
    limited = {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}
    _openai_server.then(Script(status=429, headers={"retry-after": "3"}, body=limited))
    with pytest.raises(openai.RateLimitError) as refused:
        client(served, key).responses.create(model="m", input="hello", stream=True)
    assert refused.value.response.headers["content-type"] == "application/json"
    assert refused.value.response.headers["retry-after"] == "3"


def test_error_after_the_first_byte_is_response_failed(served: Served, key: str, _openai_server: FakeOpenAI) -> None:
    from tests.fakes.fake_openai import Script

    _openai_server.reset()
    _openai_server.then(Script(drop_after_chunks=2))
    with client(served, key).responses.create(model="m", input="hello", stream=True) as stream:
        events = events_of(stream)
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None


def test_raw_frames_name_their_event(served: Served, key: str) -> None:
    body = {"model": "echo", "input": "raw frames", "stream": True}
    r = httpx.post(served.base_url + "/v1/responses", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)
    frames = [f for f in r.text.split("\n\n") if f.strip() and not f.startswith(":")]
    for f in frames:
        event_line, data_line = f.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}"
        EVENT.validate_python(data, strict=True)
    assert json.loads(frames[-1].split("\n")[1].removeprefix("data: "))["type"] == "response.completed"
