"""The stack's dashboard and alarms against the code: every metric a widget or an alarm names is one
the gateway emits (observability/metrics.py) with exactly those dimensions, or an AWS metric of the stack's own
function, API or tables; every gateway metric is shown or alarmed; every alarm notifies the topic."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from chatgw.observability.metrics import ALL, OUTCOMES, REFUSAL_REASONS
from tests.support.template import template as template  # the parsed template, a fixture

EMITTED = {(m.name, frozenset(dims)) for m in ALL for dims in m.dimension_sets}
DIMENSION_VALUES = {"outcome": set(OUTCOMES), "reason": set(REFUSAL_REASONS)}
AWS_METRICS = {
    ("AWS/Lambda", "FunctionName"): {"Duration", "Errors", "Throttles", "ConcurrentExecutions", "AsyncEventsDropped"},
    ("AWS/DynamoDB", "TableName"): {"ReadThrottleEvents", "WriteThrottleEvents"},
    ("AWS/ApiGateway", "ApiName,Stage"): {"Count", "4XXError", "5XXError"},
}
OWN = {
    "FunctionName": {"Function", "LedgerReplayFunction"},
    "TableName": {"KeysTable", "UsageTable"},
    "ApiName": {"AWS::StackName"},
    "Stage": {"StageName"},
}
"""AWS metrics: the dimension values must be the stack's own function, tables, API and stage."""
SEARCH = re.compile(r"SEARCH\('\{([^}]*)\} MetricName=\"([^\"]+)\"'")


def dashboard(tpl: dict[str, Any]) -> dict[str, Any]:
    body = tpl["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    namespace = tpl["Parameters"]["MetricsNamespace"]["Default"]
    parsed: dict[str, Any] = json.loads(body.replace("${MetricsNamespace}", namespace))
    return parsed


def widget_metrics(tpl: dict[str, Any]) -> list[tuple[str, str, dict[str, str], str]]:
    """(namespace, metric, dimensions, widget title) of every metric of every widget; a SEARCH
    expression counts as the dimension names of its schema."""
    found = []
    for widget in dashboard(tpl)["widgets"]:
        title = widget["properties"]["title"]
        for entry in widget["properties"]["metrics"]:
            if isinstance(entry[0], dict):
                match = SEARCH.search(entry[0]["expression"])
                assert match, entry
                namespace, *names = [part.strip() for part in match.group(1).split(",")]
                found.append((namespace, match.group(2), {n: "*" for n in names}, title))
                continue
            plain = [item for item in entry if not isinstance(item, dict)]
            namespace, name, *pairs = plain
            found.append((namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True)), title))
    return found


def alarm_metrics(tpl: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], str]]:
    found = []
    for logical_id, resource in tpl["Resources"].items():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        properties = resource["Properties"]
        stats = (
            [properties]
            if "MetricName" in properties
            else [m["MetricStat"]["Metric"] for m in properties["Metrics"] if "MetricStat" in m]
        )
        for stat in stats:
            namespace = stat["Namespace"]
            if namespace == {"Ref": "MetricsNamespace"}:
                namespace = tpl["Parameters"]["MetricsNamespace"]["Default"]
            dimensions = {d["Name"]: d["Value"] for d in stat.get("Dimensions", [])}
            found.append((namespace, stat["MetricName"], dimensions, logical_id))
    return found


def check(tpl: dict[str, Any], namespace: str, name: str, dimensions: dict[str, Any], where: str) -> None:
    ours = tpl["Parameters"]["MetricsNamespace"]["Default"]
    if namespace == ours:
        assert (name, frozenset(dimensions)) in EMITTED, f"{where}: {name} {sorted(dimensions)} is never emitted"
        for dimension, value in dimensions.items():
            if dimension in DIMENSION_VALUES and value != "*":
                assert value in DIMENSION_VALUES[dimension], f"{where}: {dimension}={value} is never emitted"
        return
    key = (namespace, ",".join(dimensions))
    assert key in AWS_METRICS, f"{where}: unexpected AWS metric {namespace} {sorted(dimensions)}"
    assert name in AWS_METRICS[key], f"{where}: {namespace} {name}"
    for dimension, value in dimensions.items():
        ref = value["Ref"] if isinstance(value, dict) else value.removeprefix("${").removesuffix("}")
        assert ref in OWN[dimension], f"{where}: {namespace} {name} on {dimension}={value}, not the stack's own"


