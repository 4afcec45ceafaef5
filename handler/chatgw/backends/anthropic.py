"""The `anthropic` backend: Anthropic's Messages API (or a compatible upstream), over the container's
one shared `httpx.AsyncClient`. A Messages-door request goes as the client sent it (model, cap and
beta flags the gateway's), so thinking signatures, `cache_control` and fields the gateway does not
know arrive byte for byte; others are translated (`_anthropic_dialect`). The answer is read into the
conversation model, keeping the upstream's own message and events for the Messages door."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from chatgw.backends import _anthropic_dialect as dialect
from chatgw.backends._drain import drain_to_end
from chatgw.backends._openai_http import transport_error
from chatgw.backends._options import Options
from chatgw.backends._retry import Retryable, retry_after_seconds, with_retries
from chatgw.backends._scrub import scrub
from chatgw.backends._sse import LineDecoder, SSEEvent, SSEParser
from chatgw.backends._upstream_keys import KeySource
from chatgw.backends.base import BackendDeps
from chatgw.conversation import Answer, Conversation, Event
from chatgw.deadline import Deadline
from chatgw.errors import (
    ChatgwError,
    RequestTooLarge,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
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
KEY_OPTIONS = {"api_key_env": "env", "api_key_secret": "secret", "api_key_parameter": "parameter"}
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
ERROR_SNIPPET = 300


def from_options(name: str, options: Mapping[str, Any], deps: BackendDeps) -> AnthropicBackend:
    opts = Options(name, options, OPTIONS)
    base_url = opts.string("base_url", DEFAULT_BASE_URL) or DEFAULT_BASE_URL
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        raise opts.error("base_url", "is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise opts.error("base_url", "must be an http:// or https:// URL")
    key_fields = [f for f in KEY_OPTIONS if opts.has(f)]
    if len(key_fields) > 1:
        raise opts.error(key_fields[1], f"cannot be given together with '{key_fields[0]}'")
    key = None
    if key_fields:
        field = key_fields[0]
        key = KeySource(name, KEY_OPTIONS[field], str(opts.string(field)), deps)
    root = url.path.rstrip("/")
    if not root.endswith("/v1"):
        root += "/v1"  # base_url is the host (Anthropic's SDK convention), or already ends in /v1
    return AnthropicBackend(
        name,
        url=url.copy_with(path=root + "/messages"),
        count_url=url.copy_with(path=root + "/messages/count_tokens"),
        upstream_model=opts.string("upstream_model", name) or name,
        key=key,
        headers=opts.string_map("headers"),
        beta_flags=BETA_FLAGS | frozenset(opts.string_list("beta_flags")),
        timeout_s=opts.number("timeout_s", 600.0, minimum=0.1),
        max_retries=opts.integer("max_retries", 2, minimum=0, maximum=2),
        deps=deps,
    )


class AnthropicBackend:
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
        self.name = name
        self.url = url
        self.count_url = count_url
        self.upstream_model = upstream_model
        self.beta_flags = beta_flags
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._key = key
        self._headers = headers
        self._deps = deps

    def check(self, request: Conversation) -> None:
        dialect.check(request)

    async def complete(self, request: Conversation, deadline: Deadline) -> Answer:
        deadline = Deadline(min(deadline.at, time.monotonic() + self.timeout_s))
        data = await self._json(self.url, self._body(request, stream=False), request, deadline)
        if isinstance(data, dict) and data.get("type") == "error":
            raise self._in_band_error(data.get("error"))
        try:
            return dialect.answer_from(data)
        except dialect.Garbage as exc:
            raise self._garbage(str(exc)) from None

    async def count_tokens(self, request: Conversation, deadline: Deadline | None = None) -> int:
        """The upstream's own count of the request's input tokens (Anthropic's count_tokens)."""
        deadline = deadline or Deadline(time.monotonic() + self.timeout_s)
        body = self._body(request, stream=False)
        for name in COUNT_DROPPED:
            body.pop(name, None)
        data = await self._json(self.count_url, body, request, deadline)
        count = data.get("input_tokens") if isinstance(data, dict) else None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise self._garbage("a count without input_tokens")
        return count

    async def stream(self, request: Conversation, deadline: Deadline) -> AsyncIterator[Event]:
        response = await self._open(self.url, self._body(request, stream=True), request, deadline)
        try:
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise self._garbage(f"content type {content_type or 'none'!r} instead of an event stream")
            sse, decoder, mapper = SSEParser(), LineDecoder(), dialect.StreamMapper()
            texts = response.aiter_text()
            ended = False
            while not (mapper.stopped or ended):
                # One deadline check per network read; AnswerStream bounds the whole stream.
                if deadline.remaining() <= 0:
                    raise self._timeout()
                try:
                    lines = decoder.decode(await anext(texts))
                except StopAsyncIteration:
                    ended, lines = True, decoder.flush()
                except httpx.HTTPError as exc:
                    raise self._transport_error(exc)[0] from None
                for line in lines:
                    sse_event = sse.feed(line)
                    if sse_event is None:
                        continue
                    step = self._event(sse_event, mapper)
                    if step is not None:
                        yield step
                    if mapper.stopped:
                        break
            if not mapper.stopped:
                raise self._garbage("an event stream that ended without message_stop")
            await drain_to_end(texts, deadline)  # so that the connection is reused
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """The HTTP client is the container's; `BackendDeps.aclose` closes it."""

    # ---- one upstream call, with retries before the first byte ------------------------------

    def _body(self, request: Conversation, *, stream: bool) -> dict[str, Any]:
        body = dialect.request_body(request, model=self.upstream_model)
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body

    async def _headers_for_call(self, request: Conversation) -> httpx.Headers:
        headers = httpx.Headers({"accept": "application/json"})
        headers.update(self._headers)
        headers["content-type"] = "application/json"
        headers["anthropic-version"] = API_VERSION
        flags = dialect.betas(request, self.beta_flags)
        if flags:
            headers["anthropic-beta"] = ",".join(flags)
        if self._key is not None:
            headers["x-api-key"] = await self._key.get()
        return headers

    async def _json(self, url: httpx.URL, body: dict[str, Any], request: Conversation, deadline: Deadline) -> Any:
        response = await self._open(url, body, request, deadline)
        try:
            async with asyncio.timeout(max(deadline.remaining(), 0.0)):
                raw = await response.aread()
        except TimeoutError:
            raise self._timeout() from None
        except httpx.HTTPError as exc:
            raise self._transport_error(exc)[0] from None
        finally:
            await response.aclose()
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self._garbage("a body that is not JSON") from None

    async def _open(
        self, url: httpx.URL, body: dict[str, Any], request: Conversation, deadline: Deadline
    ) -> httpx.Response:
        """The upstream's answer with status 200, its body not read yet."""
        headers = await self._headers_for_call(request)
        content = json.dumps(body).encode()
        client: httpx.AsyncClient = self._deps.http_client()

        async def attempt() -> httpx.Response:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise self._timeout()
            timeout = httpx.Timeout(min(self.timeout_s, remaining))
            call = client.build_request("POST", url, content=content, headers=headers, timeout=timeout)
            try:
                async with asyncio.timeout(remaining):
                    response = await client.send(call, stream=True, follow_redirects=False)
            except TimeoutError:
                raise self._timeout() from None
            except httpx.HTTPError as exc:
                error, retry = self._transport_error(exc)
                raise (Retryable(error) if retry else error) from None
            if response.status_code == 200:
                return response
            try:
                async with asyncio.timeout(max(deadline.remaining(), 0.0)):
                    raw = await response.aread()
            except (TimeoutError, httpx.HTTPError):
                raw = b""
            finally:
                await response.aclose()
            raise self._status_error(response.status_code, response.headers, raw)

        return await with_retries(attempt, max_retries=self.max_retries, deadline=deadline, model=self.name)

    # ---- errors ------------------------------------------------------------------------------

    def _timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"The upstream of model '{self.name}' did not answer in time.", cause="timeout")

    def _garbage(self, what: str) -> UpstreamError:
        return UpstreamError(f"The upstream of model '{self.name}' answered {what}.", cause="malformed")

    def _transport_error(self, exc: httpx.HTTPError) -> tuple[ChatgwError, bool]:
        return transport_error(self.name, exc, self._timeout())

    def _overloaded(self, message: str) -> UpstreamOverloaded:
        return UpstreamOverloaded(f"The upstream of model '{self.name}' is overloaded: {message}", cause="overloaded")

    def _status_error(self, status: int, headers: httpx.Headers, raw: bytes) -> ChatgwError | Retryable:
        message = self._upstream_message(raw)
        if 300 <= status < 400:
            return UpstreamError(
                f"The upstream of model '{self.name}' answered with a redirect (HTTP {status}); "
                "redirects are not followed.",
                cause="redirect",
            )
        if status == 429:
            retry_after = retry_after_seconds(headers)
            limited = UpstreamRateLimited(
                f"The upstream of model '{self.name}' is rate limited: {message or 'HTTP 429'}",
                retry_after=int(retry_after or 1),
                cause="429",
            )
            return Retryable(limited, retry_after)
        if status == OVERLOADED:
            return Retryable(self._overloaded(message or "HTTP 529"), retry_after_seconds(headers))
        if status == 408:
            return Retryable(self._timeout())
        if status in (401, 403):
            return UpstreamError(
                f"The upstream of model '{self.name}' refused the gateway's credentials (HTTP {status}).",
                cause="auth",
            )
        if status == 413:
            return RequestTooLarge(message or "The upstream found the request too large (HTTP 413).")
        if 400 <= status < 500:
            # The upstream's own words, unchanged but scrubbed: Claude Code's recovery reads them.
            return UpstreamRejected(message or f"The upstream rejected the request (HTTP {status}).")
        error = UpstreamError(
            f"The upstream of model '{self.name}' failed (HTTP {status})" + (f": {message}" if message else "."),
            cause="5xx" if status >= 500 else "status",
        )
        return Retryable(error, retry_after_seconds(headers)) if status >= 500 else error

    def _upstream_message(self, raw: bytes) -> str:
        """The `error.message` of an Anthropic error body, else a short snippet."""
        text = raw.decode("utf-8", "replace")
        message = text.strip()[: ERROR_SNIPPET * 4]
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            error = data.get("error", data)
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                message = error["message"]
            elif isinstance(error, str):
                message = error
        return self._scrub(message)

    def _scrub(self, message: str) -> str:
        """An upstream's words without the key, its prefixes, or any configured header value."""
        return scrub(message, [self._key.cached if self._key is not None else None, *self._headers.values()])

    # ---- the answer --------------------------------------------------------------------------

    def _event(self, sse_event: SSEEvent, mapper: dialect.StreamMapper) -> Event | None:
        try:
            data = json.loads(sse_event.data)
        except json.JSONDecodeError:
            raise self._garbage("an event that is not JSON") from None
        if not isinstance(data, dict):
            raise self._garbage("an event that is not an object")
        if data.get("type") == "error" or sse_event.event == "error":
            raise self._in_band_error(data.get("error", data))
        try:
            return mapper.feed(data)
        except dialect.Garbage as exc:
            raise self._garbage(str(exc)) from None

    def _in_band_error(self, error: Any) -> UpstreamError:
        message = error.get("message") if isinstance(error, dict) else error
        text = self._scrub(str(message)) if message else "an error"
        if isinstance(error, dict) and error.get("type") == "overloaded_error":
            return self._overloaded(text)
        return UpstreamError(f"The upstream of model '{self.name}' failed: {text}")
