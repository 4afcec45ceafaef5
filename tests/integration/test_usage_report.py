"""`chatgw usage`: names, owners and a totals row; ranges; groups by owner and tag; CSV; and the
self-contained HTML page, opened in headless Chromium (Debian's package) to check that every
chart was drawn, with a screenshot kept in test-artifacts/ (docs/usage-report.png is one)."""

from __future__ import annotations

import csv
import io
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
KEYS = [("search-app", "alice", "search"), ("billing-bot", "bob", "finance"), ("ci-tests", "carol", "search")]
MODELS = ["gpt-4o-mini", "claude", "echo"]
PRICES = {"gpt-4o-mini": (0.15, 0.6), "claude": (0.8, 4.0), "echo": (0.0, 0.0)}
START = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def state(tmp_path: Path) -> tuple[Path, list[str]]:
    """Three keys, ten days of usage on three models (deterministic)."""
    store = SqliteStore(tmp_path / "chatgw.db")
    ids = []
    for name, owner, team in KEYS:
        _, record = new_key(name, owner=owner, tags={"team": team})
        store.create_key(record)
        ids.append(record.key_id)
    n = 0
    for day in range(10):
        for i, key_id in enumerate(ids):
            for j in range((day * 3 + i * 5) % 7 + 1):
                n += 1
                at = START + timedelta(days=day, minutes=j)
                prompt, completion = 100 * (i + 1) + 37 * j, 40 * (j + 1) + day * 11
                model = MODELS[(i + j) % 3]
                cost = (prompt * PRICES[model][0] + completion * PRICES[model][1]) / 1_000_000
                event = UsageEvent(key_id, f"r{n}", at, model, "openai", prompt, completion, "ok", False, 9, cost=cost)
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
    assert lines[0].split()[:4] == ["KEY_ID", "NAME", "OWNER", "REQUESTS"]
    for key_id, (name, owner, _) in zip(ids, KEYS, strict=True):
        (line,) = [line for line in lines if line.startswith(key_id)]
        assert line.split()[1:3] == [name, owner]
    total = lines[-1].split()
    assert total[0] == "TOTAL"
    per_key = [int(line.split()[3]) for line in lines[1:-1]]
    assert int(total[1]) == sum(per_key)


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
    assert [line.split()[0] for line in owners.splitlines()[1:]] == ["alice", "bob", "carol", "TOTAL"]
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
    folder, _ = state
    page = folder / "usage.html"
    run(capsys, "--state-dir", str(folder), "--from", "2026-11-18", "--to", "2026-11-30", "--html", str(page))
    text = page.read_text()
    assert "default-src 'none'" in text  # nothing may be fetched when it is opened
    assert not re.search(r"(src|href)\s*=|url\(|@import|https?://(?!www\.w3\.org/2000/svg)", text)
    assert all(name in text for name, _, _ in KEYS) and "TOTAL" in text

    dom = chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-charts="9"' in dom.stdout  # the inline script ran and drew every chart
    rendered = Counter(re.findall(r'data-section="(\w+)"[^>]*data-rendered="(\d+)"', dom.stdout))
    assert rendered == Counter({("day", "13"): 3, ("key", "3"): 3, ("model", "3"): 3})
    assert dom.stdout.count('class="bar"') == 3 * (13 + 3 + 3)

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
