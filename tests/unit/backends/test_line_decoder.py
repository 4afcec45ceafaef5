"""The openai backend splits each network read into lines itself, on CR, LF and CRLF only (the SSE
rules), however the text is cut into reads."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from chatgw.backends._sse import LineDecoder

PIECES = st.lists(
    st.sampled_from(
        ["data: {}", "\n", "\r", "\r\n", ": c", "x", "\u2028", "\u2029", "\x85", "\x0b", "data: [DONE]", "é"]
    )
)


def sse_lines(text: str) -> list[str]:
    """The lines of a whole stream, by the SSE rules (a last line without its end still counts)."""
    lines = re.split(r"\r\n|\r|\n", text)
    return lines[:-1] if lines[-1] == "" else lines


def lines_of(decoder: LineDecoder, reads: list[str]) -> list[str]:
    out: list[str] = []
    for text in reads:
        if text:
            out += decoder.decode(text)
    return out + decoder.flush()


@given(st.lists(PIECES.map("".join), max_size=12))
def test_the_sse_lines_however_the_reads_are_cut(reads: list[str]) -> None:
    assert lines_of(LineDecoder(), reads) == sse_lines("".join(reads))


def test_unicode_line_separators_are_not_line_breaks() -> None:
    text = 'data: {"c": "a\u2028b\u2029c\x85d\x0be"}\n\n'
    assert lines_of(LineDecoder(), [text]) == ['data: {"c": "a\u2028b\u2029c\x85d\x0be"}', ""]


def test_a_line_split_across_reads_and_a_crlf_split_in_two() -> None:
    assert lines_of(LineDecoder(), ["data: a", "bc\r", "\ndata: [DONE]\n", "\n"]) == ["data: abc", "data: [DONE]", ""]
