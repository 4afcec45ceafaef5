"""The Responses door's stream grammar and answer object, read with the openai SDK's own types:
reasoning, text and parallel tool calls in order, custom tools as free text, encrypted reasoning
only when asked for, an upstream of the same dialect forwarded and renumbered, failures with the
codes Codex acts on."""

from __future__ import annotations

import json
from typing import Any

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from chatgw.api.openai_responses.grammar import ResponsesGrammar
from chatgw.api.openai_responses.outbound import response_body, stamp_for
from chatgw.api.openai_responses.wire import ResponsesRequest
from chatgw.conversation import Answer, Delta, Event, Native, Output, Reasoning, Text, ToolDelta, Usage
from chatgw.errors import RateLimited, UpstreamError

EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
TOOLS = [
    {"type": "function", "name": "lookup", "parameters": {"type": "object"}},
    {"type": "custom", "name": "apply_patch", "description": "a patch"},
]
USAGE = Usage(input=30, output=12, cache_read=10, cache_write=2, reasoning=5)


def grammar(**extra: Any) -> ResponsesGrammar:
    body = {"model": "m", "input": "hi", "tools": TOOLS, **extra}
    request = ResponsesRequest.model_validate_json(json.dumps(body))
    return ResponsesGrammar(stamp_for(request, body, response_id="resp_abc", created_at=1))


def parse(data: bytes, sdk_types: bool = True) -> list[Any]:
    events = []
    for block in data.decode().split("\n\n"):
        if not block:
            continue
        event_line, data_line = block.split("\n")
        payload = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {payload['type']}"
        events.append(EVENT.validate_python(payload) if sdk_types else payload)
    numbers = [e.sequence_number if sdk_types else e["sequence_number"] for e in events]
    assert numbers == list(range(len(events)))
    return events


def test_reasoning_text_and_two_calls_are_items_in_order() -> None:
    g = grammar()
    out = g.event(Event([Delta(reasoning="thinking ")]))
    out += g.event(Event([Delta(reasoning="hard")]))
    out += g.event(Event([Delta(text="Let me ")]))
    out += g.event(Event([Delta(text="look.")]))
    out += g.event(Event([Delta(tool=ToolDelta(0, "call_1", "lookup", '{"q":'))]))
    out += g.event(Event([Delta(tool=ToolDelta(0, arguments='"a"}'))]))
    out += g.event(Event([Delta(tool=ToolDelta(1, "call_2", "lookup", '{"q":"b"}'))]))
    out += g.event(Event([Delta(stop="tool_use")]))
    out += g.end(lambda: USAGE)
    events = parse(out)
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [i.type for i in done] == ["reasoning", "message", "function_call", "function_call"]
    assert done[0].summary[0].text == "thinking hard"
    assert done[1].content[0].text == "Let me look."
    assert (done[2].call_id, done[2].arguments) == ("call_1", '{"q":"a"}')
    assert (done[3].call_id, done[3].arguments) == ("call_2", '{"q":"b"}')
    final = events[-1]
    assert final.type == "response.completed"
    assert [i.id for i in final.response.output] == [i.id for i in done]
    usage = final.response.usage
    assert usage.input_tokens == 30 and usage.input_tokens_details.cached_tokens == 10
    assert usage.output_tokens_details.reasoning_tokens == 5 and usage.total_tokens == 42


def test_a_custom_tool_call_is_free_text() -> None:
    g = grammar()
    out = g.event(Event([Delta(tool=ToolDelta(0, "call_p", "apply_patch", '{"input": "*** Begin'))]))
    out += g.event(Event([Delta(tool=ToolDelta(0, arguments=' Patch"}'))]))
    out += g.end(lambda: USAGE)
    events = parse(out)
    (item,) = [e.item for e in events if e.type == "response.output_item.done"]
    assert item.type == "custom_tool_call" and item.input == "*** Begin Patch"
    assert [e.input for e in events if e.type == "response.custom_tool_call_input.done"] == ["*** Begin Patch"]


def test_a_refusal_is_its_own_content_part() -> None:
    g = grammar()
    out = g.event(Event([Delta(text="Sorry, ")])) + g.event(Event([Delta(refusal="I can't help with that.")]))
    events = parse(out + g.end(lambda: USAGE))
    assert "response.refusal.done" in [e.type for e in events]
    (item,) = [e.item for e in events if e.type == "response.output_item.done"]
    assert [(p.type, getattr(p, "text", None) or p.refusal) for p in item.content] == [
        ("output_text", "Sorry, "),
        ("refusal", "I can't help with that."),
    ]


