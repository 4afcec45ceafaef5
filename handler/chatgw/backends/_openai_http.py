"""What both OpenAI backends share (chat completions and Responses): their catalog options, the
bearer key, OpenAI's error bodies, and the call itself through `_http` (one POST with retries
before the first byte, a JSON body or an event stream, errors that never show the key)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from chatgw.backends import _http as http
from chatgw.backends._options import Options
from chatgw.backends._upstream_keys import KeySource
from chatgw.backends.base import BackendDeps
from chatgw.conversation import Conversation
from chatgw.deadline import Deadline
from chatgw.errors import UnsupportedParameter

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


def transport_options(name: str, opts: Options, deps: BackendDeps, path: str) -> dict[str, Any]:
    """The constructor arguments of `OpenAIHTTP` from validated catalog options; `path` is appended
    to the base URL (`/chat/completions`, `/responses`)."""
    base_url = opts.string("base_url")
    if base_url is None:
        raise opts.error("base_url", "is required (e.g. https://api.openai.com/v1)")
    url = http.http_url(opts, base_url)
    return {
        "url": url.copy_with(path=url.path.rstrip("/") + path),
        "upstream_model": opts.string("upstream_model", name) or name,
        "key": http.key_source(name, opts, deps),
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


class OpenAIHTTP(http.Upstream):
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
        super().__init__(name, key=key, headers=headers, timeout_s=timeout_s, max_retries=max_retries, deps=deps)
        self.url = url
        self.upstream_model = upstream_model
        self._unsupported = unsupported

    def refuse_listed(self, request: Conversation) -> None:
        """Refuse what the catalog lists in `unsupported_params`, by the client's name for it."""
        for param in sorted({request.spelled(name) for name in request.given} & self._unsupported):
            raise UnsupportedParameter(
                f"The parameter `{param}` is not supported by the openai backend of model '{request.model}'.",
                param=param,
            )

    async def read_json(self, body: dict[str, Any], deadline: Deadline) -> Any:
        """A buffered call: the upstream's answer parsed as JSON, within the model's timeout."""
        deadline = Deadline(min(deadline.at, time.monotonic() + self.timeout_s))
        return await http.read_json(self, await self.open(body, deadline), deadline)

    async def open(self, body: dict[str, Any], deadline: Deadline) -> httpx.Response:
        """The upstream's answer with status 200, its body not read yet."""
        key = await self.key()
        return await self.send(self.url, body, {} if key is None else {"authorization": f"Bearer {key}"}, deadline)
