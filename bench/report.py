"""The results as a table on stdout, the budget lines met or not, JSON, a markdown page and a plot."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

BASELINE = "baseline"
GATEWAY = "chatgw-sqlite"
CPU_RATIO_MAX = 2.0
CHUNK_US_MAX = 50.0
IMPORT_RATIO_MAX = 1.2
DYNAMODB_IMPORT_RATIO_MAX = 1.1  # issue 15: against the floor that includes making the DynamoDB client
FIRST_ANSWER_MAX_S = 1.0
DOORS = {"responses": "Responses", "messages": "Messages"}
"""The doors beside chat; their modes are named `door:mode` and their baseline relays the same dialect."""
DOOR_MODES = (("buffered", "buffered request"), ("stream20", "20-event stream"))
RSS_MAX_MIB = 100.0
GROWTH_MAX_MIB = 1.0


def rows(results: dict[str, Any], target: str, mode: str, concurrency: int) -> list[dict[str, Any]]:
    return [
        r for r in results["runs"] if r["target"] == target and r["mode"] == mode and r["concurrency"] == concurrency
    ]


def cpu(results: dict[str, Any], target: str, mode: str, concurrency: int) -> float | None:
    """Server CPU ms per request: the median of the rounds; None when the mode was not run. A short run
    can read 0: the kernel counts CPU in clock ticks (10 ms), and a 0 is a reading, not an absence."""
    values = [r["cpu_ms_per_request"] for r in rows(results, target, mode, concurrency)]
    measured = [v for v in values if v is not None]
    return round(statistics.median(measured), 3) if measured else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or under the clock's resolution (a 0 reading)."""
    return round(a / b, 2) if a and b else None


def line(name: str, measured: str, met: bool | None) -> dict[str, Any]:
    return {"line": name, "measured": measured, "status": "n/a" if met is None else ("met" if met else "NOT met")}


def budget(results: dict[str, Any], c: int) -> list[dict[str, Any]]:
    lines = []
    for mode, label in (("buffered", "buffered request"), ("stream20", "20-chunk stream")):
        gw, base = cpu(results, GATEWAY, mode, c), cpu(results, BASELINE, mode, c)
        if gw is None and base is None:  # not measured (--doors-only)
            continue
        r = ratio(gw, base)
        lines.append(
            line(
                f"server CPU per {label} <= {CPU_RATIO_MAX}x baseline (c={c}, medians)",
                f"{gw} ms vs {base} ms: {r}x",
                None if r is None else r <= CPU_RATIO_MAX,
            )
        )
    lines += door_budget(results, c)
    per_chunk: dict[str, float | None] = {}
    for target in (GATEWAY, BASELINE):
        c20, c100 = cpu(results, target, "stream20", c), cpu(results, target, "stream100", c)
        per_chunk[target] = round((c100 - c20) * 1000 / 80, 1) if c20 and c100 else None
    gw_chunk = per_chunk[GATEWAY]
    if gw_chunk is not None or per_chunk[BASELINE] is not None:
        lines.append(
            line(
                f"CPU per extra streamed chunk < {CHUNK_US_MAX:.0f} us (20 vs 100 chunks, c={c})",
                f"{gw_chunk} us (baseline {per_chunk[BASELINE]} us)",
                None if gw_chunk is None else gw_chunk < CHUNK_US_MAX,
            )
        )
    cold = results.get("cold_start") or {}
    for name, v in (cold.get("imports") or {}).items():
        if name.startswith(("buffered entry", "streaming entry + app")):  # the entries, as Lambda runs them
            limit = DYNAMODB_IMPORT_RATIO_MAX if "DynamoDB" in name else IMPORT_RATIO_MAX
            lines.append(
                line(
                    f"cold import <= {limit}x floor: {name}",
                    _import_figure(v),
                    v["ratio_to_floor"] <= limit,
                )
            )
    for name, v in (cold.get("first_answer") or {}).items():
        if name.startswith("baseline"):
            continue
        s = v["median_s"]
        lines.append(
            line(
                f"first answer from a cold process < {FIRST_ANSWER_MAX_S:.0f} s: {name}",
                f"{s} s",
                None if s is None else s < FIRST_ANSWER_MAX_S,
            )
        )
    mem = results.get("memory")
    if mem:
        lines.append(
            line(
                f"RSS after {mem['served_10k']} requests < {RSS_MAX_MIB:.0f} MiB",
                f"{mem['rss_10k_mib']} MiB",
                mem["rss_10k_mib"] < RSS_MAX_MIB,
            )
        )
        lines.append(
            line(
                f"RSS not growing between the 5,000th and 10,000th request (<= {GROWTH_MAX_MIB} MiB)",
                f"{mem['rss_5k_mib']} -> {mem['rss_10k_mib']} MiB ({mem['growth_5k_to_10k_mib']:+} MiB)",
                mem["growth_5k_to_10k_mib"] <= GROWTH_MAX_MIB,
            )
        )
    for store, by_mode in (results.get("round_trips") or {}).items():
        for mode, counts in by_mode.items():
            per = counts["per_request"]
            prefix = "aws." if store.endswith("dynamodb") else "store."
            before = sum(v for k, v in per.items() if k.startswith(f"before_backend:{prefix}"))
            after = sum(v for k, v in per.items() if k.startswith(f"after_answer:{prefix}"))
            detail = ", ".join(f"{k} {v}" for k, v in per.items() if k.split(":")[1].startswith(prefix))
            lines.append(
                line(
                    f"store round trips before the backend <= 1 (key cached), writes after: {store} {mode}",
                    f"{before:g} before, {after:g} after ({detail})",
                    before <= 1,
                )
            )
    return lines


