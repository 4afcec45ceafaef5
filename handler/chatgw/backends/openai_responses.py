"""The `openai` backend with `api: responses`: an OpenAI Responses upstream (`POST {base_url}/responses`),
over the same transport as the chat-completions backend (`_openai_http`). A request from a door of
this dialect goes as the client sent it (model, cap and `store: false` the gateway's); others are
translated (`_responses_dialect`). Answers and stream events keep the upstream's own objects."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from chatgw.backends import _responses_dialect as dialect
from chatgw.backends._http import EventReader
from chatgw.backends._openai_http import COMMON_OPTIONS, OpenAIHTTP, transport_options
from chatgw.backends._options import Options
from chatgw.backends._sse import SSEEvent
from chatgw.backends.base import BackendDeps, refuse_unsupported, unsupported
from chatgw.conversation import Answer, Audio, Conversation, Event
from chatgw.deadline import Deadline
from chatgw.errors import ChatgwError, UpstreamError, UpstreamRateLimited, UpstreamRejected

BACKEND = "openai (responses)"
RATE_LIMITED = frozenset({"rate_limit_exceeded", "rate_limit_error"})
REJECTED = frozenset({"context_length_exceeded", "invalid_prompt"})
"""Failures the client's request caused (a 400 before the first byte, as the chat backend's upstream 4xx)."""


def from_options(name: str, options: Mapping[str, Any], deps: BackendDeps) -> OpenAIResponsesBackend:
    opts = Options(name, options, COMMON_OPTIONS)
    return OpenAIResponsesBackend(name, **transport_options(name, opts, deps, "/responses"))


class OpenAIResponsesBackend(OpenAIHTTP):
    native_dialect = "openai_responses"
    """Read by the Responses door: this upstream runs hosted tools itself (they go in the client's body)."""

    def check(self, request: Conversation) -> None:
        """A body of this dialect passes through (the upstream refuses what it does not know); a
        translated one may only carry what a Responses body has a place for (no `stop`, `n`, `seed`,
        penalties): each other setting is refused by the client's name for it."""
        self.refuse_listed(request)
        original = request.original
        if original is None or original.dialect != dialect.DIALECT:
            refuse_unsupported(request, (*dialect.SUPPORTED, *dialect.MAPPED_PARAMS), BACKEND)
            if any(isinstance(p, Audio) for m in request.messages for p in m.parts):
                # the Responses API takes no audio input: dropping it would answer another question
                raise unsupported(request, "messages", BACKEND, ": content parts of type `input_audio` cannot be sent")

    async def complete(self, request: Conversation, deadline: Deadline) -> Answer:
        data = await self.read_json(dialect.request_body(request, model=self.upstream_model, stream=False), deadline)
        if isinstance(data, dict) and "error" in data and "output" not in data:
            raise self.in_band_error(data["error"])
        try:
            return dialect.answer_from(data)
        except dialect.Garbage as exc:
            raise self.garbage(str(exc)) from None
        except dialect.Failed as exc:
            raise self._failed(exc) from None

    async def stream(self, request: Conversation, deadline: Deadline) -> AsyncIterator[Event]:
        body = dialect.request_body(request, model=self.upstream_model, stream=True)
        response = await self.open(body, deadline)
        try:
            reader = EventReader(self, response, deadline)
            state = dialect.StreamState()
            while not (state.finished or reader.ended):
                for event in await reader.read():
                    yield self._event(state, event)
                    if state.finished:
                        break
            if not state.finished:
                raise self.garbage("an event stream that ended without response.completed")
            await reader.drain()
        finally:
            await response.aclose()

    def _event(self, state: dialect.StreamState, event: SSEEvent) -> Event:
        try:
            data = json.loads(event.data)
        except json.JSONDecodeError:
            raise self.garbage("an event that is not JSON") from None
        if not isinstance(data, dict):
            raise self.garbage("an event that is not an object")
        try:
            return state.event(data)
        except dialect.Garbage as exc:
            raise self.garbage(str(exc)) from None
        except dialect.Failed as exc:
            raise self._failed(exc) from None

    def _failed(self, failure: dialect.Failed) -> ChatgwError:
        """A failed response: a rate limit keeps its kind (and its wait), a request too long or refused is the
        client's, anything else is the upstream's failure."""
        message = self.scrub(failure.message)
        if failure.code in RATE_LIMITED:
            wait = failure.retry_after
            return UpstreamRateLimited(
                f"The upstream of model '{self.name}' is rate limited: {message}",
                retry_after=max(1, round(wait)) if wait is not None else 1,
                cause="429",
            )
        if failure.code in REJECTED:
            return UpstreamRejected(message)
        code = f" ({failure.code})" if failure.code else ""
        return UpstreamError(f"The upstream of model '{self.name}' failed{code}: {message}")
