"""The transport both OpenAI backends share (chat completions and Responses): catalog options, one
POST over the container's `httpx.AsyncClient` with retries before the first byte, the upstream key,
the deadline, reading a JSON body or an event stream, and errors that never show the key."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from chatgw.backends._drain import drain_to_end
from chatgw.backends._options import Options
from chatgw.backends._retry import Retryable, retry_after_seconds, with_retries
from chatgw.backends._scrub import scrub
from chatgw.backends._sse import LineDecoder, SSEEvent, SSEParser
from chatgw.backends._upstream_keys import KeySource
from chatgw.backends.base import BackendDeps
from chatgw.conversation import Conversation
from chatgw.deadline import Deadline
from chatgw.errors import (
    ChatgwError,
    UnsupportedParameter,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)

COMMON_OPTIONS = {
    "base_url",
    "upstream_model",
    "api_key_env",
    "api_key_secret",
    "api_key_parameter",
    "headers",
    "timeout_s",
    "max_retries",
    "unsupported_params",
    "api",
}
APIS = ("chat", "responses")
"""The catalog's `api`: which OpenAI API the upstream speaks (chat completions by default)."""
KEY_OPTIONS = {"api_key_env": "env", "api_key_secret": "secret", "api_key_parameter": "parameter"}
ERROR_SNIPPET = 300


def transport_options(name: str, opts: Options, deps: BackendDeps, path: str) -> dict[str, Any]:
    """The constructor arguments of `OpenAIHTTP` from validated catalog options; `path` is appended
    to the base URL (`/chat/completions`, `/responses`)."""
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
    key = None
    if key_fields:
        field = key_fields[0]
        key = KeySource(name, KEY_OPTIONS[field], str(opts.string(field)), deps)
    return {
        "url": url.copy_with(path=url.path.rstrip("/") + path),
        "upstream_model": opts.string("upstream_model", name) or name,
        "key": key,
        "headers": opts.string_map("headers"),
        "timeout_s": opts.number("timeout_s", 120.0, minimum=0.1),
        "max_retries": opts.integer("max_retries", 2, minimum=0, maximum=2),
        "unsupported": frozenset(opts.string_list("unsupported_params")),
        "deps": deps,
    }


def api_of(name: str, options: Mapping[str, Any]) -> str:
    api = options.get("api", APIS[0])
    if api not in APIS:
        raise Options(name, {}, set()).error("api", f"must be one of {', '.join(APIS)}")
    return str(api)


class EventReader:
    """An upstream's event stream, read one network read at a time (every line that came in it is
    parsed at once). The deadline is checked once per read; the read itself waits at most httpx's
    read timeout (set at open, within the deadline), and the stream's consumer bounds the whole
    stream by the deadline: a timer per read cost 4 us each, 22 per 20-chunk stream."""

    def __init__(self, backend: OpenAIHTTP, response: httpx.Response, deadline: Deadline) -> None:
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise backend.garbage(f"content type {content_type or 'none'!r} instead of an event stream")
        self._backend = backend
        self._deadline = deadline
        self._texts = response.aiter_text()
        self._sse = SSEParser()
        self._decoder = LineDecoder()
        self.ended = False

    async def read(self) -> list[SSEEvent]:
        """The events of the next network read (none, and `ended`, at the end of the body)."""
        if self._deadline.remaining() <= 0:
            raise self._backend.timeout()
        try:
            lines = self._decoder.decode(await anext(self._texts))
        except StopAsyncIteration:
            self.ended, lines = True, self._decoder.flush()
        except httpx.HTTPError as exc:
            raise self._backend.transport_error(exc)[0] from None
        events = []
        for line in lines:
            event = self._sse.feed(line)
            if event is not None:
                events.append(event)
        return events

    async def drain(self) -> None:
        """Read what is left, so that the connection is reused."""
        await drain_to_end(self._texts, self._deadline)


