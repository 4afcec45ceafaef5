"""What an operator sees of each request: one `completion` log line when it has finished, a `refused`
line for every refusal, an `upstream_error` line for every failed backend call, a `store_error` line
(ERROR) for every failed store call, and the metrics of `observability/metrics.py`.

Fed through a `Report` that travels with the request (the HTTP layer opens and closes it, the
service fills it in); backends and stores never see it. Never a key, a secret or a prompt: the key
id only, and error codes and cause classes rather than upstream messages."""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from chatgw.access.keys import KEY_PATTERN
from chatgw.errors import ChatgwError, UpstreamRateLimited, UpstreamRejected, UpstreamTimeout
from chatgw.observability import logs
from chatgw.observability.metrics import (
    DURATION,
    FALLBACKS,
    REFUSALS,
    REQUESTS,
    SERVER_ERRORS,
    STORE_DURATION,
    STORE_ERRORS,
    TIME_TO_FIRST_CHUNK,
    TOKENS,
    UPSTREAM_ERRORS,
    Metric,
    NullSink,
    Sink,
)
from chatgw.store.base import UsageEvent

SCOPE_KEY = "chatgw.report"
MODEL_LOG_LIMIT = 100
"""A requested model name is the client's string: logged, but cut to this length."""
NONE = "none"
"""The dimension value of a model or backend a request never reached."""
STATUS_OUTCOMES = {
    400: "invalid",
    401: "auth",
    403: "permission",
    404: "invalid",
    405: "invalid",
    413: "invalid",
    429: "rate_limited",
    502: "upstream_error",
    503: "store_unavailable",
    504: "upstream_timeout",
}
SERVER_OUTCOMES = frozenset({"upstream_error", "upstream_timeout", "store_unavailable", "internal_error"})
LIMIT_REASONS = {"requests": "rate", "tokens": "tokens", "budget": "budget", "concurrent": "concurrent"}


@dataclass(slots=True)
class Report:
    """One request, as it goes."""

    request_id: str
    path: str = ""
    lambda_request_id: str | None = None
    chat: bool = False
    door: str | None = None
    """The front door of the request (`door_of` its path): chat, messages, responses; None elsewhere."""
    key_id: str | None = None
    model: str | None = None
    """The model the client asked for."""
    catalog_model: str | None = None
    """The catalog's model it resolved to (None: the request never got that far)."""
    served_model: str | None = None
    backend: str | None = None
    status: int | None = None
    code: str | None = None
    usage_status: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    estimated: bool = False
    latency_ms: int | None = None
    ttft_ms: int | None = None
    streamed: bool = False
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def of_scope(cls, scope: MutableMapping[str, Any], request_id: str) -> Report:
        """The report of an ASGI request, made on first use."""
        report = scope.get(SCOPE_KEY)
        if not isinstance(report, Report):
            path, context = str(scope.get("path", "")), scope.get("aws.context")
            lambda_id = getattr(context, "aws_request_id", None)
            door = door_of(path)
            report = scope[SCOPE_KEY] = cls(request_id, path, lambda_id, chat=door is not None, door=door)
        return report

    def claimed(self, presented: str | None) -> None:
        """The key id of a presented key that parses (its public part; the secret is not kept)."""
        match = KEY_PATTERN.match(presented or "")
        self.key_id = match.group(1) if match else None

    def asked(self, model: str, streamed: bool) -> None:
        self.model, self.streamed = model[:MODEL_LOG_LIMIT], streamed

    def resolved(self, model: str, backend: str) -> None:
        self.catalog_model, self.backend = model, backend

    def metered(self, event: UsageEvent, served_model: str) -> None:
        self.served_model, self.backend = served_model, event.backend
        self.usage_status = event.status
        self.prompt_tokens, self.completion_tokens = event.prompt_tokens, event.completion_tokens
        self.cached_tokens = event.cached_tokens
        self.estimated = event.estimated
        self.latency_ms, self.ttft_ms = event.latency_ms, event.ttft_ms

    @property
    def fallback(self) -> bool:
        return None not in (self.served_model, self.catalog_model) and self.served_model != self.catalog_model

    @property
    def client_closed(self) -> bool:
        return self.usage_status == "client_closed"

    def outcome(self) -> str:
        if self.client_closed:
            return "client_closed"
        status = self.status or 500
        if status < 400:
            if self.usage_status != "error":
                return "ok"
            return "upstream_timeout" if self.code == "upstream_timeout" else "upstream_error"  # failed mid-stream
        return STATUS_OUTCOMES.get(status, "invalid" if status < 500 else "internal_error")

    def dimensions(self, **extra: str) -> dict[str, str]:
        model = self.served_model or self.catalog_model or NONE
        return {"model": model, "backend": self.backend or NONE, "door": self.door or NONE, **extra}


DOOR_PATHS = (("/chat/completions", "chat"), ("/v1/messages", "messages"), ("/responses", "responses"))


def door_of(path: str) -> str | None:
    """The front door a path belongs to: the answer routes of each door (a model list is none)."""
    for suffix, door in DOOR_PATHS:
        if path.endswith(suffix):
            return door
    return None


