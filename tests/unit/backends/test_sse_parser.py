"""The server-sent-events reader of the openai backend."""

from __future__ import annotations

from chatgw.backends._sse import SSEParser


def events(lines: list[str]) -> list[tuple[str, str]]:
    parser = SSEParser()
    out = []
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            out.append((event.event, event.data))
    return out


def test_data_lines_join_and_comments_are_skipped() -> None:
    lines = [
        ": keep-alive",
        "",
        'data: {"a":',
        "data: 1}",
        "",
        "event: error",
        "data:x",
        "",
        "data: [DONE]",
        "",
    ]
    assert events(lines) == [("", '{"a":\n1}'), ("error", "x"), ("", "[DONE]")]


def test_unknown_fields_and_lines_without_a_colon_are_ignored() -> None:
    assert events(["<html>", "id: 3", "retry: 10", "", "data: ok", ""]) == [("", "ok")]
