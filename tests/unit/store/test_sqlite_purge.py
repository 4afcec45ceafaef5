"""SQLite keeps usage events for `usage_ttl_days` (the DynamoDB table's TTL, done by hand): each
usage write deletes the events past it. The day and month aggregates stay, whatever their age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from chatgw.access.limits import day_of, month_of
from chatgw.store.base import UsageEvent, UsageQuery
from chatgw.store.sqlite import SqliteStore


def event(request_id: str, at: datetime) -> UsageEvent:
    return UsageEvent("k1", request_id, at, "echo", "echo", 3, 4, "ok", False, 5)


def test_expired_events_are_purged_by_the_next_write_and_their_aggregates_stay(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "chatgw.db", usage_ttl_days=1)
    now = datetime.now(UTC)
    old, older_than_ttl = event("old", now - timedelta(days=3)), event("older", now - timedelta(days=2))
    try:
        assert store.record_usage(old) is True  # written, then purged by its own write: already past the TTL
        assert store.record_usage(event("fresh", now)) is True
        assert [e.request_id for e in store.usage_events("k1")] == ["fresh"]
        assert store.record_usage(older_than_ttl) is True
        assert [e.request_id for e in store.usage_events("k1")] == ["fresh"]
        for when in (old.at, older_than_ttl.at):  # the aggregates are the long-term record
            (day,) = store.usage(UsageQuery("day", day_of(when), key_id="k1"))
            assert (day.requests, day.total_tokens) == (1, 7)
        (month,) = store.usage(UsageQuery("month", month_of(now), key_id="k1"))
        assert month.requests >= 1
    finally:
        store.close()


def test_events_within_the_ttl_are_kept(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "chatgw.db", usage_ttl_days=90)
    now = datetime.now(UTC)
    try:
        for i, days in enumerate((89, 30, 0)):
            store.record_usage(event(f"e{i}", now - timedelta(days=days)))
        assert [e.request_id for e in store.usage_events("k1")] == ["e0", "e1", "e2"]
    finally:
        store.close()
