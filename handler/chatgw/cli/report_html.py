"""`chatgw usage --html FILE`: one self-contained HTML page (nothing fetched when it is opened: the
data is inline JSON, the charts are SVG drawn by an inline script) with the range's totals, tokens,
requests and cost per day, per key and per model, and the table of `chatgw usage` with its totals row.

Key and model names are anyone's text. In the inline JSON `<`, `>` and `&` are written as `\u003c`,
`\u003e`, `\u0026`, so no name can end the data block or put the parser in a script state (a key
named `<!--<script>` once swallowed the script after it: no chart drew). The page's Content Security
Policy allows the one script by its SHA-256 hash, not any inline script."""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Iterable
from datetime import date
from typing import Any

from chatgw.access.keys import KeyRecord
from chatgw.cli.report import TOTAL, DayUsage, cell, columns_of, days

MEASURES = (("total_tokens", "Tokens"), ("requests", "Requests"), ("cost", "Cost (USD)"))
SECTIONS = (("day", "per day"), ("key", "per key"), ("model", "per model"))


def series(usage: list[DayUsage], keys: dict[str, KeyRecord], start: date, end: date) -> dict[str, Any]:
    """{section: {"labels": [...], measure: [values]}}: every day of the range, keys by name."""

    def label(item: DayUsage, section: str) -> str:
        if section == "day":
            return item.day
        if section == "model":
            return item.model
        record = keys.get(item.key_id)
        return record.name if record and key_names.count(record.name) == 1 else item.key_id

    key_names = [k.name for k in keys.values()]

    out: dict[str, Any] = {}
    for section, _ in SECTIONS:
        labels = [d.isoformat() for d in days(start, end)] if section == "day" else []
        totals: dict[str, dict[str, float]] = {name: {m: 0.0 for m, _ in MEASURES} for name in labels}
        for item in usage:
            bucket = totals.setdefault(label(item, section), {m: 0.0 for m, _ in MEASURES})
            bucket["total_tokens"] += item.total_tokens
            bucket["requests"] += item.requests
            bucket["cost"] += item.cost or 0.0
        names = labels if section == "day" else sorted(totals, key=lambda n: -totals[n]["total_tokens"])
        out[section] = {"labels": names, **{m: [round(totals[n][m], 6) for n in names] for m, _ in MEASURES}}
    return out


SCRIPT = """
const data = JSON.parse(document.getElementById("usage-data").textContent);
const NS = "http://www.w3.org/2000/svg";
function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
function format(v) { return v >= 1000 ? Math.round(v).toLocaleString("en") : String(Math.round(v * 1e4) / 1e4); }
function chart(figure) {
  const section = data[figure.dataset.section], values = section[figure.dataset.measure];
  const labels = section.labels, width = 420, height = 250, left = 56, bottom = 74, top = 12;
  const svg = el("svg", {viewBox: `0 0 ${width} ${height}`, width: width, height: height, role: "img"});
  const max = Math.max(...values, 0) || 1, plot = height - bottom - top;
  const step = (width - left - 8) / Math.max(labels.length, 1), every = Math.max(1, Math.ceil(14 / step));
  svg.appendChild(el("line", {x1: left, y1: top + plot, x2: width - 4, y2: top + plot, stroke: "#888"}));
  for (const f of [0, 0.5, 1]) {
    svg.appendChild(el("text", {x: left - 6, y: top + plot - f * plot + 4, "text-anchor": "end",
                                "font-size": 10, fill: "#555"}, format(max * f)));
  }
  labels.forEach((name, i) => {
    const h = values[i] / max * plot, x = left + i * step + step * 0.15;
    const bar = el("rect", {x: x, y: top + plot - h, width: step * 0.7, height: Math.max(h, 0),
                            fill: figure.dataset.color, class: "bar"});
    bar.appendChild(el("title", {}, `${name}: ${values[i]}`));
    svg.appendChild(bar);
    if (i % every !== 0) return;  // one label in `every`: rotated dates 9px tall overlap below ~12px apart
    const lx = x + step * 0.35, ly = top + plot + 10;
    const short = name.length > 16 ? name.slice(0, 15) + "…" : name;
    svg.appendChild(el("text", {x: lx, y: ly, "font-size": 9, fill: "#333", "text-anchor": "end",
                                transform: `rotate(-45 ${lx} ${ly})`, class: "label"}, short));
  });
  if (!values.some(v => v > 0)) {
    svg.appendChild(el("text", {x: width / 2, y: top + plot / 2, "text-anchor": "middle", "font-size": 12,
                                fill: "#777"}, "none recorded in this range"));
  }
  figure.appendChild(svg);
  figure.dataset.rendered = String(labels.length);
}
document.querySelectorAll("figure[data-section]").forEach(chart);
document.body.dataset.charts = String(document.querySelectorAll("figure[data-rendered]").length);
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; border: 1px solid #ddd; padding: 8px; }
figcaption { font-size: 13px; font-weight: 600; margin-bottom: 4px; }
table { border-collapse: collapse; font-size: 13px; margin-top: 8px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr.total { font-weight: 700; background: #f4f4f4; }
.totals { display: flex; gap: 32px; margin: 8px 0 4px; } .totals div { font-size: 13px; color: #555; }
.totals b { display: block; font-size: 22px; color: #222; }
"""
SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
"""The CSP names this script by its hash: no other inline script may run."""


def inline_json(value: Any) -> str:
    """JSON that is inert inside a `<script>` element, whatever its strings hold."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def totals(rows: list[dict[str, Any]]) -> str:
    """The range's totals, at the top: what a reader looks for first."""
    total = rows[-1] if rows else {}
    cost = total.get("cost")
    figures = (
        ("requests", f"{total.get('requests', 0):,}"),
        ("tokens", f"{total.get('total_tokens', 0):,}"),
        ("cost (USD)", f"{cost:,.4f}" if isinstance(cost, float | int) else "n/a"),
    )
    cells = "".join(
        f'<div data-total="{name.split()[0]}"><b>{html.escape(value)}</b>{html.escape(name)}</div>'
        for name, value in figures
    )
    return f'<div class="totals">{cells}</div>'


COLORS = {"total_tokens": "#3b6fb6", "requests": "#4c9a5f", "cost": "#c07a2c"}


def render(
    usage: list[DayUsage], rows: list[dict[str, Any]], keys: dict[str, KeyRecord], start: date, end: date
) -> str:
    data = inline_json(series(usage, keys, start, end))
    sections = []
    for section, title in SECTIONS:
        figures = "".join(
            f'<figure data-section="{section}" data-measure="{measure}" data-color="{COLORS[measure]}">'
            f"<figcaption>{caption} {title}</figcaption></figure>"
            for measure, caption in MEASURES
        )
        sections.append(f'<h2>{title.capitalize()}</h2><div class="charts">{figures}</div>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>chatgw usage {start} to {end}</title>"
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        f"script-src 'sha256-{SCRIPT_HASH}'; style-src 'unsafe-inline'\">"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>chatgw usage, {start} to {end} (UTC)</h1>{totals(rows)}"
        f"{''.join(sections)}<h2>Table</h2>{table(rows)}"
        f'<script id="usage-data" type="application/json">{data}</script>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def table(rows: list[dict[str, Any]]) -> str:
    columns = columns_of(rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(_tr(row, columns) for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tr(row: dict[str, Any], columns: Iterable[str]) -> str:
    cells = "".join(f"<td>{html.escape(cell(row.get(c)))}</td>" for c in columns)
    total = next(iter(row.values())) == TOTAL
    return f'<tr class="total">{cells}</tr>' if total else f"<tr>{cells}</tr>"