def door_budget(results: dict[str, Any], c: int) -> list[dict[str, Any]]:
    """chatgw's door of a dialect against a bare pass-through of the same dialect (absent doors: no line)."""
    lines = []
    for door, name in DOORS.items():
        for mode, label in DOOR_MODES:
            gw, base = cpu(results, GATEWAY, f"{door}:{mode}", c), cpu(results, BASELINE, f"{door}:{mode}", c)
            if gw is None and base is None:
                continue
            r = ratio(gw, base)
            lines.append(
                line(
                    f"server CPU per {name}-door {label} <= {CPU_RATIO_MAX}x a bare {name} relay (c={c}, medians)",
                    f"{gw} ms vs {base} ms: {r}x",
                    None if r is None else r <= CPU_RATIO_MAX,
                )
            )
    return lines


def door_table(results: dict[str, Any]) -> list[str]:
    """One line per door and mode: the medians at the headline concurrency, side by side."""
    c = results["settings"]["headline_c"]
    head = "| door | mode | upstream direct ms/req | baseline ms/req | chatgw ms/req | x baseline | chatgw req/s |"
    out = [head, "|---" * (head.count("|") - 1) + "|"]
    for door, name in DOORS.items():
        for mode, _ in DOOR_MODES:
            key = f"{door}:{mode}"
            gw, base = cpu(results, GATEWAY, key, c), cpu(results, BASELINE, key, c)
            if gw is None and base is None:
                continue
            rps = [r["rps"] for r in rows(results, GATEWAY, key, c)]
            out.append(
                f"| {name} | {mode} | {_fmt(cpu(results, 'upstream', key, c), 3)} | {_fmt(base, 3)} | {_fmt(gw, 3)} "
                f"| {_fmt(ratio(gw, base), 2)} | {_fmt(statistics.median(rps) if rps else None)} |"
            )
    return out if len(out) > 2 else []


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def runs_table(results: dict[str, Any]) -> list[str]:
    head = "| target | mode | c | req/s | p50 ms | p95 ms | p99 ms | TTFB p50 ms | CPU ms/req | x baseline | RSS MiB |"
    out = [head, "|---" * (head.count("|") - 1) + "|"]
    for row in results["runs"]:
        base = cpu(results, BASELINE, row["mode"], row["concurrency"])
        r = ratio(row["cpu_ms_per_request"], base) if row["target"].startswith("chatgw") else None
        errors = f" ({row['errors']} errors)" if row["errors"] else ""
        out.append(
            f"| {row['target']} | {row['mode']} | {row['concurrency']} | {_fmt(row['rps'])}{errors} "
            f"| {_fmt(row['p50_ms'], 2)} | {_fmt(row['p95_ms'], 2)} | {_fmt(row['p99_ms'], 2)} "
            f"| {_fmt(row['ttfb_p50_ms'], 2)} | {_fmt(row['cpu_ms_per_request'], 3)} | {_fmt(r, 2)} "
            f"| {_fmt(row['rss_mib'])} |"
        )
    return out


def budget_table(results: dict[str, Any]) -> list[str]:
    out = ["| budget line | measured | status |", "|---|---|---|"]
    out += [f"| {b['line']} | {b['measured']} | {b['status']} |" for b in results.get("budget", [])]
    return out


def cold_table(results: dict[str, Any]) -> list[str]:
    cold = results.get("cold_start")
    if not cold:
        return []
    out = ["| cold start | median wall (to the end of the import) | x floor |", "|---|---|---|"]
    for name, v in cold["imports"].items():
        out.append(f"| {name} | {v['median_s'] * 1000:.0f} ms | {_import_figure(v)} |")
    for name, v in cold["first_answer"].items():
        out.append(f"| first answer: {name} | {_fmt(v['median_s'], 3)} s | |")
    return out


def table(results: dict[str, Any]) -> str:
    parts = ["", *runs_table(results), "", *door_table(results), "", *cold_table(results), "", *budget_table(results)]
    mem = results.get("memory")
    if mem:
        parts += ["", f"memory: {mem}"]
    for store, rt in (results.get("round_trips") or {}).items():
        parts += [f"round trips per request, {store}: {json.dumps({k: v['per_request'] for k, v in rt.items()})}"]
    return "\n".join(parts)


