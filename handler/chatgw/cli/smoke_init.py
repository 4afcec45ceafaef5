"""`chatgw smoke --stack`: how the function's new environments started, from Lambda's own `REPORT`
lines in the function's log group: `Init Duration` (a cold start) or `Restore Duration` (SnapStart).
Informational: it never fails the smoke test (the logs may lag, or the operator may not read them)."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from chatgw.cli.smoke_checks import Check

NAME = "new environments (Lambda REPORT lines, last hour)"
DURATION = re.compile(r"(?<!Billed )\b(Init|Restore) Duration: ([\d.]+) ms")
WINDOW = timedelta(hours=1)


def log_group(stack: str) -> str:
    """As template.yaml names it: FunctionLogGroup."""
    return f"/aws/lambda/{stack}-gateway"


def summarize(messages: Iterable[str]) -> str:
    seen: dict[str, list[float]] = {"Init": [], "Restore": []}
    for message in messages:
        for kind, ms in DURATION.findall(message):
            seen[kind].append(float(ms))
    parts = [
        f"{len(values)} {'cold start' if kind == 'Init' else 'SnapStart restore'}(s), median {kind.lower()} "
        f"{statistics.median(values):.0f} ms, max {max(values):.0f} ms"
        for kind, values in seen.items()
        if values
    ]
    return "; ".join(parts) or "none in the window (every request went to a warm environment)"


def init_check(stack: str, region: str | None, now: datetime, client: Any = None) -> Check:
    if client is None:
        import boto3

        client = boto3.client("logs", region_name=region)
    try:
        answer = client.filter_log_events(
            logGroupName=log_group(stack),
            startTime=int((now - WINDOW).timestamp() * 1000),
            filterPattern='?"Init Duration" ?"Restore Duration"',
            limit=100,
        )
    except Exception as exc:  # botocore's errors: say which, never fail the smoke test for it
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
        return Check(NAME, True, f"not read ({code}): needs logs:FilterLogEvents on {log_group(stack)}")
    return Check(NAME, True, summarize(str(e.get("message", "")) for e in answer.get("events", [])))
