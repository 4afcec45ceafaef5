"""The `openai` backend: any OpenAI-compatible chat-completions upstream, over the container's one
shared `httpx.AsyncClient`. A chat-door request goes as the client sent it (model and cap the
gateway's); others are translated (`_chat_dialect`). The answer is read into the conversation model,
keeping the upstream's own objects for the chat door."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from chatgw.backends import _chat_dialect as dialect
from chatgw.backends._drain import drain_to_end
from chatgw.backends._options import Options
from chatgw.backends._retry import Retryable, retry_after_seconds, with_retries
from chatgw.backends._scrub import scrub
from chatgw.backends._sse import LineDecoder, SSEEvent, SSEParser
from chatgw.backends._upstream_keys import KeySource
from chatgw.backends.base import BackendDeps
from chatgw.conversation import Answer, Conversation, Event, Usage
from chatgw.deadline import Deadline
from chatgw.errors import (
    ChatgwError,
    UnsupportedParameter,
    UpstreamError,
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
    "timeout_s",
    "max_retries",
    "unsupported_params",
    "token_param",
}
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
"""How the upstream names the output cap: o-series / reasoning models refuse `max_tokens`."""
KEY_OPTIONS = {"api_key_env": "env", "api_key_secret": "secret", "api_key_parameter": "parameter"}
ERROR_SNIPPET = 300


def from_options(name: str, options: Mapping[str, Any], deps: BackendDeps) -> OpenAIBackend:
    opts = Options(name, options, OPTIONS)
    base_url = opts.string("base_url")
    if base_url is None:
        raise opts.error("base_url", "is required (e.g. https://api.openai.com/v1)")
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        raise opts.error("base_url", "is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise opts.error("base_url", "must be an http:// or https:// URL")
    key_fields = [f for f in KEY_OPTIONS if opts.has(f)]
    if len(key_fields) > 1:
        raise opts.error(key_fields[1], f"cannot be given together with '{key_fields[0]}'")
    cap_name = opts.string("token_param", TOKEN_PARAMS[0])
    if cap_name not in TOKEN_PARAMS:
        raise opts.error("token_param", f"must be one of {', '.join(TOKEN_PARAMS)}")
    key = None
    if key_fields:
        field = key_fields[0]
        key = KeySource(name, KEY_OPTIONS[field], str(opts.string(field)), deps)
    return OpenAIBackend(
        name,
        url=url.copy_with(path=url.path.rstrip("/") + "/chat/completions"),
        upstream_model=opts.string("upstream_model", name) or name,
        key=key,
        headers=opts.string_map("headers"),
        timeout_s=opts.number("timeout_s", 120.0, minimum=0.1),
        max_retries=opts.integer("max_retries", 2, minimum=0, maximum=2),
        unsupported=frozenset(opts.string_list("unsupported_params")),
        deps=deps,
        cap_as_completion_tokens=cap_name == TOKEN_PARAMS[1],
    )


class OpenAIBackend:
    kind = "openai"

    def __init__(
        self,
        name: str,
        *,
        url: httpx.URL,
        upstream_model: str,
        key: KeySource | None,
        headers: dict[str, str],
        timeout_s: float,
        max_retries: int,
        unsupported: frozenset[str],
        deps: BackendDeps,
        cap_as_completion_tokens: bool = False,
    ) -> None:
        self.name = name
        self.url = url
        self.upstream_model = upstream_model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._key = key
        self._headers = headers
        self._unsupported = unsupported
        self._deps = deps
        self.cap_as_completion_tokens = cap_as_completion_tokens
        """The catalog's `token_param` is max_completion_tokens: the cap is sent under that name."""

    def check(self, request: Conversation) -> None:
        """Everything passes through (the upstream refuses what it does not know, and that 4xx
        reaches the client), except what the catalog lists in `unsupported_params`."""
        for param in sorted({request.spelled(name) for name in request.given} & self._unsupported):
            raise UnsupportedParameter(
                f"The parameter `{param}` is not supported by the openai backend of model '{request.model}'.",
                param=param,
            )

    async def complete(self, request: Conversation, deadline: Deadline) -> Answer:
        deadline = Deadline(min(deadline.at, time.monotonic() + self.timeout_s))
        response = await self._open(self._body(request, stream=False), deadline)
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
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self._garbage("a body that is not JSON") from None
        if isinstance(data, dict) and "error" in data and "choices" not in data:
            raise self._in_band_error(data["error"])
        try:
            return dialect.answer_from(data)
        except dialect.Garbage as exc:
            raise self._garbage(str(exc)) from None

    async def stream(self, request: Conversation, deadline: Deadline) -> AsyncIterator[Event]:
        response = await self._open(self._body(request, stream=True), deadline)
        try:
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise self._garbage(f"content type {content_type or 'none'!r} instead of an event stream")
            sse = SSEParser()
            decoder = LineDecoder()
            texts = response.aiter_text()
            finished = False
            usage: Usage | None = None
            done = ended = False
            while not (done or ended):
                # The deadline is checked once per network read (every line that came in it is parsed
                # at once); the read itself waits at most httpx's read timeout (set at open, within
                # the deadline), and ChatStream bounds the whole stream by the deadline: a timer per
                # read cost 4 us each, 22 per 20-chunk stream.
                if deadline.remaining() <= 0:
                    raise self._timeout()
                try:
                    lines = decoder.decode(await anext(texts))
                except StopAsyncIteration:
                    ended, lines = True, decoder.flush()
                except httpx.HTTPError as exc:
                    raise self._transport_error(exc)[0] from None
                for line in lines:
                    event = sse.feed(line)
                    if event is None:
                        continue
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
                raise self._garbage("an event stream that ended without [DONE]")
            if usage is not None:
                yield Event(usage=usage)
            if done:
                await drain_to_end(texts, deadline)  # so that the connection is reused
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """The HTTP client is the container's; `BackendDeps.aclose` closes it."""

    # ---- one upstream call, with retries before the first byte ------------------------------

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

    async def _headers_for_call(self) -> httpx.Headers:
        headers = httpx.Headers({"accept": "application/json"})
        headers.update(self._headers)
        headers["content-type"] = "application/json"
        if self._key is not None:
            headers["authorization"] = f"Bearer {await self._key.get()}"
        return headers

    async def _open(self, body: dict[str, Any], deadline: Deadline) -> httpx.Response:
        """The upstream's answer with status 200, its body not read yet."""
        headers = await self._headers_for_call()
        content = json.dumps(body).encode()
        client: httpx.AsyncClient = self._deps.http_client()

        async def attempt() -> httpx.Response:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise self._timeout()
            timeout = httpx.Timeout(min(self.timeout_s, remaining))
            request = client.build_request("POST", self.url, content=content, headers=headers, timeout=timeout)
            try:
                async with asyncio.timeout(remaining):
                    response = await client.send(request, stream=True, follow_redirects=False)
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
        """The error for a failed connection, and whether a new try may help."""
        if isinstance(exc, httpx.TimeoutException):
            if isinstance(exc, httpx.ConnectTimeout):
                timeout = self._timeout()
                timeout.unsent = True
                return timeout, True
            return self._timeout(), False
        what = type(exc).__name__
        error = UpstreamError(
            f"The connection to the upstream of model '{self.name}' failed ({what}).",
            cause="connect",
            unsent=isinstance(exc, httpx.ConnectError),  # no connection: nothing was sent
        )
        return error, isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError)

    def _status_error(self, status: int, headers: httpx.Headers, raw: bytes) -> ChatgwError | Retryable:
        message, param = self._upstream_message(raw)
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
        if status == 408:
            return Retryable(self._timeout())
        if status in (401, 403):
            return UpstreamError(
                f"The upstream of model '{self.name}' refused the gateway's credentials (HTTP {status}).",
                cause="auth",
            )
        if 400 <= status < 500:
            return UpstreamRejected(message or f"The upstream rejected the request (HTTP {status}).", param=param)
        error = UpstreamError(
            f"The upstream of model '{self.name}' failed (HTTP {status})" + (f": {message}" if message else "."),
            cause="5xx" if status >= 500 else "status",
        )
        return Retryable(error, retry_after_seconds(headers)) if status >= 500 else error

    def _upstream_message(self, raw: bytes) -> tuple[str, str | None]:
        """The `error.message` (and `error.param`) of an OpenAI error body, else a short snippet."""
        text = raw.decode("utf-8", "replace")
        message, param = text.strip()[: ERROR_SNIPPET * 4], None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            error = data.get("error", data)
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                message = error["message"]
                param = error.get("param") if isinstance(error.get("param"), str) else None
            elif isinstance(error, str):
                message = error
        return self._scrub(message), param

    def _scrub(self, message: str) -> str:
        """An upstream's words without the key, its prefixes, or any configured header value."""
        return scrub(message, [self._key.cached if self._key is not None else None, *self._headers.values()])

    # ---- the answer --------------------------------------------------------------------------

    def _event(self, event: SSEEvent) -> Event:
        try:
            chunk = json.loads(event.data)
        except json.JSONDecodeError:
            raise self._garbage("an event that is not JSON") from None
        if not isinstance(chunk, dict):
            raise self._garbage("an event that is not a chunk object")
        if event.event == "error" or ("error" in chunk and "choices" not in chunk):
            raise self._in_band_error(chunk.get("error", chunk))
        try:
            return dialect.event_from(chunk)
        except dialect.Garbage as exc:
            raise self._garbage(str(exc)) from None

    def _in_band_error(self, error: Any) -> UpstreamError:
        message = error.get("message") if isinstance(error, dict) else error
        text = self._scrub(str(message)) if message else "an error"
        return UpstreamError(f"The upstream of model '{self.name}' failed: {text}")


parse_usage = dialect.parse_usage
