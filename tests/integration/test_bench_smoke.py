"""The benchmark harness runs (a few requests, no soak, no cold start) and prints its table.
Nothing here looks at a time: the figures are the benchmark's business, not the tests'."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.timeout(300)
def test_quick_bench_prints_the_table(tmp_path: Path) -> None:
    # The run takes about 15 s on two idle cores. Its 240 s bound only stops a hang: a margin of
    # 15x, enough for the suite beside a CPU hog on every core (`make test-under-load`).
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--skip-dynamodb",
            "--requests",
            "5",
            "--concurrency",
            "1",
            "2",
            "--headline-c",
            "2",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| target | mode | c | req/s |" in done.stdout
    results = json.loads((tmp_path / "quick.json").read_text())
    targets = {(r["target"], r["mode"]) for r in results["runs"]}
    assert {("baseline", "buffered"), ("chatgw-sqlite", "buffered"), ("chatgw-sqlite", "stream100")} <= targets
    assert all(r["errors"] == 0 for r in results["runs"]), [r["first_error"] for r in results["runs"]]
    assert {b["line"].split(" <=")[0] for b in results["budget"]} >= {"server CPU per buffered request"}


@pytest.mark.timeout(300)
def test_quick_bench_measures_each_door_beside_a_pass_through_of_its_dialect(tmp_path: Path) -> None:
    """The Responses and Messages doors: buffered and 20-event streams through chatgw and through the
    baseline relaying the same dialect, every answer complete (a stream counts only when it ends with
    its dialect's last event), and a budget line for each."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--doors-only",
            "--requests",
            "3",
            "--concurrency",
            "1",
            "--headline-c",
            "1",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| door | mode |" in done.stdout
    results = json.loads((tmp_path / "quick.json").read_text())
    assert results["features"]["responses_door"] and results["features"]["messages_door"]
    runs = {(r["target"], r["mode"]): r for r in results["runs"]}
    budget = {b["line"] for b in results["budget"]}
    for door in ("responses", "messages"):
        for target in ("upstream", "baseline", "chatgw-sqlite"):
            for mode in ("buffered", "stream20"):
                row = runs[(target, f"{door}:{mode}")]
                assert row["errors"] == 0 and row["requests"] == 3, (target, door, mode, row["first_error"])
        name = door.capitalize()
        assert any(line.startswith(f"server CPU per {name}-door 20-event stream") for line in budget), budget
