"""Server-sent events, read line by line: the upstream side of an OpenAI-compatible stream."""

from __future__ import annotations


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


class LineDecoder:
    """Text to lines as it arrives, with the rules of `httpx.Response.aiter_lines` (str.splitlines; a
    trailing `\r` waits for the next piece), so that a whole network read is split at once."""

    NEWLINES = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"

    def __init__(self) -> None:
        self._buffer: list[str] = []
        self._trailing_cr = False

    def decode(self, text: str) -> list[str]:
        if self._trailing_cr:
            text, self._trailing_cr = "\r" + text, False
        if text.endswith("\r"):
            text, self._trailing_cr = text[:-1], True
        if not text:
            return []
        complete = text[-1] in self.NEWLINES
        lines = text.splitlines()
        if len(lines) == 1 and not complete:
            self._buffer.append(lines[0])
            return []
        if self._buffer:
            lines[0] = "".join(self._buffer) + lines[0]
            self._buffer = []
        if not complete:
            self._buffer = [lines.pop()]
        return lines

    def flush(self) -> list[str]:
        if not self._buffer and not self._trailing_cr:
            return []
        lines, self._buffer, self._trailing_cr = ["".join(self._buffer)], [], False
        return lines
