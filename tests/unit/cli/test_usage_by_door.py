"""`chatgw usage --by door`: each front door's share of the ledger, from the per-model rows."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chatgw.access.keys import new_key
from chatgw.cli import main as chatgw_cli
from chatgw.store.base import UsageEvent
from chatgw.store.sqlite import SqliteStore

AT = datetime(2026, 11, 20, 12, tzinfo=UTC)


def test_usage_by_door_sums_each_door(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = SqliteStore(tmp_path / "chatgw.db")
    _, record = new_key("app")
    store.create_key(record)
    spent = {"chat": (10, 1), "messages": (200, 20), "responses": (3000, 300)}
    for n, (door, (prompt, completion)) in enumerate(spent.items()):
        for model in ("echo", "claude"):
            event = UsageEvent(
                key_id=record.key_id,
                request_id=f"r{n}{model}",
                at=AT,
                model=model,
                backend="echo",
                prompt_tokens=prompt,
                completion_tokens=completion,
                status="ok",
                streamed=False,
                latency_ms=1,
                door=door,
            )
            store.record_usage(event)
    store.close()
    capsys.readouterr()
    code = chatgw_cli.main(["usage", "--state-dir", str(tmp_path), "--month", "2026-11", "--by", "door", "--csv"])
    assert code == 0
    rows = {r["door"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert set(rows) == {"chat", "messages", "responses", "TOTAL"}
    for door, (prompt, completion) in spent.items():
        assert (int(rows[door]["requests"]), int(rows[door]["total_tokens"])) == (2, 2 * (prompt + completion))
    assert int(rows["TOTAL"]["total_tokens"]) == sum(2 * (p + c) for p, c in spent.values())
