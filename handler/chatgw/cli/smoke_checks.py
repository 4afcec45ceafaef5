"""The checks of `chatgw smoke` against a live gateway, and how streaming is judged.

Streaming is judged by how the events arrived: spread out over several reads and over a good part
of the stream's time, not all at once at the end (what a buffering hop between the function and the
client produces). A model that produces its whole answer at once (the `echo` development model
without `delay_ms`) cannot show that: when the events arrived together and the whole stream took
about as long as a request that calls no model (the model list), the streaming check is not judged
(through a buffering hop, a paced model's stream takes its generation time): a WARN row with that
reason, and a summary line saying streaming went unchecked (smoke.report). Give smoke a real model,
or echo with `delay_ms`, to judge streaming.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

STREAM_PROMPT = " ".join(f"word{i}" for i in range(1, 25))
SPREAD_SHARE = 0.2
"""Events count as spread out when they arrived over at least this share of the stream's time."""
MIN_GENERATION_S = 0.1
"""A stream that took less than this (or than SPREAD_SHARE of its time) longer than the model list
was produced at once: it cannot show pacing."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    skipped: bool = False


class Skipped(Exception):
    """A check that cannot be judged here; its message says why (not a failure)."""


@dataclass
class StreamTiming:
    """When each SSE event arrived (seconds since the request was sent) and in which read."""

    ttfb: float | None = None
    events: list[tuple[float, int]] = field(default_factory=list)
    total: float = 0.0
    done: bool = False

    @property
    def reads(self) -> int:
        return len({read for _, read in self.events})

    @property
    def span(self) -> float:
        return self.events[-1][0] - self.events[0][0] if self.events else 0.0

    def spread_out(self) -> bool:
        return len(self.events) >= 3 and self.reads >= 3 and self.total > 0 and self.span >= SPREAD_SHARE * self.total


class Smoke:
    def __init__(
        self,
        base_url: str,
        key: str,
        model: str | None,
        client: httpx.Client,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root_of(base_url)
        self.key = key
        self.model = model
        self.client = client
        self.clock = clock
        self.checks: list[Check] = []
        self.calls = 0
        """Completions that reached a backend (what the ledger should hold)."""
        self.models_took: float | None = None
        """Seconds the model list took: a request through the gateway that calls no model."""

    def check(self, name: str, probe: Callable[[], tuple[bool, str]]) -> bool:
        skipped = False
        try:
            ok, detail = probe()
        except httpx.HTTPError as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        except Skipped as skip:
            ok, detail, skipped = True, str(skip), True
        self.checks.append(Check(name, ok, detail, skipped))
        return ok

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {key or self.key}"}

    def run(self) -> list[Check]:
        self.check("health", self.health)
        self.check("model list", self.models)
        if self.model is None:
            return self.checks
        self.check("buffered completion", self.buffered)
        self.check("streamed completion", self.streamed)
        self.check("bad key is a 401 envelope", self.bad_key)
        return self.checks

    def health(self) -> tuple[bool, str]:
        r = self.client.get(f"{self.root}/health")
        return r.status_code == 200, f"HTTP {r.status_code}"

    def models(self) -> tuple[bool, str]:
        start = self.clock()
        r = self.client.get(f"{self.root}/v1/models", headers=self.headers())
        self.models_took = self.clock() - start
        if r.status_code != 200:
            return False, f"HTTP {r.status_code}: {_message(r)}"
        ids = [m.get("id") for m in r.json().get("data", [])]
        if not ids:
            return False, "no model this key may use"
        if self.model is None:
            self.model = ids[0]
        elif self.model not in ids:
            return False, f"{self.model!r} not among {', '.join(map(str, ids))}"
        return True, f"{len(ids)} model(s): {', '.join(map(str, ids[:5]))}"

    def chat(self, **extra: Any) -> dict[str, Any]:
        return {"model": self.model, "messages": [{"role": "user", "content": STREAM_PROMPT}], **extra}

    def buffered(self) -> tuple[bool, str]:
        r = self.client.post(f"{self.root}/v2/llms/chat/completions", headers=self.headers(), json=self.chat())
        request_id = r.headers.get("x-request-id")
        if r.status_code != 200:
            return False, f"HTTP {r.status_code}: {_message(r)}"
        self.calls += 1
        body = r.json()
        content = (body.get("choices") or [{}])[0].get("message", {}).get("content")
        if body.get("object") != "chat.completion" or not content:
            return False, "not a chat.completion with content"
        if not request_id:
            return False, "no x-request-id header"
        return True, f"{body.get('usage', {}).get('total_tokens', '?')} tokens, x-request-id {request_id}"

    def streamed(self) -> tuple[bool, str]:
        body = self.chat(stream=True, stream_options={"include_usage": True})
        timing = StreamTiming()
        start = self.clock()
        url = f"{self.root}/v2/llms/chat/completions"
        with self.client.stream("POST", url, headers=self.headers(), json=body) as r:
            if r.status_code != 200:
                r.read()
                return False, f"HTTP {r.status_code}: {_message(r)}"
            self.calls += 1
            if not r.headers.get("content-type", "").startswith("text/event-stream"):
                return False, f"content-type {r.headers.get('content-type')}"
            for read, event in _events(r.iter_raw()):
                now = self.clock() - start
                timing.ttfb = now if timing.ttfb is None else timing.ttfb
                if event == "[DONE]":
                    timing.done = True
                elif event.startswith("{"):
                    timing.events.append((now, read))
        timing.total = self.clock() - start
        summary = (
            f"TTFB {_ms(timing.ttfb)}, {len(timing.events)} chunks in {timing.reads} reads "
            f"over {_ms(timing.span)} of {_ms(timing.total)}"
        )
        if not timing.done:
            return False, f"no [DONE]; {summary}"
        if not timing.spread_out():
            self.skip_if_unpaced(timing, summary)
            return False, f"chunks arrived together (buffered on the way?): {summary}"
        return True, f"spread out: {summary}"

    def skip_if_unpaced(self, timing: StreamTiming, summary: str) -> None:
        """Raise `Skipped` when the model produced its answer at once: the stream took, beyond the
        model list's time, less than a spread-out stream of its length needs."""
        if self.models_took is None:
            return  # not measured: judged as a stream (a failure if together)
        generation = max(0.0, timing.total - self.models_took)
        if generation >= max(MIN_GENERATION_S, SPREAD_SHARE * timing.total):
            return
        hint = "echo without delay_ms writes all its words at once; " if self.model == "echo" else ""
        raise Skipped(
            f"the model cannot show streaming pacing: the stream took {_ms(timing.total)}, the model list "
            f"{_ms(self.models_took)} ({hint}use --model with a real model, or echo with delay_ms); {summary}"
        )

    def bad_key(self) -> tuple[bool, str]:
        wrong = "cgw_smoketest0000_" + "x" * 33
        r = self.client.post(f"{self.root}/v2/llms/chat/completions", headers=self.headers(wrong), json=self.chat())
        try:
            error = r.json().get("error", {})
        except json.JSONDecodeError:
            error = {}
        envelope = error.get("type") == "authentication_error"
        ok = r.status_code == 401 and envelope and bool(r.headers.get("x-request-id"))
        return ok, f"HTTP {r.status_code} {error.get('type', 'no error envelope')}"


def _events(raw: Iterator[bytes]) -> Iterator[tuple[int, str]]:
    """SSE `data:` payloads with the number of the read that completed them."""
    buffer = b""
    for read, chunk in enumerate(raw):
        buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            for line in block.decode(errors="replace").splitlines():
                if line.startswith("data:"):
                    yield read, line[5:].strip()


def root_of(base_url: str) -> str:
    """The gateway's root from what users hold: `.../v2/llms` (OpenAIBaseUrl), `.../v1`, or the root."""
    url = base_url.rstrip("/")
    for suffix in ("/v2/llms", "/v1"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error", {}).get("message", ""))[:200]
    except (json.JSONDecodeError, AttributeError):
        return r.text[:200]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"
