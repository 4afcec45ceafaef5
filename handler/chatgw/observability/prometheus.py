"""`chatgw serve --metrics`: the metrics of `observability/metrics.py` in a Prometheus registry (the official
client library), served at `/metrics` in the Prometheus text format. Not part of the Lambda package."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from chatgw.observability.metrics import ALL, Metric, prometheus_name

SECONDS_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
MILLISECONDS_BUCKETS: tuple[float, ...] = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class PrometheusSink:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._collectors: dict[str, Counter | Histogram] = {}
        for metric in ALL:
            name, labels = prometheus_name(metric), list(metric.labels)
            if metric.unit == "Count" and metric.name != "gen_ai.client.token.usage":
                self._collectors[metric.name] = Counter(name, metric.help, labels, registry=self.registry)
            else:
                buckets = MILLISECONDS_BUCKETS if metric.unit == "Milliseconds" else SECONDS_BUCKETS
                if metric.unit == "Count":  # tokens per request
                    buckets = (16, 64, 256, 1024, 4096, 16384, 65536, 262144)
                self._collectors[metric.name] = Histogram(
                    name, metric.help, labels, buckets=buckets, registry=self.registry
                )

    def emit(self, values: Sequence[tuple[Metric, float]], dimensions: Mapping[str, str]) -> None:
        for metric, value in values:
            collector = self._collectors[metric.name]
            labels = {name: dimensions[name] for name in metric.labels}
            labelled = collector.labels(**labels) if labels else collector
            if isinstance(labelled, Counter):
                labelled.inc(value)
            else:
                labelled.observe(value)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class MetricsEndpoint:
    """An ASGI app answering every GET with the registry in the Prometheus text format."""

    def __init__(self, sink: PrometheusSink) -> None:
        self.sink = sink

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        body = self.sink.text()
        headers = [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
