"""The `openai` backend: any OpenAI-compatible chat-completions upstream, over the container's one
shared `httpx.AsyncClient`. A chat-door request goes as the client sent it (model and cap the
gateway's); others are translated (`_chat_dialect`). The answer is read into the conversation model,
keeping the upstream's own objects for the chat door."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from chatgw.backends import _chat_dialect as dialect
from chatgw.backends._http import EventReader
from chatgw.backends._openai_http import COMMON_OPTIONS, OpenAIHTTP, api_of, transport_options
from chatgw.backends._options import Options
from chatgw.backends._sse import SSEEvent
from chatgw.backends.base import BackendDeps, ChatBackend
from chatgw.conversation import Answer, Conversation, Event, Usage
from chatgw.deadline import Deadline

OPTIONS = COMMON_OPTIONS | {"token_param"}
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
"""How the upstream names the output cap: o-series / reasoning models refuse `max_tokens`."""


def from_options(name: str, options: Mapping[str, Any], deps: BackendDeps) -> ChatBackend:
    if api_of(name, options) == "responses":
        from chatgw.backends import openai_responses  # imported only when the catalog names it

        return openai_responses.from_options(name, options, deps)
    opts = Options(name, options, OPTIONS)
    transport = transport_options(name, opts, deps, "/chat/completions")
    cap_name = opts.string("token_param", TOKEN_PARAMS[0])
    if cap_name not in TOKEN_PARAMS:
        raise opts.error("token_param", f"must be one of {', '.join(TOKEN_PARAMS)}")
    return OpenAIBackend(name, **transport, cap_as_completion_tokens=cap_name == TOKEN_PARAMS[1])


class OpenAIBackend(OpenAIHTTP):
    native_dialect = "openai_chat"
    """The chat door's body goes through as the client sent it (`Original`)."""

    def __init__(self, name: str, *, cap_as_completion_tokens: bool = False, **transport: Any) -> None:
        super().__init__(name, **transport)
        self.cap_as_completion_tokens = cap_as_completion_tokens
        """The catalog's `token_param` is max_completion_tokens: the cap is sent under that name."""

    def check(self, request: Conversation) -> None:
        """Everything passes through (the upstream refuses what it does not know, and that 4xx
        reaches the client), except what the catalog lists in `unsupported_params`."""
        self.refuse_listed(request)

    async def complete(self, request: Conversation, deadline: Deadline) -> Answer:
        data = await self.read_json(self._body(request, stream=False), deadline)
        if isinstance(data, dict) and "error" in data and "choices" not in data:
            raise self.in_band_error(data["error"])
        try:
            return dialect.answer_from(data)
        except dialect.Garbage as exc:
            raise self.garbage(str(exc)) from None

    async def stream(self, request: Conversation, deadline: Deadline) -> AsyncIterator[Event]:
        response = await self.open(self._body(request, stream=True), deadline)
        try:
            reader = EventReader(self, response, deadline)
            finished = False
            usage: Usage | None = None
            done = False
            while not (done or reader.ended):
                for event in await reader.read():
                    if event.data.strip() == "[DONE]":
                        done = True
                        break
                    step = self._event(event)
                    usage = step.usage or usage
                    if not step.deltas:
                        continue
                    step.usage = None  # said once, at the end
                    finished = finished or any(d.stop is not None for d in step.deltas)
                    yield step
            if not done and not finished:
                raise self.garbage("an event stream that ended without [DONE]")
            if usage is not None:
                yield Event(usage=usage)
            if done:
                await reader.drain()
        finally:
            await response.aclose()

    def _body(self, request: Conversation, *, stream: bool) -> dict[str, Any]:
        cap_name = "max_completion_tokens" if self.cap_as_completion_tokens else "max_tokens"
        if not self.cap_as_completion_tokens and "max_output_tokens" in request.given:
            cap_name = request.spelled("max_output_tokens")  # the name the client used
        body = dialect.request_body(request, model=self.upstream_model, cap_name=cap_name)
        if stream:
            body["stream"] = True
            body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body

    def _event(self, event: SSEEvent) -> Event:
        try:
            chunk = json.loads(event.data)
        except json.JSONDecodeError:
            raise self.garbage("an event that is not JSON") from None
        if not isinstance(chunk, dict):
            raise self.garbage("an event that is not a chunk object")
        if event.event == "error" or ("error" in chunk and "choices" not in chunk):
            raise self.in_band_error(chunk.get("error", chunk))
        try:
            return dialect.event_from(chunk)
        except dialect.Garbage as exc:
            raise self.garbage(str(exc)) from None


parse_usage = dialect.parse_usage
