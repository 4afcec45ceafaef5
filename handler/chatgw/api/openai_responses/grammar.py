"""The Responses door's stream: OpenAI's event grammar, every event `event: <type>` and `data:` with
a rising `sequence_number` from 0. `response.created` and `response.in_progress` open it; each
output item is announced (`output_item.added`), filled (text, call-argument or reasoning-summary
deltas) and closed (`output_item.done`, from which Codex builds its history); `response.completed`
(or `.incomplete`) ends it, and an error after the first byte is `response.failed`, with the codes
Codex reads. Events of an upstream of this dialect are forwarded, restamped and renumbered."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chatgw.api.openai_responses.outbound import (
    Stamp,
    call_item,
    custom_input,
    message_item,
    response_object,
    restamp,
    status_of,
)
from chatgw.api.sse import KEEPALIVE, frame
from chatgw.conversation import Delta, Event, StopReason, ToolCall, Usage
from chatgw.errors import ChatgwError, RateLimited

TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def failure(error: ChatgwError) -> dict[str, str]:
    """An error as `response.failed`'s `error`, in the codes Codex acts on: it waits the seconds of
    "try again in N s" after `rate_limit_exceeded`, and gives up at once on `insufficient_quota` and
    `context_length_exceeded`. Anything else is `server_error` (a code of OpenAI's list, which the
    SDK checks), with the gateway's own code as `type`."""
    code = "server_error"
    message = error.message
    if isinstance(error, RateLimited):
        code = "insufficient_quota" if error.code == "insufficient_quota" else "rate_limit_exceeded"
        if code == "rate_limit_exceeded":
            message = f"{message} Please try again in {error.retry_after}s."
    elif error.code == "context_length_exceeded":
        code = "context_length_exceeded"
    return {"code": code, "message": message, "type": error.code}


class _Item:
    """The output item being streamed."""

    def __init__(self, kind: str, index: int, item_id: str) -> None:
        self.kind = kind  # "message", "reasoning" or "call"
        self.index = index
        self.item_id = item_id
        self.text: list[str] = []
        self.parts: list[tuple[str, list[str]]] = []
        """A message's content parts: ("output_text" or "refusal", its pieces)."""
        self.call: ToolCall | None = None
        self.tool_index = -1