def refusal_reason(error: ChatgwError) -> str | None:
    """auth, permission, rate, tokens, budget, concurrent or invalid; None when it is not the gateway refusing."""
    if isinstance(error, UpstreamRejected | UpstreamRateLimited):
        return None
    if error.status == 401:
        return "auth"
    if error.status == 403:
        return "permission"
    if error.status == 429:
        return LIMIT_REASONS.get(error.cause or "", "rate")
    if 400 <= error.status < 500:
        return "invalid"
    return None


def cause_of(error: BaseException) -> str:
    """The class of an upstream failure: the backend's tag, else what the error type says."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, str) and cause:
        return cause
    if isinstance(error, UpstreamTimeout | TimeoutError):
        return "timeout"
    if isinstance(error, UpstreamRateLimited):
        return "429"
    if isinstance(error, ChatgwError):
        return "error"
    return "backend_bug"


class Observer:
    def __init__(
        self,
        sink: Sink | None = None,
        *,
        sample_rate: float = 1.0,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink: Sink = sink if sink is not None else NullSink()
        self.sample_rate = sample_rate
        self._rng = rng
        self._clock = clock

    def _emit(self, values: list[tuple[Metric, float]], dimensions: dict[str, str]) -> None:
        try:
            self.sink.emit(values, dimensions)
        except Exception as exc:  # metrics must never fail a request
            logs.event("metrics_failed", logging.ERROR, error_type=type(exc).__name__)

    # during the request -------------------------------------------------------------------

    def refused(self, report: Report | None, error: ChatgwError, path: str) -> None:
        reason = refusal_reason(error)
        fields: dict[str, Any] = {"path": path, "status": error.status, "code": error.code, "reason": reason}
        if report is not None:
            report.status, report.code = error.status, error.code
            fields |= {"request_id": report.request_id, "key_id": report.key_id, "model": report.model}
        logs.event("refused", logging.WARNING if error.status >= 500 else logging.INFO, **fields)
        if reason is not None:
            self._emit([(REFUSALS, 1)], {"reason": reason})

    def upstream_failed(
        self, report: Report, model: str, backend: str, error: BaseException, *, falling_back: bool
    ) -> None:
        if isinstance(error, UpstreamRejected):  # the upstream works: it refused the client's request
            return
        cause = cause_of(error)
        logs.event(
            "upstream_error",
            logging.WARNING,
            request_id=report.request_id,
            model=model,
            backend=backend,
            cause=cause,
            code=getattr(error, "code", None),
            error_type=type(error).__name__,
            fallback=falling_back,
        )
        self._emit([(UPSTREAM_ERRORS, 1)], {"backend": backend, "cause": cause})
        if falling_back:
            self._emit([(FALLBACKS, 1)], {"model": report.catalog_model or model})

    @contextlib.contextmanager
    def store_call(self, operation: str, request_id: str | None = None) -> Iterator[None]:
        """Times a store call; a failure is logged at ERROR (the store raises, the caller decides)."""
        started = self._clock()
        failed = False
        try:
            yield
        except Exception as exc:
            failed = True
            logs.event(
                "store_error",
                logging.ERROR,
                request_id=request_id,
                operation=operation,
                error_type=type(exc).__name__,
                code=getattr(exc, "code", None),
            )
            raise
        finally:
            elapsed_ms = (self._clock() - started) * 1000
            self._emit([(STORE_DURATION, round(elapsed_ms, 3)), (STORE_ERRORS, int(failed))], {"operation": operation})

    # at the end ---------------------------------------------------------------------------

    def finish(self, report: Report) -> None:
        """The `completion` line and the request's metrics. Successful lines are sampled
        (CHATGW_LOG_SAMPLE_RATE); every other line is written."""
        if not report.chat:
            return
        outcome = report.outcome()
        if report.latency_ms is None:
            report.latency_ms = int((self._clock() - report.started) * 1000)
        if outcome != "ok" or self.sample_rate >= 1.0 or self._rng() < self.sample_rate:
            logs.event("completion", logging.WARNING if outcome in SERVER_OUTCOMES else logging.INFO, **line(report))
        values: list[tuple[Metric, float]] = [
            (REQUESTS, 1),
            (SERVER_ERRORS, int(outcome in SERVER_OUTCOMES)),
            (DURATION, report.latency_ms / 1000),
        ]
        if report.ttft_ms is not None:
            values.append((TIME_TO_FIRST_CHUNK, report.ttft_ms / 1000))
        self._emit(values, report.dimensions(outcome=outcome))
        for token_type, count in (
            ("input", report.prompt_tokens),
            ("output", report.completion_tokens),
            ("cached", report.cached_tokens),
        ):
            if count:
                self._emit([(TOKENS, count)], report.dimensions(token_type=token_type))


def line(report: Report) -> dict[str, Any]:
    """The fields of the `completion` log line."""
    return {
        "request_id": report.request_id,
        "lambda_request_id": report.lambda_request_id,
        "key_id": report.key_id,
        "path": report.path,
        "door": report.door,
        "model": report.model,
        "served_model": report.served_model,
        "backend": report.backend,
        "status": report.status,
        "code": report.code,
        "outcome": report.outcome(),
        "prompt_tokens": report.prompt_tokens,
        "completion_tokens": report.completion_tokens,
        "cached_tokens": report.cached_tokens,
        "estimated": report.estimated,
        "latency_ms": report.latency_ms,
        "ttft_ms": report.ttft_ms,
        "streamed": report.streamed,
        "fallback": report.fallback,
        "client_closed": report.client_closed,
    }
