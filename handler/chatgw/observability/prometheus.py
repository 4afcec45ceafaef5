"""`chatgw serve --metrics`: the metrics of `observability/metrics.py` in a Prometheus registry (the official
client library), served at `/metrics` in the Prometheus text format. Not part of the Lambda package.

The metrics name every model of the catalog with its traffic, which a key limited to some models must
not learn, so `/metrics` answers only a request bearing the metrics token (`Authorization: Bearer`,
compared in constant time): CHATGW_METRICS_TOKEN, else one generated into the state folder's
`metrics-token` (0600). A token rather than a loopback-only port: Prometheus sends one natively
(`authorization.credentials_file`), it works from another host, and a loopback port is still open to
every local user and every container that shares the host's network."""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from chatgw.observability.metrics import ALL, Metric, prometheus_name
from chatgw.settings import private_dir

TOKEN_FILE = "metrics-token"  # noqa: S105 (a file name)

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
    """An ASGI app answering a GET that bears the token with the registry in the Prometheus text
    format, and anything else with 401 and no metric."""

    def __init__(self, sink: PrometheusSink, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the metrics token must be at least 16 characters")
        self.sink = sink
        self._expected = token.encode()

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        presented = next((bytes(v) for k, v in scope.get("headers", ()) if k.lower() == b"authorization"), b"")
        scheme, _, credentials = presented.partition(b" ")
        if not (scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._expected)):
            body = b"metrics need the metrics token: Authorization: Bearer TOKEN\n"
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"www-authenticate", b"Bearer")]
            await _answer(send, 401, headers, body)
            return
        await _answer(send, 200, [(b"content-type", CONTENT_TYPE_LATEST.encode())], self.sink.text())


async def _answer(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def metrics_token(configured: str, state_dir: Path) -> tuple[str, Path | None]:
    """(the token, the file it is kept in): CHATGW_METRICS_TOKEN if set (no file), else the state
    folder's `metrics-token`, generated (0600) on first use and kept across restarts."""
    if configured:
        return configured, None
    path = state_dir / TOKEN_FILE
    if path.exists() and len(kept := path.read_text().strip()) >= 16:
        return kept, path
    private_dir(state_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    os.chmod(path, 0o600)
    return path.read_text().strip(), path


def exposure_warning(host: str) -> str | None:
    """The line `chatgw serve --metrics` prints when it listens beyond this machine."""
    if is_loopback(host):
        return None
    return (
        f"chatgw: warning: --metrics on {host}, not a loopback address: /metrics (every model's traffic) "
        "answers anyone on the network who holds the metrics token; keep it secret, or serve on 127.0.0.1"
    )


def is_loopback(host: str) -> bool:
    """Whether a listening address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
