"""`chatgw usage`: names, owners and a totals row; ranges; groups by owner and tag; CSV; and the
self-contained HTML page, opened in headless Chromium (Debian's package) to check that every
chart was drawn, with a screenshot kept in test-artifacts/ (docs/usage-report.png is one)."""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chatgw.access.keys import new_key
from chatgw.cli import main as chatgw_cli
from chatgw.store.base import UsageEvent
from chatgw.store.sqlite import SqliteStore
from tests.support.tools import ROOT, missing_tool

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
KEYS = [
    ("search-app", "alice", "search"),
    ("billing-bot", "bob", "finance"),
    ("ci-tests", "carol", "search"),
    ("<!--<script>", "mallory", "search"),  # once put the page's parser in a script state: no chart drew
]
MODELS = ["gpt-4o-mini", "claude", "</script><!--<script>&amp;"]
PRICES = {"gpt-4o-mini": (0.15, 0.6), "claude": (0.8, 4.0), MODELS[2]: (0.0, 0.0)}
START = datetime(2026, 11, 20, 12, tzinfo=UTC)
MEASURES = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost")


def usage_events(ids: list[str]) -> list[UsageEvent]:
    """Ten days of usage by each key on three models (deterministic)."""
    events, n = [], 0
    for day in range(10):
        for i, key_id in enumerate(ids):
            for j in range((day * 3 + i * 5) % 7 + 1):
                n += 1
                at = START + timedelta(days=day, minutes=j)
                prompt, completion = 100 * (i + 1) + 37 * j, 40 * (j + 1) + day * 11
                model = MODELS[(i + j) % 3]
                cost = (prompt * PRICES[model][0] + completion * PRICES[model][1]) / 1_000_000
                events.append(
                    UsageEvent(key_id, f"r{n}", at, model, "openai", prompt, completion, "ok", False, 9, cost=cost)
                )
    return events


def recorded(ids: list[str], by: str) -> dict[str, dict[str, float]]:
    """What the fixture recorded, summed per key id, day or model: the figures every report must show."""
    out: dict[str, dict[str, float]] = {}
    for e in usage_events(ids):
        group = {"key": e.key_id, "day": e.at.date().isoformat(), "model": e.model}[by]
        sums = out.setdefault(group, dict.fromkeys(MEASURES, 0.0))
        for name, value in (("requests", 1), ("prompt_tokens", e.prompt_tokens), ("cost", e.cost or 0.0)):
            sums[name] += value
        sums["completion_tokens"] += e.completion_tokens
        sums["total_tokens"] += e.prompt_tokens + e.completion_tokens
    return out


def assert_rows(rows: dict[str, dict[str, str]], want: dict[str, dict[str, float]]) -> None:
    """Report rows (group: {column: text}) hold exactly the recorded figures, and the totals row their sums."""
    assert set(rows) == {*want, "TOTAL"}
    total = {m: sum(w[m] for w in want.values()) for m in MEASURES}
    for group, figures in [*want.items(), ("TOTAL", total)]:
        for measure in MEASURES:
            got = float(rows[group][measure])
            assert abs(got - figures[measure]) < 1e-5, (group, measure, got, figures[measure])


@pytest.fixture
def state(tmp_path: Path) -> tuple[Path, list[str]]:
    """Four keys, ten days of usage on three models (`usage_events`)."""
    store = SqliteStore(tmp_path / "chatgw.db")
    ids = []
    for name, owner, team in KEYS:
        _, record = new_key(name, owner=owner, tags={"team": team})
        store.create_key(record)
        ids.append(record.key_id)
    for event in usage_events(ids):
        store.record_usage(event)
    store.close()
    return tmp_path, ids


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert chatgw_cli.main(["usage", *argv]) == 0
    return capsys.readouterr().out


