"""The Messages door's stream grammar, event by event: what a client of Anthropic's API would parse."""

from __future__ import annotations

import json
from typing import Any

import pydantic
from anthropic.types import RawMessageStreamEvent

from chatgw.api.anthropic_messages.stream import PING, MessagesGrammar
from chatgw.conversation import Delta, Event, ToolDelta, Usage
from chatgw.errors import UpstreamError, UpstreamOverloaded

EVENTS: Any = pydantic.TypeAdapter(RawMessageStreamEvent)


def parse(data: bytes) -> list[dict[str, Any]]:
    out = []
    for frame in data.decode().split("\n\n"):
        if frame:
            name, line = frame.split("\n")
            event = json.loads(line.removeprefix("data: "))
            assert name == f"event: {event['type']}"
            if event["type"] not in ("ping", "error"):
                EVENTS.validate_python(event)
            out.append(event)
    return out


def grammar() -> MessagesGrammar:
    return MessagesGrammar(message_id="msg_1", model="asked", input_tokens=7)


CACHED = Usage(10, 5, cache_read=4, cache_write=2)


def run(events: list[Event], usage: Usage = CACHED) -> list[dict[str, Any]]:
    g = grammar()
    return parse(b"".join(g.event(e) for e in events) + g.end(lambda: usage))


def test_blocks_change_with_the_kind_and_indexes_have_no_gaps() -> None:
    events = run(
        [
            Event([Delta()]),  # an empty opening delta makes no block
            Event([Delta(reasoning="hmm ")]),
            Event([Delta(reasoning="so", signature="sig==")]),
            Event([Delta(text="Hi")]),
            Event([Delta(text=" there")]),
            Event([Delta(stop="end")]),
        ]
    )
    kinds = [(e["type"], e.get("index"), (e.get("delta") or e.get("content_block") or {}).get("type")) for e in events]
    assert kinds == [
        ("message_start", None, None),
        ("content_block_start", 0, "thinking"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("message_delta", None, None),
        ("message_stop", None, None),
    ]
    assert events[0]["message"]["id"] == "msg_1" and events[0]["message"]["model"] == "asked"
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert events[-2]["usage"] == {
        "input_tokens": 4,  # without the cache's 4 read and 2 written
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 4,
        "output_tokens": 5,
    }


def test_tool_calls_of_the_chat_dialect_are_one_block_each() -> None:
    events = run(
        [
            Event([Delta(text="Let me look.")]),
            Event([Delta(tool=ToolDelta(0, id="call_a", name="lookup"))]),
            Event([Delta(tool=ToolDelta(0, arguments='{"q":'))]),
            Event([Delta(tool=ToolDelta(0, arguments='"x"}'))]),
            Event([Delta(tool=ToolDelta(1, id="call_b", name="weather", arguments="{}"))]),
            Event([Delta(stop="tool_use")]),
        ]
    )
    starts = [(e["index"], e["content_block"]) for e in events if e["type"] == "content_block_start"]
    assert starts == [
        (0, {"type": "text", "text": ""}),
        (1, {"type": "tool_use", "id": "call_a", "name": "lookup", "input": {}}),
        (2, {"type": "tool_use", "id": "call_b", "name": "weather", "input": {}}),
    ]
    pieces = [e["delta"]["partial_json"] for e in events if e.get("delta", {}).get("type") == "input_json_delta"]
    assert pieces == ['{"q":', '"x"}', "{}"]
    assert [e["index"] for e in events if e["type"] == "content_block_stop"] == [0, 1, 2]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_an_empty_answer_still_has_a_start_and_a_stop() -> None:
    events = run([], Usage(3, 0))
    assert [e["type"] for e in events] == ["message_start", "message_delta", "message_stop"]


def test_native_events_are_forwarded_with_the_start_restamped() -> None:
    upstream = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_up",
                "type": "message",
                "role": "assistant",
                "model": "claude-up",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 9, "output_tokens": 1},
            },
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "opaque"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 3},
        },
        {"type": "message_stop"},
    ]
    g = grammar()
    data = b"".join(g.event(Event(native=n, dialect="anthropic")) for n in upstream) + g.end(lambda: Usage(9, 3))
    events = parse(data)
    assert events[0]["message"]["id"] == "msg_1" and events[0]["message"]["model"] == "asked"
    assert events[1:] == upstream[1:]  # nothing added at the end: the upstream's own delta and stop


def test_an_error_after_the_first_byte_is_an_error_event_and_pings_keep_alive() -> None:
    g = grammar()
    g.event(Event([Delta(text="partial")]))
    (event,) = parse(g.error(UpstreamOverloaded("Overloaded"), "req1"))
    assert event == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req1",
    }
    assert parse(g.error(UpstreamError("gone"), "r"))[0]["error"]["type"] == "api_error"
    assert parse(PING) == [{"type": "ping"}]
