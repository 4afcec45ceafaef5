"""The bench report's budget lines: a mode that ran always has its line, even when a short run reads
0 ms of CPU (the kernel counts CPU in 10 ms ticks); a mode that did not run has none."""

from __future__ import annotations

from typing import Any

from bench import report


def run(target: str, mode: str, cpu_ms: float | None) -> dict[str, Any]:
    return {"target": target, "mode": mode, "concurrency": 1, "cpu_ms_per_request": cpu_ms}


def door_lines(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["line"]: line for line in report.door_budget({"runs": runs}, 1)}


def test_a_door_that_ran_under_the_clock_resolution_keeps_its_line_as_not_applicable() -> None:
    lines = door_lines(
        [run(report.GATEWAY, "responses:stream20", 0.0), run(report.BASELINE, "responses:stream20", 0.0)]
    )
    (only,) = lines.values()
    assert only["line"].startswith("server CPU per Responses-door 20-event stream")
    assert only["status"] == "n/a"


def test_a_door_measured_above_the_resolution_is_judged() -> None:
    lines = door_lines(
        [
            run(report.GATEWAY, "messages:buffered", 3.0),
            run(report.BASELINE, "messages:buffered", 2.0),
            run(report.GATEWAY, "messages:stream20", 5.0),
            run(report.BASELINE, "messages:stream20", 2.0),
        ]
    )
    status = {name.split(" <=")[0]: line["status"] for name, line in lines.items()}
    assert status == {
        "server CPU per Messages-door buffered request": "met",
        "server CPU per Messages-door 20-event stream": "NOT met",
    }


def test_a_door_that_did_not_run_has_no_line() -> None:
    assert door_lines([run(report.GATEWAY, "buffered", 2.0)]) == {}


def test_a_zero_reading_is_no_ratio() -> None:
    assert report.ratio(0.0, 2.0) is None
    assert report.ratio(2.0, 0.0) is None
    assert report.ratio(3.0, 2.0) == 1.5
