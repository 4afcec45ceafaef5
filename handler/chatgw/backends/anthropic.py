"""The `anthropic` backend: Anthropic's Messages API (or a compatible upstream), over the container's
one shared `httpx.AsyncClient`. A Messages-door request goes as the client sent it (model, cap and
beta flags the gateway's), so thinking signatures, `cache_control` and fields the gateway does not
know arrive byte for byte; others are translated (`_anthropic_dialect`). The answer is read into the
conversation model, keeping the upstream's own message and events for the Messages door."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from chatgw.backends import _anthropic_dialect as dialect
from chatgw.backends import _http as http
from chatgw.backends._options import Options
from chatgw.backends._retry import Retryable, retry_after_seconds
from chatgw.backends._sse import SSEEvent
from chatgw.backends._upstream_keys import KeySource
from chatgw.backends.base import BackendDeps
from chatgw.conversation import Answer, Conversation, Event
from chatgw.deadline import Deadline
from chatgw.errors import (
    ChatgwError,
    RequestTooLarge,
    UpstreamError,
    UpstreamOverloaded,
)

OPTIONS = {
    "base_url",
    "upstream_model",
    "api_key_env",
    "api_key_secret",
    "api_key_parameter",
    "headers",
    "beta_flags",
    "timeout_s",
    "max_retries",
}
DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
BETA_FLAGS = frozenset(
    {
        "claude-code-20250219",
        "interleaved-thinking-2025-05-14",
        "fine-grained-tool-streaming-2025-05-14",
        "context-management-2025-06-27",
        "context-1m-2025-08-07",
        "token-efficient-tools-2025-02-19",
        "output-128k-2025-02-19",
        "prompt-caching-scope-2026-01-05",
        "effort-2025-11-24",
        "advanced-tool-use-2025-11-20",
        "files-api-2025-04-14",
        "pdfs-2024-09-25",
        "structured-outputs-2025-11-13",
    }
)
"""The client beta flags forwarded by default (Claude Code's and the SDK's common ones); a catalog
entry adds more with `beta_flags`. Others are dropped: a flag changes what the upstream does, and a
gateway forwards only what its operator agreed to."""
COUNT_DROPPED = ("max_tokens", "stream", "stop_sequences", "temperature", "top_p", "top_k", "metadata", "service_tier")
"""Generation settings that count_tokens refuses (it counts the input only)."""
OVERLOADED = 529


def from_options(name: str, options: Mapping[str, Any], deps: BackendDeps) -> AnthropicBackend:
    opts = Options(name, options, OPTIONS)
    base_url = opts.string("base_url", DEFAULT_BASE_URL) or DEFAULT_BASE_URL
    url = http.http_url(opts, base_url)
    root = url.path.rstrip("/")
    if not root.endswith("/v1"):
        root += "/v1"  # base_url is the host (Anthropic's SDK convention), or already ends in /v1
    return AnthropicBackend(
        name,
        url=url.copy_with(path=root + "/messages"),
        count_url=url.copy_with(path=root + "/messages/count_tokens"),
        upstream_model=opts.string("upstream_model", name) or name,
        key=http.key_source(name, opts, deps),
        headers=opts.string_map("headers"),
        beta_flags=BETA_FLAGS | frozenset(opts.string_list("beta_flags")),
        timeout_s=opts.number("timeout_s", 600.0, minimum=0.1),
        max_retries=opts.integer("max_retries", 2, minimum=0, maximum=2),
        deps=deps,
    )


class AnthropicBackend(http.Upstream):
    kind = "anthropic"
    native_dialect = "anthropic"
    """A door of this dialect sends the client's body through (`Original`)."""

    def __init__(
        self,
        name: str,
        *,
        url: httpx.URL,
        count_url: httpx.URL,
        upstream_model: str,
        key: KeySource | None,
        headers: dict[str, str],
        beta_flags: frozenset[str],
        timeout_s: float,
        max_retries: int,
        deps: BackendDeps,
    ) -> None:
        super().__init__(name, key=key, headers=headers, timeout_s=timeout_s, max_retries=max_retries, deps=deps)
        self.url = url
        self.count_url = count_url
        self.upstream_model = upstream_model
        self.beta_flags = beta_flags

    def check(self, request: Conversation) -> None:
        dialect.check(request)

    async def complete(self, request: Conversation, deadline: Deadline) -> Answer:
        deadline = Deadline(min(deadline.at, time.monotonic() + self.timeout_s))
        data = await self._json(self.url, self._body(request, stream=False), request, deadline)
        if isinstance(data, dict) and data.get("type") == "error":
            raise self.in_band_error(data.get("error"))
        try:
            return dialect.answer_from(data)
        except dialect.Garbage as exc:
            raise self.garbage(str(exc)) from None

    async def count_tokens(self, request: Conversation, deadline: Deadline | None = None) -> int:
        """The upstream's own count of the request's input tokens (Anthropic's count_tokens)."""
        deadline = deadline or Deadline(time.monotonic() + self.timeout_s)
        body = self._body(request, stream=False)
        for name in COUNT_DROPPED:
            body.pop(name, None)
        data = await self._json(self.count_url, body, request, deadline)
        count = data.get("input_tokens") if isinstance(data, dict) else None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise self.garbage("a count without input_tokens")
        return count

    async def stream(self, request: Conversation, deadline: Deadline) -> AsyncIterator[Event]:
        response = await self._open(self.url, self._body(request, stream=True), request, deadline)
        try:
            reader, mapper = http.EventReader(self, response, deadline), dialect.StreamMapper()
            while not (mapper.stopped or reader.ended):
                for sse_event in await reader.read():
                    step = self._event(sse_event, mapper)
                    if step is not None:
                        yield step
                    if mapper.stopped:
                        break
            if not mapper.stopped:
                raise self.garbage("an event stream that ended without message_stop")
            await reader.drain()  # so that the connection is reused
        finally:
            await response.aclose()

    # ---- one upstream call -------------------------------------------------------------------

    def _body(self, request: Conversation, *, stream: bool) -> dict[str, Any]:
        body = dialect.request_body(request, model=self.upstream_model)
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body

    async def _json(self, url: httpx.URL, body: dict[str, Any], request: Conversation, deadline: Deadline) -> Any:
        return await http.read_json(self, await self._open(url, body, request, deadline), deadline)

    async def _open(
        self, url: httpx.URL, body: dict[str, Any], request: Conversation, deadline: Deadline
    ) -> httpx.Response:
        """The upstream's answer with status 200, its body not read yet."""
        signed = {"anthropic-version": API_VERSION}
        flags = dialect.betas(request, self.beta_flags)
        if flags:
            signed["anthropic-beta"] = ",".join(flags)
        key = await self.key()
        if key is not None:
            signed["x-api-key"] = key
        return await self.send(url, body, signed, deadline)

    # ---- errors ------------------------------------------------------------------------------

    def _overloaded(self, message: str) -> UpstreamOverloaded:
        return UpstreamOverloaded(f"The upstream of model '{self.name}' is overloaded: {message}", cause="overloaded")

    def status_error(self, status: int, headers: httpx.Headers, raw: bytes) -> ChatgwError | Retryable:
        """Anthropic's own statuses (529 overloaded, 413 too large), then what every HTTP upstream means;
        a 4xx keeps the upstream's words: Claude Code's recovery reads them."""
        message = self.scrub(http.error_message(raw)[0])
        if status == OVERLOADED:
            return Retryable(self._overloaded(message or "HTTP 529"), retry_after_seconds(headers))
        if status == 413:
            return RequestTooLarge(message or "The upstream found the request too large (HTTP 413).")
        return http.status_error(self, status, headers, message)

    # ---- the answer --------------------------------------------------------------------------

    def _event(self, sse_event: SSEEvent, mapper: dialect.StreamMapper) -> Event | None:
        try:
            data = json.loads(sse_event.data)
        except json.JSONDecodeError:
            raise self.garbage("an event that is not JSON") from None
        if not isinstance(data, dict):
            raise self.garbage("an event that is not an object")
        if data.get("type") == "error" or sse_event.event == "error":
            raise self.in_band_error(data.get("error", data))
        try:
            return mapper.feed(data)
        except dialect.Garbage as exc:
            raise self.garbage(str(exc)) from None

    def in_band_error(self, error: Any) -> UpstreamError:
        if isinstance(error, dict) and error.get("type") == "overloaded_error":
            return self._overloaded(self.in_band_message(error))
        return super().in_band_error(error)