def markdown(results: dict[str, Any]) -> str:
    f = results["features"]
    m = results["machine"]
    parts = [
        "# chatgw benchmark: latest results",
        "",
        f"Made by `make bench` (`python -m bench.run`) on {results['started']}: Python {m['python']}, "
        f"{m['cpus']} CPUs, {m['platform']}; {results['seconds']} s. chatgw backend: "
        + ("`openai` to the fake upstream" if f["openai_backend"] else "`echo` (the openai backend was not present)")
        + f"; DynamoDB store: {'yes (moto server)' if f['dynamodb_store'] else 'not present'}; "
        f"streaming runtime: {'yes' if f['streaming_runtime'] else 'not present'}.",
        "",
        "CPU is user+system of the server's process tree over the requests served (after a warm-up); "
        "`x baseline` is chatgw / the bare FastAPI pass-through in the same run and at the same concurrency; "
        f"the runs at c={results['settings']['headline_c']} are repeated {results['settings']['rounds']} times, "
        "interleaved, and the budget lines use their medians. The machine is 2 shared cores: single runs vary.",
        "",
        "## Budget",
        "",
        *budget_table(results),
        "",
        "## Doors",
        "",
        "Each door to a backend of its own dialect on the fake upstream (Responses: the `openai` backend with "
        "`api: responses`; Messages: the `anthropic` backend), against the baseline relaying the same dialect "
        "to the same fake, at the headline concurrency, medians of the rounds.",
        "",
        *(door_table(results) or ["No other door in this tree."]),
        "",
        "## Runs",
        "",
        *runs_table(results),
        "",
        "## Cold start",
        "",
        *cold_table(results),
        "",
        "## Memory and store round trips",
        "",
        f"`{json.dumps(results.get('memory'))}`",
        "",
    ]
    for store, rt in (results.get("round_trips") or {}).items():
        for mode, counts in rt.items():
            parts.append(
                f"- {store} {mode}: per request `{json.dumps(counts['per_request'])}`; "
                f"first request (key not cached) `{json.dumps(counts['first_request'])}`"
            )
    return "\n".join(parts) + "\n"


def doors_markdown(results: dict[str, Any]) -> str:
    """The page of a `--doors-only` run: the door lines, the budget, every run."""
    m, c = results["machine"], results["settings"]["headline_c"]
    parts = [
        "# chatgw benchmark: the Responses and Messages doors",
        "",
        f"Made by `python -m bench.run --doors-only` on {results['started']}: Python {m['python']}, {m['cpus']} CPUs, "
        f"{m['platform']}; {results['seconds']} s. Each door to a backend of its own dialect on the fake upstream, "
        f"against the baseline relaying the same dialect; c={c}, {results['settings']['rounds']} rounds interleaved, "
        "medians. The machine is 2 shared cores: single runs vary.",
        "",
        *door_table(results),
        "",
        *budget_table(results),
        "",
        *runs_table(results),
    ]
    return "\n".join(parts) + "\n"


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    targets = [
        t for t in ("upstream", BASELINE, GATEWAY, "chatgw-dynamodb") if any(r["target"] == t for r in results["runs"])
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    c = results["settings"]["headline_c"]
    for ax, mode in zip(axes[:2], ("buffered", "stream20"), strict=True):
        values = [cpu(results, t, mode, c) or 0 for t in targets]
        bars = ax.bar(targets, values, color=["#999", "#4a7", "#37c", "#c73"][: len(targets)])
        ax.bar_label(bars, fmt="%.2f")
        base = cpu(results, BASELINE, mode, c)
        if base:
            ax.axhline(CPU_RATIO_MAX * base, color="red", linestyle="--", linewidth=1, label="budget: 2x baseline")
            ax.legend(fontsize=7)
        ax.set_title(f"server CPU ms per request, {mode}, c={c} (median)")
        ax.tick_params(axis="x", labelrotation=15)
    ax = axes[2]
    for t in targets:
        for mode, style in (("buffered", "-o"), ("stream20", "--s")):
            rows = sorted(
                (r for r in results["runs"] if r["target"] == t and r["mode"] == mode), key=lambda r: r["concurrency"]
            )
            if rows:
                ax.plot([r["concurrency"] for r in rows], [r["rps"] for r in rows], style, label=f"{t} {mode}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrency")
    ax.set_title("requests/s (2 cores, loopback)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write(results: dict[str, Any], out: Path, plot_it: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = results["started"].replace(":", "").replace("-", "")
    text = json.dumps(results, indent=2, default=str)
    (out / f"run-{stamp}.json").write_text(text)
    (out / "latest.json").write_text(text)
    (out / "latest.md").write_text(markdown(results))
    if plot_it and not plot(results, out / "latest.png"):
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')")


def _import_figure(v: dict[str, Any]) -> str:
    """An import line: CPU ms and its ratio to the floor, the wall ratio beside it (older results: wall only)."""
    if "cpu_s" not in v:
        return f"{v['median_s'] * 1000:.0f} ms wall: {v['ratio_to_floor']}x"
    return f"{v['cpu_s'] * 1000:.0f} ms CPU: {v['ratio_to_floor']}x (wall {v.get('wall_ratio_to_floor')}x)"
