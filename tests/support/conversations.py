"""A chat-completions body as the conversation the service gets, for tests that need one."""

from __future__ import annotations

import json
from typing import Any

from chatgw.api.openai_chat.inbound import to_conversation
from chatgw.api.openai_chat.wire import ChatRequest
from chatgw.conversation import Conversation


def conversation_of(body: dict[str, Any]) -> Conversation:
    """`body` validated as the chat door validates it, then translated as the door does."""
    raw = json.dumps(body).encode()
    return to_conversation(ChatRequest.model_validate_json(raw), raw)
