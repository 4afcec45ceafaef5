"""Server-sent events, read line by line: the upstream side of an OpenAI-compatible stream."""

from __future__ import annotations

import re


class SSEEvent:
    __slots__ = ("data", "event")

    def __init__(self, event: str, data: str) -> None:
        self.event = event
        self.data = data


class SSEParser:
    """Server-sent events, line by line (the WHATWG rules: `data:` lines join, `:` is a comment)."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""

    def feed(self, line: str) -> SSEEvent | None:
        if line == "":
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent(self._event, "\n".join(self._data))
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        return None


LINE_BREAK = re.compile(r"\r\n|\r|\n")


class LineDecoder:
    """Text to lines as it arrives, split on CR, LF and CRLF only: the SSE rules (not
    `str.splitlines`, which also splits on U+2028, U+2029, U+0085 and others that JSON may carry
    unescaped). A trailing `\r` waits for the next piece (it may be half of a CRLF), so that a whole
    network read is split at once."""

    def __init__(self) -> None:
        self._buffer = ""
        self._trailing_cr = False

    def decode(self, text: str) -> list[str]:
        if self._trailing_cr:
            text, self._trailing_cr = "\r" + text, False
        if text.endswith("\r"):
            text, self._trailing_cr = text[:-1], True
        if not text:
            return []
        lines = LINE_BREAK.split(text)
        lines[0] = self._buffer + lines[0]
        self._buffer = lines.pop()
        return lines

    def flush(self) -> list[str]:
        if not self._buffer and not self._trailing_cr:
            return []
        lines, self._buffer, self._trailing_cr = [self._buffer], "", False
        return lines
