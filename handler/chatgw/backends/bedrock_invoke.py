"""The `bedrock` backend with `"api": "invoke"`: InvokeModel and InvokeModelWithResponseStream with
Anthropic's own Messages body, as Claude Code's Bedrock mode calls them: lossless for Claude (thinking
signatures, cache_control, fields the gateway does not know). The body is `_anthropic_dialect`'s,
without `model` and `stream` (the model is in the URL, the stream is the operation), with Bedrock's
`anthropic_version` and the client's beta flags, filtered to those Bedrock accepts, as
`anthropic_beta`. Each `chunk` of the response stream holds one Anthropic event as JSON.

Threads, retries and the mapping of Bedrock's errors are the Converse backend's."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from chatgw.backends import _anthropic_dialect as dialect
from chatgw.backends.bedrock_converse import BedrockBackend
from chatgw.conversation import Answer, Conversation, Event
from chatgw.deadline import Deadline
from chatgw.errors import UpstreamError, UpstreamOverloaded

ANTHROPIC_VERSION = "bedrock-2023-05-31"
BETA_FLAGS = frozenset(
    {
        "interleaved-thinking-2025-05-14",
        "fine-grained-tool-streaming-2025-05-14",
        "token-efficient-tools-2025-02-19",
        "output-128k-2025-02-19",
        "context-1m-2025-08-07",
        "computer-use-2025-01-24",
    }
)
"""The beta flags Bedrock's Anthropic models accept (AWS's Claude model parameters page). Bedrock
answers any other flag (Claude Code's `claude-code-20250219`, `prompt-caching-scope-...`) with a 400
"invalid beta flag", so the rest are dropped; a catalog entry adds more with `beta_flags`."""
COUNT_DROPPED = ("max_tokens", "stop_sequences", "temperature", "top_p", "top_k", "metadata")


class BedrockInvokeBackend(BedrockBackend):
    native_dialect = "anthropic"
    """Anthropic's body on InvokeModel: a Messages request goes through nearly as sent."""

    def __init__(self, name: str, *, beta_flags: frozenset[str], **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.beta_flags = BETA_FLAGS | beta_flags

    def check(self, request: Conversation) -> None:
        dialect.check(request)

    def body(self, request: Conversation) -> bytes:
        body = dialect.request_body(request, model=None)
        body.pop("stream", None)
        body["anthropic_version"] = ANTHROPIC_VERSION
        flags = dialect.betas(request, self.beta_flags)
        if flags:
            body["anthropic_beta"] = flags
        else:
            body.pop("anthropic_beta", None)
        return json.dumps(body).encode()

    async def complete(self, request: Conversation, deadline: Deadline) -> Answer:
        body = self.body(request)

        def call(client: Any) -> Any:
            response = client.invoke_model(
                modelId=self.model_id, body=body, contentType="application/json", accept="application/json"
            )
            return json.loads(response["body"].read())

        data = await self._call(call, deadline)
        try:
            return dialect.answer_from(data)
        except dialect.Garbage as exc:
            raise self._garbage(str(exc)) from None

    async def count_tokens(self, request: Conversation, deadline: Deadline | None = None) -> int:
        body = json.loads(self.body(request))
        for name in COUNT_DROPPED:
            body.pop(name, None)
        body["max_tokens"] = 1  # an InvokeModel body needs a cap (AWS's CountTokens examples send one); not counted
        return await self._count({"invokeModel": {"body": json.dumps(body).encode()}}, deadline)

    async def stream(self, request: Conversation, deadline: Deadline) -> AsyncIterator[Event]:
        body = self.body(request)

        def call(client: Any) -> Any:
            return client.invoke_model_with_response_stream(
                modelId=self.model_id, body=body, contentType="application/json", accept="application/json"
            )

        response = await self._call(call, deadline)
        mapper = dialect.StreamMapper()
        async with contextlib.aclosing(self._pump(response["body"], deadline)) as items:
            async for item in items:
                step = self._event(item, mapper)
                if step is not None:
                    yield step
                if mapper.stopped:
                    break
        if not mapper.stopped:
            raise self._garbage("a stream that ended without message_stop")

    def _event(self, item: Any, mapper: dialect.StreamMapper) -> Event | None:
        chunk = item.get("chunk") if isinstance(item, dict) else None
        if chunk is None:
            return None  # an event type this gateway does not read
        try:
            data = json.loads(chunk.get("bytes") or b"")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self._garbage("a chunk that is not JSON") from None
        if not isinstance(data, dict):
            raise self._garbage("a chunk that is not an event")
        if data.get("type") == "error":
            error = data.get("error") or {}
            message = str(error.get("message") or "an error") if isinstance(error, dict) else str(error)
            kind = UpstreamOverloaded if isinstance(error, dict) and error.get("type") == "overloaded_error" else None
            text = f"Bedrock failed for model '{self.name}': {message}"
            raise (kind or UpstreamError)(text)
        try:
            return mapper.feed(data)
        except dialect.Garbage as exc:
            raise self._garbage(str(exc)) from None

    def _garbage(self, what: str) -> UpstreamError:
        return UpstreamError(f"Bedrock answered {what} for model '{self.name}'.", cause="malformed")
