"""The ledger replay function: CloudWatch Logs hands it the gateway's `usage_event` lines (a
subscription filter on the gateway's log group, template.yaml) and it records each one, once.

A settlement that outlives its budget (store/deadline.py) is written to the log instead of the
ledger; in AWS nobody runs `chatgw replay`, so the stack replays its own lines here. The store's
recording is idempotent (store/replay.py), so a redelivered batch records nothing twice. A line
that cannot be read is logged and skipped (retrying would not make it readable); a store failure
raises, so that Lambda retries the whole batch (an asynchronous invoke), which is safe for the same
reason. docs/store.md, "The ledger heals itself"."""

from __future__ import annotations

import base64
import gzip
import json
import logging
from functools import cache
from typing import Any

from chatgw.observability import logs
from chatgw.settings import Settings
from chatgw.store.base import Store, UsageEvent
from chatgw.store.replay import NotAUsageEvent, Replayed, replay, usage_event_of


@cache
def _store() -> Store:
    """One store per container, from CHATGW_KEYS_TABLE and CHATGW_USAGE_TABLE (a warm container reuses it)."""
    from chatgw.store.factory import open_from_settings

    settings = Settings.from_env()
    logs.configure(settings.log_level)
    if not settings.uses_dynamodb:
        raise RuntimeError("the ledger replay function needs CHATGW_KEYS_TABLE and CHATGW_USAGE_TABLE")
    return open_from_settings(settings)


def log_messages(event: dict[str, Any]) -> list[str]:
    """The messages of a CloudWatch Logs subscription event ({"awslogs": {"data": base64(gzip(json))}});
    none for the control message CloudWatch sends when the subscription is made."""
    payload = json.loads(gzip.decompress(base64.b64decode(event["awslogs"]["data"])))
    if payload.get("messageType") != "DATA_MESSAGE":
        return []
    return [str(entry.get("message", "")) for entry in payload.get("logEvents", [])]


def events_of(messages: list[str], result: Replayed) -> list[UsageEvent]:
    events: list[UsageEvent] = []
    for message in messages:
        try:
            event = usage_event_of(message)
        except NotAUsageEvent as exc:
            # never the line itself: it is an event of a key, and the reason is enough to find it
            result.unreadable.append(str(exc))
            logs.event("ledger_replay_unreadable", logging.ERROR, problem=str(exc)[:200])
            continue
        if event is not None:
            events.append(event)
    return events


def handler(event: dict[str, Any], context: Any = None, store: Store | None = None) -> dict[str, int]:
    result = Replayed()
    events = events_of(log_messages(event), result)
    replay(store if store is not None else _store(), events, into=result)  # a store failure raises: retried
    summary = {
        "recorded": result.recorded,
        "already_recorded": result.already_recorded,
        "unreadable": len(result.unreadable),
    }
    logs.event("ledger_replay", logging.INFO, **summary)
    return summary