def test_a_cut_answer_is_incomplete() -> None:
    g = grammar()
    out = g.event(Event([Delta(text="a b")])) + g.event(Event([Delta(stop="length")])) + g.end(lambda: USAGE)
    final = parse(out)[-1]
    assert final.type == "response.incomplete"
    assert final.response.incomplete_details.reason == "max_output_tokens"


def test_failures_carry_the_codes_codex_reads() -> None:
    g = grammar()
    out = g.event(Event([Delta(text="partial")]))
    out += g.error(RateLimited("Too many requests for this key.", retry_after=7), "rid")
    failed = parse(out)[-1]
    assert failed.type == "response.failed"
    assert failed.response.error.code == "rate_limit_exceeded"
    assert "try again in 7s" in failed.response.error.message
    # a code Codex reads that the SDK's list lacks (the SDK itself does not check what it streams)
    spent = RateLimited("Budget spent.", retry_after=60, code="insufficient_quota")
    quota = parse(grammar().error(spent, "r"), sdk_types=False)
    assert quota[-1]["response"]["error"]["code"] == "insufficient_quota"
    upstream = parse(grammar().error(UpstreamError("The model backend failed."), "r"))
    assert [e.type for e in upstream] == ["response.created", "response.in_progress", "response.failed"]
    assert upstream[-1].response.error.code == "server_error"


def test_native_events_are_forwarded_restamped_and_renumbered() -> None:
    g = grammar()
    started = {**_upstream_response(), "status": "in_progress"}
    upstream = [
        {"type": "response.created", "sequence_number": 40, "response": started},
        {"type": "response.output_text.delta", "sequence_number": 41, "item_id": "msg_u", "output_index": 0,
         "content_index": 0, "delta": "hi", "logprobs": []},
        {"type": "response.completed", "sequence_number": 42, "response": _upstream_response()},
    ]  # fmt: skip
    out = b"".join(g.event(Event(native=n, dialect="openai_responses")) for n in upstream)
    out += g.end(lambda: USAGE)
    events = parse(out)
    assert [e.type for e in events] == ["response.created", "response.output_text.delta", "response.completed"]
    assert events[-1].response.id == "resp_abc" and events[-1].response.model == "m"
    assert events[-1].response.output[0].encrypted_content == "opaque"  # the upstream's, untouched


def _upstream_response() -> dict[str, Any]:
    return {
        "id": "resp_upstream",
        "object": "response",
        "created_at": 5,
        "status": "completed",
        "model": "up-m",
        "output": [{"id": "rs_u", "type": "reasoning", "summary": [], "encrypted_content": "opaque"}],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 3,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 1,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 4,
        },
    }


def test_encrypted_reasoning_only_when_included() -> None:
    answer = Answer(
        [Output([Reasoning("why", encrypted="enc", dialect="openai_responses"), Text("yes")], "end")], USAGE
    )
    for include, expected in (([], None), (["reasoning.encrypted_content"], "enc")):
        body = {"model": "m", "input": "hi", "include": include}
        request = ResponsesRequest.model_validate_json(json.dumps(body))
        stamp = stamp_for(request, body, response_id="resp_x", created_at=1)
        response = Response.model_validate(response_body(answer, stamp, USAGE))
        assert response.output[0].type == "reasoning" and response.output[0].encrypted_content == expected
        assert response.output_text == "yes" and response.store is False


def test_a_native_answer_is_sent_as_it_came_restamped() -> None:
    body = {"model": "m", "input": "hi"}
    request = ResponsesRequest.model_validate_json(json.dumps(body))
    stamp = stamp_for(request, body, response_id="resp_x", created_at=1)
    answer = Answer([], USAGE, native=Native("openai_responses", _upstream_response()))
    response = Response.model_validate(response_body(answer, stamp, USAGE))
    assert response.id == "resp_x" and response.model == "m"
    assert response.output[0].encrypted_content == "opaque"
    assert response.usage is not None and response.usage.input_tokens_details.cache_write_tokens == 0