class OpenAIHTTP:
    """One OpenAI-compatible endpoint: what both OpenAI backends do the same way."""

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

    def refuse_listed(self, request: Conversation) -> None:
        """Refuse what the catalog lists in `unsupported_params`, by the client's name for it."""
        for param in sorted({request.spelled(name) for name in request.given} & self._unsupported):
            raise UnsupportedParameter(
                f"The parameter `{param}` is not supported by the openai backend of model '{request.model}'.",
                param=param,
            )

    async def aclose(self) -> None:
        """The HTTP client is the container's; `BackendDeps.aclose` closes it."""

    async def read_json(self, body: dict[str, Any], deadline: Deadline) -> Any:
        """A buffered call: the upstream's answer parsed as JSON, within the model's timeout."""
        deadline = Deadline(min(deadline.at, time.monotonic() + self.timeout_s))
        response = await self.open(body, deadline)
        try:
            async with asyncio.timeout(max(deadline.remaining(), 0.0)):
                raw = await response.aread()
        except TimeoutError:
            raise self.timeout() from None
        except httpx.HTTPError as exc:
            raise self.transport_error(exc)[0] from None
        finally:
            await response.aclose()
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self.garbage("a body that is not JSON") from None

    async def _headers_for_call(self) -> httpx.Headers:
        headers = httpx.Headers({"accept": "application/json"})
        headers.update(self._headers)
        headers["content-type"] = "application/json"
        if self._key is not None:
            headers["authorization"] = f"Bearer {await self._key.get()}"
        return headers

    async def open(self, body: dict[str, Any], deadline: Deadline) -> httpx.Response:
        """The upstream's answer with status 200, its body not read yet."""
        headers = await self._headers_for_call()
        content = json.dumps(body).encode()
        client: httpx.AsyncClient = self._deps.http_client()

        async def attempt() -> httpx.Response:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise self.timeout()
            timeout = httpx.Timeout(min(self.timeout_s, remaining))
            request = client.build_request("POST", self.url, content=content, headers=headers, timeout=timeout)
            try:
                async with asyncio.timeout(remaining):
                    response = await client.send(request, stream=True, follow_redirects=False)
            except TimeoutError:
                raise self.timeout() from None
            except httpx.HTTPError as exc:
                error, retry = self.transport_error(exc)
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

    def timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"The upstream of model '{self.name}' did not answer in time.", cause="timeout")

    def garbage(self, what: str) -> UpstreamError:
        return UpstreamError(f"The upstream of model '{self.name}' answered {what}.", cause="malformed")

    def transport_error(self, exc: httpx.HTTPError) -> tuple[ChatgwError, bool]:
        return transport_error(self.name, exc, self.timeout())

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
            return Retryable(self.timeout())
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
        return self.scrub(message), param

    def scrub(self, message: str) -> str:
        """An upstream's words without the key, its prefixes, or any configured header value."""
        return scrub(message, [self._key.cached if self._key is not None else None, *self._headers.values()])

    def in_band_error(self, error: Any) -> UpstreamError:
        message = error.get("message") if isinstance(error, dict) else error
        text = self.scrub(str(message)) if message else "an error"
        return UpstreamError(f"The upstream of model '{self.name}' failed: {text}")


def transport_error(name: str, exc: httpx.HTTPError, timeout: UpstreamTimeout) -> tuple[ChatgwError, bool]:
    """An HTTP upstream's failed connection as an error, and whether a new try may help. A connection
    never made is `unsent`: the upstream did no work, and the ledger books nothing for it."""
    if isinstance(exc, httpx.TimeoutException):
        timeout.unsent = isinstance(exc, httpx.ConnectTimeout)
        return timeout, timeout.unsent
    error = UpstreamError(
        f"The connection to the upstream of model '{name}' failed ({type(exc).__name__}).",
        cause="connect",
        unsent=isinstance(exc, httpx.ConnectError),
    )
    return error, isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError)
