"""Server-sent-event framing."""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


_LINE_LIKE = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}
_LINE_LIKE_TABLE = str.maketrans(_LINE_LIKE)


def frame(data: dict[str, Any]) -> bytes:
    """One SSE event. JSON escapes CR and LF itself; U+2028, U+2029 and U+0085 are escaped too, so
    that a reader splitting lines the way `str.splitlines` does never cuts an event in two."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        text = text.translate(_LINE_LIKE_TABLE)
    return b"data: " + text.encode() + b"\n\n"
