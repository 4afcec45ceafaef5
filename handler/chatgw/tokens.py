"""A tokenizer-free token estimate, used by the echo model and when a backend reports no usage."""

from __future__ import annotations

import re

from .wire import ChatRequest, text_of

_TOKEN = re.compile(r"\w+|[^\w\s]")
MESSAGE_OVERHEAD = 3


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def estimate_prompt_tokens(request: ChatRequest) -> int:
    return MESSAGE_OVERHEAD + sum(
        MESSAGE_OVERHEAD + count_tokens(text_of(message.content)) for message in request.messages
    )