def test_the_table_has_names_owners_and_totals(
    state: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, ids = state
    out = run(capsys, "--state-dir", str(folder), "--month", "2026-11")
    lines = out.splitlines()
    header = [c.lower() for c in lines[0].split()]
    assert header[:4] == ["key_id", "name", "owner", "requests"]
    for key_id, (name, owner, _) in zip(ids, KEYS, strict=True):
        (line,) = [line for line in lines if line.startswith(key_id)]
        assert line.split()[1:3] == [name, owner]
    figures = header[3:]  # the TOTAL line's name and owner are blank: read the figures from the right
    table = {line.split()[0]: dict(zip(figures, line.split()[-len(figures) :], strict=True)) for line in lines[1:]}
    assert figures == list(MEASURES)
    assert_rows(table, recorded(ids, "key"))


def csv_rows(text: str, column: str) -> dict[str, dict[str, str]]:
    return {row[column]: row for row in csv.DictReader(io.StringIO(text))}


def test_the_csv_holds_what_was_recorded_per_key_day_and_model(
    state: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, ids = state
    store = ["--state-dir", str(folder), "--month", "2026-11", "--csv"]
    assert_rows(csv_rows(run(capsys, *store), "key_id"), recorded(ids, "key"))
    assert_rows(csv_rows(run(capsys, *store, "--by", "day"), "day"), recorded(ids, "day"))
    assert_rows(csv_rows(run(capsys, *store, "--by", "model"), "model"), recorded(ids, "model"))


def test_ranges_groups_and_csv(state: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = state
    store = ["--state-dir", str(folder)]
    month = list(csv.DictReader(io.StringIO(run(capsys, *store, "--month", "2026-11", "--csv"))))
    whole = list(
        csv.DictReader(io.StringIO(run(capsys, *store, "--from", "2026-11-01", "--to", "2026-11-30", "--csv")))
    )
    assert whole[-1]["key_id"] == "TOTAL" and float(whole[-1]["cost"]) > 0
    for by_month, by_days in zip(month, whole, strict=True):  # the same, but cost summed in another order
        assert abs(float(by_month.pop("cost")) - float(by_days.pop("cost"))) < 1e-5
        assert by_month == by_days
    first_days = list(
        csv.DictReader(io.StringIO(run(capsys, *store, "--from", "2026-11-20", "--to", "2026-11-21", "--csv")))
    )
    assert 0 < int(first_days[-1]["requests"]) < int(whole[-1]["requests"])
    by_team = {
        r["tag:team"]: r
        for r in csv.DictReader(
            io.StringIO(run(capsys, *store, "--from", "2026-11-01", "--to", "2026-11-30", "--by", "tag:team", "--csv"))
        )
    }
    assert set(by_team) == {"search", "finance", "TOTAL"}
    assert int(by_team["search"]["total_tokens"]) + int(by_team["finance"]["total_tokens"]) == int(
        by_team["TOTAL"]["total_tokens"]
    )
    owners = run(capsys, *store, "--month", "2026-11", "--by", "owner")
    assert [line.split()[0] for line in owners.splitlines()[1:]] == ["alice", "bob", "carol", "mallory", "TOTAL"]
    by_day = list(csv.DictReader(io.StringIO(run(capsys, *store, "--month", "2026-11", "--by", "day", "--csv"))))
    assert [r["day"] for r in by_day] == [f"2026-11-{d}" for d in range(20, 30)] + ["TOTAL"]  # days, not "2026-11"
    assert by_day[-1]["requests"] == whole[-1]["requests"]
    assert chatgw_cli.main(["usage", *store, "--from", "2026-11-30", "--to", "2026-11-01"]) == 2
    assert chatgw_cli.main(["usage", *store, "--by", "colour"]) == 2
    assert chatgw_cli.main(["usage", *store, "--html", str(folder / "no-such-dir" / "usage.html")]) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith("chatgw: cannot write ")  # not "cannot read"


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """The pixels of an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, b"", b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        chunks += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6)
    channels = 3 if color == 2 else 4
    raw, stride, rows, previous = zlib.decompress(chunks), width * channels, [], bytearray(width * channels)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b, c = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + a) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + b) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        previous = line
    pixels = [tuple(row[x : x + 3]) for row in rows for x in range(0, stride, channels)]
    return width, height, pixels


def chart_figures(ids: list[str]) -> dict[str, dict[str, list[Any]]]:
    """What the charts of the 2026-11-18..30 page must show: every day of the range, keys by name."""
    names = {key_id: name for key_id, (name, _, _) in zip(ids, KEYS, strict=True)}
    days = [(START.date() + timedelta(days=d)).isoformat() for d in range(-2, 11)]
    per = {
        "day": {d: recorded(ids, "day").get(d, dict.fromkeys(MEASURES, 0.0)) for d in days},
        "key": {names[k]: f for k, f in recorded(ids, "key").items()},
        "model": recorded(ids, "model"),
    }
    out: dict[str, dict[str, list[Any]]] = {}
    for section, groups in per.items():
        labels = list(groups) if section == "day" else sorted(groups, key=lambda g: -groups[g]["total_tokens"])
        out[section] = {"labels": labels, **{m: [groups[g][m] for g in labels] for m in CHART_MEASURES}}
    return out


CHART_MEASURES = ("total_tokens", "requests", "cost")


def page_data(text: str) -> Any:
    (blob,) = re.findall(r'<script id="usage-data" type="application/json">(.*?)</script>', text, re.S)
    return json.loads(blob)


def assert_sections(got: Any, want: dict[str, dict[str, list[Any]]]) -> None:
    """The page's chart data holds the recorded figures, label by label (costs rounded to 1e-6)."""
    assert set(got) == set(want)
    for section, figures in want.items():
        assert got[section]["labels"] == figures["labels"], section
        for measure in CHART_MEASURES:
            pairs = list(zip(got[section][measure], figures[measure], strict=True))
            assert all(abs(g - w) < 1e-5 for g, w in pairs), (section, measure, pairs)


def drawn(dom: str) -> dict[tuple[str, str], tuple[dict[str, float], list[str]]]:
    """Each drawn figure's bars ({label: value}, from their tooltips) and axis labels, in order."""
    out = {}
    for section, measure, body in re.findall(
        r'<figure data-section="(\w+)" data-measure="(\w+)"[^>]*>(.*?)</figure>', dom, re.S
    ):
        bars = dict(html.unescape(t).rsplit(": ", 1) for t in re.findall(r"<title>(.*?)</title>", body))
        labels = [html.unescape(t) for t in re.findall(r'<text [^>]*class="label"[^>]*>(.*?)</text>', body)]
        out[(section, measure)] = ({k: float(v) for k, v in bars.items()}, labels)
    return out


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )


def test_the_html_report_renders_its_charts_in_chromium(
    state: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    if not os.path.exists(CHROMIUM):
        missing_tool("chromium", "`make chromium` installs Debian's package (make test does)")
    folder, ids = state
    page = folder / "usage.html"
    run(capsys, "--state-dir", str(folder), "--from", "2026-11-18", "--to", "2026-11-30", "--html", str(page))
    text = page.read_text()
    assert "default-src 'none'" in text  # nothing may be fetched when it is opened
    assert "'unsafe-inline'" not in text.split("script-src", 1)[1].split(";", 1)[0]  # the script by its hash
    assert not re.search(r"(src|href)\s*=|url\(|@import|https?://(?!www\.w3\.org/2000/svg)", text)
    assert "<!--" not in text and text.count("<script") == 2  # no name opened a comment or a script
    assert all(html.escape(name) in text for name, _, _ in KEYS) and "TOTAL" in text
    want = chart_figures(ids)
    assert_sections(page_data(text), want)

    dom = chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-charts="9"' in dom.stdout  # the inline script ran and drew every chart
    rendered = Counter(re.findall(r'data-section="(\w+)"[^>]*data-rendered="(\d+)"', dom.stdout))
    assert rendered == Counter({("day", "13"): 3, ("key", "4"): 3, ("model", "3"): 3})
    assert dom.stdout.count('class="bar"') == 3 * (13 + 4 + 3)
    figures = drawn(dom.stdout)
    for (section, measure), (bars, labels) in figures.items():
        expected = dict(zip(want[section]["labels"], want[section][measure], strict=True))
        assert bars.keys() == expected.keys(), (section, measure)
        for name, value in bars.items():
            assert abs(value - expected[name]) < 1e-5, (section, measure, name, value, expected[name])
        assert labels == [n if len(n) <= 16 else n[:15] + "…" for n in want[section]["labels"]]
    total = {m: sum(f[m] for f in recorded(ids, "key").values()) for m in MEASURES}
    shown = dict(re.findall(r'data-total="(\w+)"><b>([^<]*)</b>', dom.stdout))
    assert shown == {
        "requests": f"{total['requests']:,.0f}",
        "tokens": f"{total['total_tokens']:,.0f}",
        "cost": f"{total['cost']:,.4f}",
    }
    assert dom.stdout.index('data-total="requests"') < dom.stdout.index("<figure")  # at the top

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "usage-report.png"
    shot.unlink(missing_ok=True)
    result = chromium("--window-size=1400,1340", f"--screenshot={shot}", page.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1400, 1340)
    colours = Counter(pixels)
    bars = {(0x3B, 0x6F, 0xB6): "tokens", (0x4C, 0x9A, 0x5F): "requests", (0xC0, 0x7A, 0x2C): "cost"}
    for rgb, what in bars.items():
        assert colours[rgb] > 2000, f"no {what} bars on the screenshot"


def test_a_months_day_labels_do_not_overlap(state: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    """Labels are 9px text turned 45 degrees: two drawn closer than 9 / sin 45 = 12.7px apart overlap."""
    if not os.path.exists(CHROMIUM):
        missing_tool("chromium", "`make chromium` installs Debian's package (make test does)")
    folder, _ = state
    page = folder / "month.html"
    run(capsys, "--state-dir", str(folder), "--month", "2026-11", "--html", str(page))
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert dom.returncode == 0 and 'data-charts="9"' in dom.stdout, dom.stderr[-2000:]
    for (section, _), (bars, labels) in drawn(dom.stdout).items():
        if section != "day":
            continue
        assert len(bars) == 30 and labels[0] == "2026-11-01" and 10 <= len(labels) < 30  # every Nth day
        assert set(labels) <= set(bars)
    figure = re.search(r'<figure data-section="day".*?</figure>', dom.stdout, re.S)
    assert figure is not None
    xs = [float(x) for x in re.findall(r'<text x="([\d.]+)"[^>]*class="label"', figure.group(0))]
    assert len(xs) >= 10 and min(b - a for a, b in itertools.pairwise(xs)) >= 9 / 0.7072