def test_every_widget_metric_is_emitted_with_its_dimensions(template: dict[str, Any]) -> None:
    for namespace, name, dimensions, title in widget_metrics(template):
        check(template, namespace, name, dimensions, f"widget {title!r}")


def test_every_alarm_metric_is_emitted_with_its_dimensions(template: dict[str, Any]) -> None:
    alarms = alarm_metrics(template)
    assert len({a[3] for a in alarms}) >= 7
    for namespace, name, dimensions, logical_id in alarms:
        check(template, namespace, name, dimensions, f"alarm {logical_id}")


def test_every_gateway_metric_is_on_the_dashboard_or_alarmed(template: dict[str, Any]) -> None:
    shown = {name for _, name, _, _ in widget_metrics(template) + alarm_metrics(template)}
    assert {m.name for m in ALL} <= shown


def test_the_dashboard_answers_the_operators_questions(template: dict[str, Any]) -> None:
    titles = {
        title: {(ns, name) for ns, name, _, t in widget_metrics(template) if t == title}
        for *_, title in widget_metrics(template)
    }
    names = {name for pairs in titles.values() for _, name in pairs}
    assert {
        "chatgw.requests",
        "chatgw.refusals",
        "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.client.token.usage",
        "chatgw.upstream.errors",
        "Duration",
        "ConcurrentExecutions",
        "Throttles",
        "4XXError",
        "5XXError",
        "ReadThrottleEvents",
        "WriteThrottleEvents",
    } <= names
    percentiles = [
        {m[-1]["stat"] for m in w["properties"]["metrics"] if isinstance(m[-1], dict) and "stat" in m[-1]}
        for w in dashboard(template)["widgets"]
    ]
    assert percentiles.count({"p50", "p90", "p99"}) >= 3  # latency, time to first token, Lambda duration


def test_the_ledger_replay_functions_failures_are_alarmed(template: dict[str, Any]) -> None:
    """A failed batch (retried) and a dropped one (its lines need `chatgw replay`) each page the topic."""
    on_replay = {
        name: logical_id
        for _, name, dimensions, logical_id in alarm_metrics(template)
        if dimensions == {"FunctionName": {"Ref": "LedgerReplayFunction"}}
    }
    assert set(on_replay) == {"Errors", "AsyncEventsDropped"}
    for logical_id in on_replay.values():
        assert template["Resources"][logical_id]["Properties"]["Threshold"] == 0


@pytest.mark.parametrize("kind", ["AWS::CloudWatch::Alarm"])
def test_every_alarm_notifies_the_topic(template: dict[str, Any], kind: str) -> None:
    alarms = [r["Properties"] for r in template["Resources"].values() if r["Type"] == kind]
    assert alarms and all(a["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms)
    subscription = template["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail" and template["Parameters"]["AlarmEmail"]["Default"] == ""


def test_access_logs_are_json_with_the_request_ids_and_tracing_is_a_parameter(
    template: dict[str, Any],
) -> None:
    api = template["Resources"]["Api"]["Properties"]
    access = json.loads(api["AccessLogSetting"]["Format"])
    assert access["requestId"] == "$context.requestId"
    assert access["lambdaRequestId"] == "$context.integration.requestId"
    assert not any("authorization" in v.lower() or "api-key" in v.lower() for v in access.values())
    assert api["TracingEnabled"] == {"Fn::If": ["TracingEnabled", True, False]}
    function = template["Resources"]["Function"]["Properties"]
    assert function["Tracing"] == {"Fn::If": ["TracingEnabled", "Active", "PassThrough"]}
    assert template["Parameters"]["EnableTracing"]["Default"] == "false"
    assert function["Environment"]["Variables"]["CHATGW_METRICS"] == "emf"
