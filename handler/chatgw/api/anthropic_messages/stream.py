"""The Messages door's stream: Anthropic's event grammar, built from the conversation's events.

    message_start, then per content block: content_block_start, its deltas (text_delta,
    input_json_delta, thinking_delta, signature_delta), content_block_stop; then message_delta
    (stop_reason, usage) and message_stop. `ping` while the upstream is silent; `error` after a
    failure past the first byte. Block indexes count from 0 without gaps: a new block starts when
    the kind of content changes, or when another tool call begins.

Events of an upstream of Anthropic's dialect (`Event.native`) are forwarded as they came, with
`message_start`'s id and model restamped. Whatever happens, the stream ends with `message_stop` or
with `error`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chatgw.api.anthropic_messages.errors import error_object
from chatgw.api.anthropic_messages.outbound import STOP, stop_sequence, usage_dict
from chatgw.api.sse import frame
from chatgw.conversation import Delta, Event, StopReason, Usage
from chatgw.errors import ChatgwError


def sse(data: Mapping[str, Any]) -> bytes:
    """One event: `event: <type>` naming `data.type`, then the data line."""
    return b"event: " + str(data["type"]).encode() + b"\n" + frame(dict(data))


PING = sse({"type": "ping"})


class MessagesGrammar:
    keepalive = PING

    def __init__(self, *, message_id: str, model: str, input_tokens: int, stop: tuple[str, ...] = ()) -> None:
        self.message_id = message_id
        self.stop_sequences = stop
        self.model = model
        self.input_tokens = input_tokens
        self._started = False
        self._index = -1
        self._kind: str | None = None
        """The open block's kind ("text", "thinking", "tool_use"), or None."""
        self._tool: int | None = None
        self._stop: StopReason | None = None
        self._native = False
        self._native_delta = False
        self._native_stopped = False

    # ---- the conversation's events --------------------------------------------------------

    def event(self, event: Event) -> bytes:
        if event.dialect == "anthropic" and event.native is not None:
            return self._forward(event.native)
        out: list[bytes] = []
        for delta in event.deltas:
            if delta.output == 0:
                self._delta(delta, out)
        return b"".join(out)

    def _start(self, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        }
        out.append(sse({"type": "message_start", "message": message}))

    def _open(self, kind: str, block: dict[str, Any], out: list[bytes]) -> None:
        self._close(out)
        self._index += 1
        self._kind = kind
        out.append(sse({"type": "content_block_start", "index": self._index, "content_block": block}))

    def _close(self, out: list[bytes]) -> None:
        if self._kind is not None:
            out.append(sse({"type": "content_block_stop", "index": self._index}))
            self._kind, self._tool = None, None

    def _emit(self, delta: dict[str, Any], out: list[bytes]) -> None:
        out.append(sse({"type": "content_block_delta", "index": self._index, "delta": delta}))

    def _delta(self, delta: Delta, out: list[bytes]) -> None:
        self._start(out)
        if delta.reasoning or delta.signature:
            if self._kind != "thinking":
                self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            if delta.reasoning:
                self._emit({"type": "thinking_delta", "thinking": delta.reasoning}, out)
            if delta.signature:
                self._emit({"type": "signature_delta", "signature": delta.signature}, out)
        text = delta.text + delta.refusal
        if text:
            if self._kind != "text":
                self._open("text", {"type": "text", "text": ""}, out)
            self._emit({"type": "text_delta", "text": text}, out)
        tool = delta.tool
        if tool is not None:
            if self._kind != "tool_use" or self._tool != tool.index or tool.id is not None:
                call_id = tool.id or f"toolu_{self.message_id.removeprefix('msg_')}_{tool.index}"
                block = {"type": "tool_use", "id": call_id, "name": tool.name or "", "input": {}}
                self._open("tool_use", block, out)
                self._tool = tool.index
            if tool.arguments:
                self._emit({"type": "input_json_delta", "partial_json": tool.arguments}, out)
        if delta.stop is not None:
            self._stop = delta.stop

    # ---- an upstream of this dialect ------------------------------------------------------

    def _forward(self, native: Mapping[str, Any]) -> bytes:
        kind = native.get("type")
        if kind == "message_start":
            if self._started:
                return b""
            self._started = True
            message = {**dict(native.get("message") or {}), "id": self.message_id, "model": self.model}
            native = {**native, "message": message}
        elif kind == "message_delta":
            self._native_delta = True
        elif kind == "message_stop":
            self._native_stopped = True
        elif not isinstance(kind, str):
            return b""
        self._native = True
        return sse(native)

    # ---- the end ---------------------------------------------------------------------------

    def end(self, usage: Callable[[], Usage]) -> bytes:
        out: list[bytes] = []
        if self._native:
            if not self._native_delta:
                out.append(self._message_delta(usage()))
            if not self._native_stopped:
                out.append(sse({"type": "message_stop"}))
            return b"".join(out)
        self._start(out)
        self._close(out)
        out.append(self._message_delta(usage()))
        out.append(sse({"type": "message_stop"}))
        return b"".join(out)

    def _message_delta(self, usage: Usage) -> bytes:
        stop = self._stop or "end"
        return sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": STOP[stop], "stop_sequence": stop_sequence(stop, self.stop_sequences)},
                "usage": usage_dict(usage),
            }
        )

    def error(self, error: ChatgwError, request_id: str) -> bytes:
        return sse({"type": "error", "error": error_object(error), "request_id": request_id})
