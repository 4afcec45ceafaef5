"""One call to an HTTP upstream, the same for every dialect that speaks JSON over HTTP (the OpenAI
backends' `_openai_http`, the `anthropic` backend): the catalog's URL and key options, a POST over
the container's `httpx.AsyncClient` with retries before the first byte, reading a JSON body or an
event stream within the deadline, and the errors of the connection and of the HTTP status. A
backend subclasses `Upstream`: it signs its calls its own way and maps the statuses its dialect
gives a meaning of its own."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from chatgw.backends._drain import drain_to_end
from chatgw.backends._options import Options
from chatgw.backends._retry import Retryable, retry_after_seconds, with_retries
from chatgw.backends._scrub import scrub
from chatgw.backends._sse import LineDecoder, SSEEvent, SSEParser
from chatgw.backends._upstream_keys import KeySource
from chatgw.backends.base import BackendDeps
from chatgw.deadline import Deadline
from chatgw.errors import ChatgwError, UpstreamError, UpstreamRateLimited, UpstreamRejected, UpstreamTimeout

KEY_OPTIONS = {"api_key_env": "env", "api_key_secret": "secret", "api_key_parameter": "parameter"}
ERROR_SNIPPET = 300


class Upstream:
    """One upstream endpoint over HTTP: its name, key, configured headers and limits, and the errors
    every HTTP upstream gives. A backend adds how its dialect signs a call (`send`'s headers) and the
    statuses and in-band errors that mean something of their own in it."""

    def __init__(
        self,
        name: str,
        *,
        key: KeySource | None,
        headers: dict[str, str],
        timeout_s: float,
        max_retries: int,
        deps: BackendDeps,
    ) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._key = key
        self._headers = headers
        self._deps = deps

    async def aclose(self) -> None:
        """The HTTP client is the container's; `BackendDeps.aclose` closes it."""

    async def key(self) -> str | None:
        return None if self._key is None else await self._key.get()

    async def send(
        self, url: httpx.URL, body: dict[str, Any], signed: dict[str, str], deadline: Deadline
    ) -> httpx.Response:
        """POST `body` (JSON) with the configured headers and the dialect's own (`signed`): the
        answer with status 200, its body not read yet."""
        headers = httpx.Headers({"accept": "application/json"})
        headers.update(self._headers)
        headers["content-type"] = "application/json"
        headers.update(signed)
        client: httpx.AsyncClient = self._deps.http_client()
        return await post(
            self, client, url, body, headers, deadline, timeout_s=self.timeout_s, max_retries=self.max_retries
        )

    # ---- errors ------------------------------------------------------------------------------

    def timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"The upstream of model '{self.name}' did not answer in time.", cause="timeout")

    def garbage(self, what: str) -> UpstreamError:
        return UpstreamError(f"The upstream of model '{self.name}' answered {what}.", cause="malformed")

    def status_error(self, status: int, headers: httpx.Headers, raw: bytes) -> ChatgwError | Retryable:
        message, param = error_message(raw)
        return status_error(self, status, headers, self.scrub(message), param)

    def in_band_error(self, error: Any) -> UpstreamError:
        """An error the upstream sent inside a 200 answer or stream."""
        return UpstreamError(f"The upstream of model '{self.name}' failed: {self.in_band_message(error)}")

    def in_band_message(self, error: Any) -> str:
        message = error.get("message") if isinstance(error, dict) else error
        return self.scrub(str(message)) if message else "an error"

    def scrub(self, message: str) -> str:
        """An upstream's words without the key, its prefixes, or any configured header value."""
        return scrub(message, [self._key.cached if self._key is not None else None, *self._headers.values()])


# ---- catalog options ---------------------------------------------------------------------------


