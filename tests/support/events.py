"""The sample events in events/ and the status each one answers."""

from __future__ import annotations

from tests.support.tools import ROOT

EVENTS = sorted((ROOT / "events").glob("*.json"))
EXPECTED = {
    "rest-v1-chat.json": 200,
    "rest-v1-chat-stream.json": 200,
    "rest-v1-messages.json": 200,
    "rest-v1-messages-stream.json": 200,
    "rest-v1-list-llms.json": 200,
    "rest-v1-missing-key.json": 401,
    "rest-v1-malformed-body.json": 400,
    "http-v2-chat.json": 200,
    "function-url-chat.json": 200,
    "function-url-chat-stream.json": 200,
    "rest-v1-responses.json": 200,
    "rest-v1-responses-stream.json": 200,
}


def stream_end(name: str) -> str:
    """How a streamed sample event's body ends: the door's grammar's last event."""
    return 'event: message_stop\ndata: {"type":"message_stop"}\n\n' if "messages" in name else "data: [DONE]\n\n"
