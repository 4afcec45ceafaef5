"""The `usage_event` log lines the gateway writes when a settlement outlives its budget, read back
and recorded: by `chatgw replay` from a log file, and in AWS by the stack's ledger replay function
from the function's own log group (aws_lambda/ledger_replay.py). Recording is idempotent (the
event's conditional put, and a mark per pending part: store/dynamodb/settle.py), so a line read
twice is recorded once."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from chatgw.store.base import Store, UsageEvent
from chatgw.store.codec import event_from_dict

MARKER = '"usage_event"'
"""What every `usage_event` line holds (the JSON key)."""


class NotAUsageEvent(ValueError):
    """A line that names `usage_event` but does not carry a readable event."""


def usage_event_of(line: str) -> UsageEvent | None:
    """The event a log line carries; None for any other line. The JSON may follow a prefix (a
    timestamp, a request id), as log viewers and Lambda's text format add."""
    start = line.find("{")
    if start < 0 or MARKER not in line:
        return None
    try:
        data = json.loads(line[start:])
        return event_from_dict(data["usage_event"])
    except (ValueError, KeyError, TypeError) as exc:
        raise NotAUsageEvent(str(exc)) from None


@dataclass
class Replayed:
    recorded: int = 0
    already_recorded: int = 0
    unreadable: list[str] = field(default_factory=list)
    """Why each unreadable line was skipped (only when the caller skips them)."""


def replay(store: Store, events: Iterable[UsageEvent], into: Replayed | None = None) -> Replayed:
    """Record each event once; a store failure propagates (nothing is lost: replay again).

    A store with a replay path of its own takes it (DynamoDB: store/dynamodb/settle.py, where a line
    with no aggregate write pending was either never stored, and the replay stores it and applies
    every part behind a one-time mark, so that a retried batch is safe even when a write failed half
    way, or stored whole, and it records nothing); SQLite records an event in one transaction."""
    result = into if into is not None else Replayed()
    record = getattr(store, "replay_usage", store.record_usage)
    for event in events:
        if record(event):
            result.recorded += 1
        else:
            result.already_recorded += 1
    return result