def http_url(opts: Options, base_url: str) -> httpx.URL:
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        raise opts.error("base_url", "is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise opts.error("base_url", "must be an http:// or https:// URL")
    return url


def key_source(name: str, opts: Options, deps: BackendDeps) -> KeySource | None:
    """The upstream key's source: at most one of `api_key_env`, `api_key_secret`, `api_key_parameter`."""
    fields = [f for f in KEY_OPTIONS if opts.has(f)]
    if len(fields) > 1:
        raise opts.error(fields[1], f"cannot be given together with '{fields[0]}'")
    if not fields:
        return None
    return KeySource(name, KEY_OPTIONS[fields[0]], str(opts.string(fields[0])), deps)


# ---- the call ----------------------------------------------------------------------------------


async def post(
    upstream: Upstream,
    client: httpx.AsyncClient,
    url: httpx.URL,
    body: dict[str, Any],
    headers: httpx.Headers,
    deadline: Deadline,
    *,
    timeout_s: float,
    max_retries: int,
) -> httpx.Response:
    """The upstream's answer with status 200, its body not read yet."""
    content = json.dumps(body).encode()

    async def attempt() -> httpx.Response:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise upstream.timeout()
        timeout = httpx.Timeout(min(timeout_s, remaining))
        request = client.build_request("POST", url, content=content, headers=headers, timeout=timeout)
        try:
            async with asyncio.timeout(remaining):
                response = await client.send(request, stream=True, follow_redirects=False)
        except TimeoutError:
            raise upstream.timeout() from None
        except httpx.HTTPError as exc:
            error, retry = transport_error(upstream, exc)
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
        raise upstream.status_error(response.status_code, response.headers, raw)

    return await with_retries(attempt, max_retries=max_retries, deadline=deadline, model=upstream.name)


async def read_json(upstream: Upstream, response: httpx.Response, deadline: Deadline) -> Any:
    """A 200 answer's body, parsed as JSON, within the deadline."""
    try:
        async with asyncio.timeout(max(deadline.remaining(), 0.0)):
            raw = await response.aread()
    except TimeoutError:
        raise upstream.timeout() from None
    except httpx.HTTPError as exc:
        raise transport_error(upstream, exc)[0] from None
    finally:
        await response.aclose()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise upstream.garbage("a body that is not JSON") from None


class EventReader:
    """An upstream's event stream, read one network read at a time (every line that came in it is
    parsed at once). The deadline is checked once per read; the read itself waits at most httpx's
    read timeout (set at open, within the deadline), and the stream's consumer bounds the whole
    stream by the deadline: a timer per read cost 4 us each, 22 per 20-chunk stream."""

    def __init__(self, upstream: Upstream, response: httpx.Response, deadline: Deadline) -> None:
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise upstream.garbage(f"content type {content_type or 'none'!r} instead of an event stream")
        self._upstream = upstream
        self._deadline = deadline
        self._texts = response.aiter_text()
        self._sse = SSEParser()
        self._decoder = LineDecoder()
        self.ended = False

    async def read(self) -> list[SSEEvent]:
        """The events of the next network read (none, and `ended`, at the end of the body)."""
        if self._deadline.remaining() <= 0:
            raise self._upstream.timeout()
        try:
            lines = self._decoder.decode(await anext(self._texts))
        except StopAsyncIteration:
            self.ended, lines = True, self._decoder.flush()
        except httpx.HTTPError as exc:
            raise transport_error(self._upstream, exc)[0] from None
        events = []
        for line in lines:
            event = self._sse.feed(line)
            if event is not None:
                events.append(event)
        return events

    async def drain(self) -> None:
        """Read what is left, so that the connection is reused."""
        await drain_to_end(self._texts, self._deadline)


# ---- errors ------------------------------------------------------------------------------------


def transport_error(upstream: Upstream, exc: httpx.HTTPError) -> tuple[ChatgwError, bool]:
    """A failed connection as an error, and whether a new try may help. A connection never made is
    `unsent`: the upstream did no work, and the ledger books nothing for it."""
    if isinstance(exc, httpx.TimeoutException):
        timeout = upstream.timeout()
        timeout.unsent = isinstance(exc, httpx.ConnectTimeout)
        return timeout, timeout.unsent
    error = UpstreamError(
        f"The connection to the upstream of model '{upstream.name}' failed ({type(exc).__name__}).",
        cause="connect",
        unsent=isinstance(exc, httpx.ConnectError),
    )
    return error, isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError)


def status_error(
    upstream: Upstream, status: int, headers: httpx.Headers, message: str, param: str | None = None
) -> ChatgwError | Retryable:
    """A status other than 200, as every HTTP upstream means it (`message`: the upstream's own
    words, scrubbed). A dialect maps its own statuses first (Anthropic's 529, 413)."""
    name = upstream.name
    if 300 <= status < 400:
        return UpstreamError(
            f"The upstream of model '{name}' answered with a redirect (HTTP {status}); redirects are not followed.",
            cause="redirect",
        )
    if status == 429:
        retry_after = retry_after_seconds(headers)
        limited = UpstreamRateLimited(
            f"The upstream of model '{name}' is rate limited: {message or 'HTTP 429'}",
            retry_after=int(retry_after or 1),
            cause="429",
        )
        return Retryable(limited, retry_after)
    if status == 408:
        return Retryable(upstream.timeout())
    if status in (401, 403):
        return UpstreamError(
            f"The upstream of model '{name}' refused the gateway's credentials (HTTP {status}).", cause="auth"
        )
    if 400 <= status < 500:
        # The upstream's own words, unchanged but scrubbed: a client's recovery may read them.
        return UpstreamRejected(message or f"The upstream rejected the request (HTTP {status}).", param=param)
    error = UpstreamError(
        f"The upstream of model '{name}' failed (HTTP {status})" + (f": {message}" if message else "."),
        cause="5xx" if status >= 500 else "status",
    )
    return Retryable(error, retry_after_seconds(headers)) if status >= 500 else error


def error_message(raw: bytes) -> tuple[str, str | None]:
    """The `error.message` (and `error.param`) of an error body as OpenAI and Anthropic write it, else
    a short snippet of the body. Not scrubbed: the backend scrubs it with its own secrets."""
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
    return message, param
