"""The gateway's metrics: what is measured (one table, which the stack's dashboard and alarms are
checked against) and where it goes: CloudWatch EMF lines (Powertools' metrics provider), a
Prometheus registry (`chatgw serve --metrics`), or nowhere. Never a key id as a dimension."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Unit = Literal["Count", "Seconds", "Milliseconds"]
NAMESPACE = "chatgw"


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    unit: Unit
    dimension_sets: tuple[tuple[str, ...], ...]
    """Every set is published (EMF); their union gives the Prometheus labels."""
    help: str

    @property
    def labels(self) -> tuple[str, ...]:
        """Every dimension of the metric (the Prometheus labels), in the order they first appear."""
        return tuple(dict.fromkeys(name for dims in self.dimension_sets for name in dims))


REQUEST_SETS = ((), ("outcome",), ("door", "outcome"), ("model", "backend", "outcome"))
"""`door`: the front door a request came through (chat, messages, responses)."""
REQUESTS = Metric("chatgw.requests", "Count", REQUEST_SETS, "finished chat requests, by outcome")
SERVER_ERRORS = Metric(
    "chatgw.server_errors", "Count", REQUEST_SETS, "1 for a chat request answered 5xx (or failed mid-stream), else 0"
)
DURATION = Metric("gen_ai.client.operation.duration", "Seconds", REQUEST_SETS, "time from request to the answer's end")
TIME_TO_FIRST_CHUNK = Metric(
    "gen_ai.client.operation.time_to_first_chunk", "Seconds", REQUEST_SETS, "time to the first streamed token"
)
TOKENS = Metric(
    "gen_ai.client.token.usage",
    "Count",
    (("token_type",), ("door", "token_type"), ("model", "backend", "token_type")),
    "tokens per request (token_type: input, output, cached)",
)
FALLBACKS = Metric("chatgw.fallbacks", "Count", ((), ("model",)), "requests served by a fallback of `model`")
REFUSALS = Metric(
    "chatgw.refusals",
    "Count",
    ((), ("reason",)),
    "requests refused: auth, permission, rate, tokens, budget, concurrent, invalid",
)
UPSTREAM_ERRORS = Metric(
    "chatgw.upstream.errors", "Count", ((), ("backend", "cause")), "failed backend calls (after retries)"
)
STORE_SETS = ((), ("operation",))
STORE_ERRORS = Metric("chatgw.store.errors", "Count", STORE_SETS, "store calls that failed")
STORE_DURATION = Metric("chatgw.store.duration", "Milliseconds", STORE_SETS, "store call time")

ALL: tuple[Metric, ...] = (
    REQUESTS,
    SERVER_ERRORS,
    DURATION,
    TIME_TO_FIRST_CHUNK,
    TOKENS,
    FALLBACKS,
    REFUSALS,
    UPSTREAM_ERRORS,
    STORE_ERRORS,
    STORE_DURATION,
)
REFUSAL_REASONS = ("auth", "permission", "rate", "tokens", "budget", "concurrent", "invalid")
OUTCOMES = (
    "ok",
    "client_closed",
    "invalid",
    "auth",
    "permission",
    "rate_limited",
    "upstream_error",
    "upstream_timeout",
    "store_unavailable",
    "internal_error",
)


class Sink(Protocol):
    def emit(self, values: Sequence[tuple[Metric, float]], dimensions: Mapping[str, str]) -> None:
        """Publish values of metrics that share their dimension sets; `dimensions` holds a value
        for every name in those sets."""


class NullSink:
    def emit(self, values: Sequence[tuple[Metric, float]], dimensions: Mapping[str, str]) -> None:
        return None


class FanOut:
    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = list(sinks)

    def emit(self, values: Sequence[tuple[Metric, float]], dimensions: Mapping[str, str]) -> None:
        for sink in self.sinks:
            sink.emit(values, dimensions)


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class EmfSink:
    """One CloudWatch embedded-metric-format JSON line per `emit`, built by Powertools'
    `EphemeralMetrics` (no state shared between requests) and written with `write` (stderr, beside
    the JSON logs: Lambda sends both to the function's log group, where CloudWatch extracts the
    metrics; `chatgw invoke` keeps stdout for the response)."""

    def __init__(self, namespace: str = NAMESPACE, write: Callable[[str], None] = _stderr) -> None:
        from aws_lambda_powertools.metrics import EphemeralMetrics

        self._metrics = EphemeralMetrics
        self.namespace = namespace
        self.write = write

    def emit(self, values: Sequence[tuple[Metric, float]], dimensions: Mapping[str, str]) -> None:
        import json

        if not values:
            return
        sets = values[0][0].dimension_sets
        metrics = self._metrics(namespace=self.namespace, service=None)
        for name in sets[0]:
            metrics.add_dimension(name=name, value=dimensions[name])
        for extra in sets[1:]:
            metrics.add_dimensions(**{name: dimensions[name] for name in extra})
        for metric, value in values:
            metrics.add_metric(name=metric.name, unit=metric.unit, value=value)
        blob: dict[str, Any] = dict(metrics.serialize_metric_set())
        metrics.clear_metrics()
        self.write(json.dumps(blob, separators=(",", ":")))


def prometheus_name(metric: Metric) -> str:
    base = metric.name.replace(".", "_")
    if metric.unit == "Seconds":
        return f"{base}_seconds"
    if metric.unit == "Milliseconds":
        return f"{base}_milliseconds"
    return base
