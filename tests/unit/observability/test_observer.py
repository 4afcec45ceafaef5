"""The observer's rules on their own: sampling, outcomes, refusal reasons, cause classes, sinks."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chatgw.errors import (
    AuthenticationFailed,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from chatgw.observability import logs
from chatgw.observability.metrics import ALL, REQUESTS, EmfSink, Metric
from chatgw.observability.observer import Observer, Report, cause_of, refusal_reason
from chatgw.observability.prometheus import PrometheusSink, exposure_warning, metrics_token
from chatgw.settings import Settings, SettingsError
from tests.support.servers import free_port, stop, wait_healthy


class Recorder:
    def __init__(self) -> None:
        self.emitted: list[tuple[list[tuple[Metric, float]], dict[str, str]]] = []

    def emit(self, values: Any, dimensions: Any) -> None:
        self.emitted.append((list(values), dict(dimensions)))


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    found: list[dict[str, Any]] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(json.loads(logs.JsonFormatter().format(record)))

    logger = logging.getLogger(logs.LOGGER_NAME)
    handler, level = Handler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield found
    logger.removeHandler(handler)
    logger.setLevel(level)


def finished(status: int, **fields: Any) -> Report:
    report = Report("rid", "/v1/chat/completions", chat=True, status=status, **fields)
    return report


def test_successful_lines_are_sampled_and_every_other_line_is_written(lines: list[dict[str, Any]]) -> None:
    recorder = Recorder()
    observer = Observer(recorder, sample_rate=0.25, rng=iter([0.5, 0.1, 0.9]).__next__)
    observer.finish(finished(200))  # 0.5: not sampled
    observer.finish(finished(200))  # 0.1: sampled
    observer.finish(finished(502))  # errors always (no draw)
    observer.finish(finished(429))
    assert [line["status"] for line in lines] == [200, 502, 429]
    assert len([e for e in recorder.emitted if e[0][0][0] is REQUESTS]) == 4  # metrics are never sampled


@pytest.mark.parametrize(
    ("report", "outcome"),
    [
        (finished(200), "ok"),
        (finished(200, usage_status="client_closed"), "client_closed"),
        (finished(200, usage_status="error"), "upstream_error"),
        (finished(200, usage_status="error", code="upstream_timeout"), "upstream_timeout"),
        (finished(400), "invalid"),
        (finished(413), "invalid"),
        (finished(401), "auth"),
        (finished(403), "permission"),
        (finished(429), "rate_limited"),
        (finished(502), "upstream_error"),
        (finished(503), "store_unavailable"),
        (finished(504), "upstream_timeout"),
        (finished(500), "internal_error"),
    ],
)
def test_outcomes(report: Report, outcome: str) -> None:
    assert report.outcome() == outcome


def test_refusal_reasons() -> None:
    assert refusal_reason(AuthenticationFailed("x")) == "auth"
    assert refusal_reason(PermissionDenied("x")) == "permission"
    assert refusal_reason(InvalidRequest("x")) == "invalid"
    assert refusal_reason(RateLimited("x", retry_after=1, cause="requests")) == "rate"
    assert refusal_reason(RateLimited("x", retry_after=1, cause="tokens")) == "tokens"
    assert refusal_reason(RateLimited("x", retry_after=1, cause="budget")) == "budget"
    assert refusal_reason(RateLimited("x", retry_after=1, cause="concurrent")) == "concurrent"
    assert refusal_reason(UpstreamRateLimited("x", retry_after=1)) is None  # the upstream's, not ours
    assert refusal_reason(UpstreamRejected("x")) is None
    assert refusal_reason(UpstreamError("x")) is None


def test_cause_classes() -> None:
    assert cause_of(UpstreamError("x", cause="connect")) == "connect"
    assert cause_of(UpstreamTimeout("x")) == "timeout"
    assert cause_of(UpstreamRateLimited("x", retry_after=1)) == "429"
    assert cause_of(UpstreamError("x")) == "error"
    assert cause_of(KeyError("x")) == "backend_bug"


def test_every_metric_has_a_detailed_set_without_a_key_id() -> None:
    for metric in ALL:
        assert metric.dimension_sets and all("key_id" not in s and "key" not in s for s in metric.dimension_sets)


def test_emf_line_is_one_json_object_with_every_dimension_set() -> None:
    written: list[str] = []
    EmfSink(write=written.append).emit([(REQUESTS, 1)], {"outcome": "ok", "model": "m", "backend": "b", "door": "chat"})
    (line,) = written
    blob = json.loads(line)
    assert blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        [],
        ["outcome"],
        ["door", "outcome"],
        ["model", "backend", "outcome"],
    ]
    assert blob["chatgw.requests"] == [1.0] and "service" not in blob


def test_prometheus_sink_text() -> None:
    sink = PrometheusSink()
    Observer(sink).finish(finished(200, catalog_model="echo", backend="echo", prompt_tokens=3, completion_tokens=2))
    text = sink.text().decode()
    assert 'chatgw_requests_total{backend="echo",door="none",model="echo",outcome="ok"} 1.0' in text
    assert 'gen_ai_client_token_usage_count{backend="echo",door="none",model="echo",token_type="input"} 1.0' in text


def test_serve_metrics_answers_only_the_metrics_token(tmp_path: Any) -> None:
    """The metrics name every model with its traffic: a reader without the token learns nothing."""
    port = free_port()
    state = tmp_path / "state"
    catalog = {"echo": {"backend": "echo"}, "secret-model-x": {"backend": "echo"}}
    env = {**os.environ, "CHATGW_MODELS": json.dumps(catalog)}
    env.pop("CHATGW_METRICS_TOKEN", None)
    command = [sys.executable, "-m", "chatgw.cli.main", "serve", "--metrics", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--state-dir", str(state)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process=process)
        key = (state / "dev-key").read_text().strip()
        token_file = state / "metrics-token"
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(token) >= 32
        for model in ("echo", "secret-model-x"):
            chat = {"model": model, "messages": [{"role": "user", "content": "hi there"}]}
            assert httpx.post(f"{base}/v1/chat/completions", json=chat, headers={"x-api-key": key}).status_code == 200
        for headers in (
            {},
            {"authorization": f"Bearer {key}"},
            {"authorization": f"Bearer {token}x"},
            {"authorization": token},
        ):
            refused = httpx.get(f"{base}/metrics", headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            assert "secret-model-x" not in refused.text and "chatgw_requests_total" not in refused.text
        response = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {token}"})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        assert 'chatgw_requests_total{backend="echo",door="chat",model="echo",outcome="ok"} 1.0' in response.text
        assert 'model="secret-model-x"' in response.text
        assert "gen_ai_client_operation_duration_seconds_bucket" in response.text
    finally:
        stop(process)
    out, err = process.communicate(timeout=10)
    assert f"token in {token_file}" in out and "warning" not in err  # loopback: nothing to warn of


def test_metrics_on_a_non_loopback_address_are_warned_of() -> None:
    for host in ("0.0.0.0", "::", "192.168.1.20", "gateway.example.com"):
        assert "not a loopback address" in (exposure_warning(host) or ""), host
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert exposure_warning(host) is None, host


def test_a_metrics_token_from_the_environment_is_used_and_checked(tmp_path: Any) -> None:
    assert metrics_token("a-token-of-twenty-chars", tmp_path / "state") == ("a-token-of-twenty-chars", None)
    assert not (tmp_path / "state").exists()  # nothing generated when one is configured
    with pytest.raises(SettingsError, match="at least 16"):
        Settings.from_env({"CHATGW_METRICS_TOKEN": "short"})
    token, path = metrics_token("", tmp_path / "state")
    assert path == tmp_path / "state" / "metrics-token" and len(token) >= 32
    assert metrics_token("", tmp_path / "state") == (token, path)  # kept across restarts
    path.write_text("\n")  # emptied: a new one, never an empty token
    assert len(metrics_token("", tmp_path / "state")[0]) >= 32
