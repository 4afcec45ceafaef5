"""The openai backend splits each network read into lines itself: exactly as httpx's aiter_lines would,
however the text is cut into reads."""

from __future__ import annotations

from httpx._decoders import LineDecoder as HttpxLineDecoder
from hypothesis import given
from hypothesis import strategies as st

from chatgw.backends.sse_reader import LineDecoder

PIECES = st.lists(st.sampled_from(["data: {}", "\n", "\r", "\r\n", ": c", "x", "\u2028", "data: [DONE]", "é"]))


def lines_of(decoder: LineDecoder | HttpxLineDecoder, reads: list[str]) -> list[str]:
    out: list[str] = []
    for text in reads:
        if text:
            out += decoder.decode(text)
    return out + decoder.flush()


@given(st.lists(PIECES.map("".join), max_size=12))
def test_same_lines_as_httpx(reads: list[str]) -> None:
    assert lines_of(LineDecoder(), reads) == lines_of(HttpxLineDecoder(), reads)


def test_a_line_split_across_reads_and_a_crlf_split_in_two() -> None:
    assert lines_of(LineDecoder(), ["data: a", "bc\r", "\ndata: [DONE]\n", "\n"]) == ["data: abc", "data: [DONE]", ""]