class ResponsesGrammar:
    keepalive = KEEPALIVE

    def __init__(self, stamp: Stamp) -> None:
        self.stamp = stamp
        self._seq = 0
        self._opened = False
        self._native = False
        self._ended = False
        self._item: _Item | None = None
        self._done: list[dict[str, Any]] = []
        self._stop: StopReason | None = None

    def _frame(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return b"event: " + kind.encode() + b"\n" + frame(data)

    def _open(self) -> bytes:
        if self._opened:
            return b""
        self._opened = True
        start = response_object(self.stamp, status="in_progress", output=[], usage=None)
        return self._frame("response.created", response=start) + self._frame("response.in_progress", response=start)

    # events ------------------------------------------------------------------------------

    def event(self, event: Event) -> bytes:
        if event.dialect == "openai_responses" and event.native is not None and not self._opened:
            self._native = True
        if self._native:
            return self._forward(event.native) if event.native is not None else b""
        out = [self._open()]
        for delta in event.deltas:
            if delta.output != 0:
                continue
            out.append(self._delta(delta))
        return b"".join(out)

    def _delta(self, delta: Delta) -> bytes:
        out: list[bytes] = []
        if delta.reasoning:
            out.append(self._switch("reasoning"))
            out.append(self._reasoning_delta(delta.reasoning))
        for kind, piece in (("output_text", delta.text), ("refusal", delta.refusal)):
            if piece:
                out.append(self._switch("message"))
                out.append(self._content_delta(kind, piece))
        if delta.tool is not None:
            out.append(self._tool_delta(delta))
        if delta.stop is not None:
            self._stop = delta.stop
        return b"".join(out)

    def _switch(self, kind: str) -> bytes:
        if self._item is not None and self._item.kind == kind:
            return b""
        out = self._close()
        index = len(self._done)
        prefix = {"message": "msg", "reasoning": "rs", "call": "fc"}[kind]
        self._item = item = _Item(kind, index, self.stamp.item_id(prefix, index))
        if kind == "message":
            added = message_item(item.item_id, "", status="in_progress")
            added["content"] = []
            return out + self._frame("response.output_item.added", output_index=index, item=added)
        if kind == "reasoning":
            added = {"id": item.item_id, "type": "reasoning", "summary": []}
            part = {"type": "summary_text", "text": ""}
            return (
                out
                + self._frame("response.output_item.added", output_index=index, item=added)
                + self._frame(
                    "response.reasoning_summary_part.added",
                    item_id=item.item_id,
                    output_index=index,
                    summary_index=0,
                    part=part,
                )
            )
        return out

    def _content_delta(self, kind: str, piece: str) -> bytes:
        """A piece of the message's text or refusal: a new content part when the kind changes."""
        item = self._item
        assert item is not None
        out = b""
        if not item.parts or item.parts[-1][0] != kind:
            out = self._close_part(item)
            item.parts.append((kind, []))
            empty = {"type": kind, "text": "", "annotations": [], "logprobs": []} if kind == "output_text" else {}
            part = empty or {"type": "refusal", "refusal": ""}
            out += self._frame(
                "response.content_part.added", **_where(item), content_index=len(item.parts) - 1, part=part
            )
        item.parts[-1][1].append(piece)
        index = len(item.parts) - 1
        if kind == "refusal":
            return out + self._frame("response.refusal.delta", **_where(item), content_index=index, delta=piece)
        return out + self._frame(
            "response.output_text.delta", **_where(item), content_index=index, delta=piece, logprobs=[]
        )

    def _close_part(self, item: _Item) -> bytes:
        if not item.parts:
            return b""
        index, (kind, pieces) = len(item.parts) - 1, item.parts[-1]
        whole = "".join(pieces)
        if kind == "refusal":
            out = self._frame("response.refusal.done", **_where(item), content_index=index, refusal=whole)
        else:
            out = self._frame("response.output_text.done", **_where(item), content_index=index, text=whole, logprobs=[])
        part = _part(kind, whole)
        return out + self._frame("response.content_part.done", **_where(item), content_index=index, part=part)

    def _reasoning_delta(self, text: str) -> bytes:
        item = self._item
        assert item is not None
        item.text.append(text)
        return self._frame(
            "response.reasoning_summary_text.delta",
            item_id=item.item_id,
            output_index=item.index,
            summary_index=0,
            delta=text,
        )

    def _tool_delta(self, delta: Delta) -> bytes:
        tool = delta.tool
        assert tool is not None
        item = self._item
        out = b""
        if tool.id is not None or item is None or item.kind != "call" or item.tool_index != tool.index:
            out = self._switch_call()
            item = self._item
            assert item is not None
            item.tool_index = tool.index
            item.call = ToolCall(tool.id or f"call_{item.item_id}", tool.name or "", "")
            added = call_item(self.stamp, item.item_id, item.call, status="in_progress")
            out += self._frame("response.output_item.added", output_index=item.index, item=added)
        if not tool.arguments:
            return out
        item.text.append(tool.arguments)
        assert item.call is not None
        if item.call.name in self.stamp.custom_tools:  # its free text is known only once the JSON is whole
            return out
        return out + self._frame(
            "response.function_call_arguments.delta",
            item_id=item.item_id,
            output_index=item.index,
            delta=tool.arguments,
        )

    def _switch_call(self) -> bytes:
        out = self._close()
        index = len(self._done)
        self._item = _Item("call", index, self.stamp.item_id("fc", index))
        return out

    # closing items -----------------------------------------------------------------------

    def _close(self) -> bytes:
        item, self._item = self._item, None
        if item is None:
            return b""
        text = "".join(item.text)
        where = {"item_id": item.item_id, "output_index": item.index}
        if item.kind == "message":
            out = self._close_part(item)
            done = message_item(item.item_id, "")
            done["content"] = [_part(kind, "".join(pieces)) for kind, pieces in item.parts]
        elif item.kind == "reasoning":
            done = {"id": item.item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]}
            part = done["summary"][0]
            out = self._frame("response.reasoning_summary_text.done", **where, summary_index=0, text=text)
            out += self._frame("response.reasoning_summary_part.done", **where, summary_index=0, part=part)
        else:
            assert item.call is not None
            call = ToolCall(item.call.id, item.call.name, text)
            done = call_item(self.stamp, item.item_id, call)
            if call.name in self.stamp.custom_tools:
                free = custom_input(text)
                out = self._frame("response.custom_tool_call_input.delta", **where, delta=free)
                out += self._frame("response.custom_tool_call_input.done", **where, input=free)
            else:
                out = self._frame("response.function_call_arguments.done", **where, arguments=text)
        self._done.append(done)
        return out + self._frame("response.output_item.done", output_index=item.index, item=done)

    # the end -----------------------------------------------------------------------------

    def end(self, usage: Callable[[], Usage]) -> bytes:
        if self._native and self._ended:
            return b""
        out = self._open() + self._close()
        status = status_of(self._stop)
        body = response_object(self.stamp, status=status, output=self._done, usage=usage(), stop=self._stop)
        return out + self._frame(f"response.{status}", response=body)

    def error(self, error: ChatgwError, request_id: str) -> bytes:
        out = self._open()
        body = response_object(self.stamp, status="failed", output=self._done, usage=None, error=failure(error))
        return out + self._frame("response.failed", response=body)

    # an upstream of this dialect -----------------------------------------------------------

    def _forward(self, native: Mapping[str, Any]) -> bytes:
        kind = str(native.get("type", ""))
        if not kind:
            return b""
        self._opened = True
        fields = {k: v for k, v in native.items() if k not in ("type", "sequence_number")}
        response = fields.get("response")
        if isinstance(response, Mapping):
            fields["response"] = restamp(response, self.stamp)
        if kind == "response.output_item.done" and isinstance(fields.get("item"), Mapping):
            self._done.append(dict(fields["item"]))
        if kind in TERMINAL:
            self._ended = True
        return self._frame(kind, **fields)


def _where(item: _Item) -> dict[str, Any]:
    return {"item_id": item.item_id, "output_index": item.index}


def _part(kind: str, whole: str) -> dict[str, Any]:
    if kind == "refusal":
        return {"type": "refusal", "refusal": whole}
    return {"type": "output_text", "text": whole, "annotations": [], "logprobs": []}
