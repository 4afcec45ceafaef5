"""Before/after: chatgw from another source tree (`--before DIR`, e.g. a `git archive` of an older
commit's `handler/`) against this tree's chatgw and the baseline, runs interleaved round by round,
server CPU per request at one concurrency; medians of the rounds.

    git archive <commit> handler | tar -x -C /tmp/before
    python -m bench.ab --before /tmp/before/handler [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from .procs import running
from .run import Bench, parse_args
from .targets import baseline_server, chatgw_env, chatgw_server, create_key, upstream_server

MODES = {  # (streamed, chunks, door): the doors' modes need that door in both trees
    "buffered": (False, 20, "chat"),
    "stream20": (True, 20, "chat"),
    "stream100": (True, 100, "chat"),
    "responses:buffered": (False, 20, "responses"),
    "responses:stream20": (True, 20, "responses"),
    "messages:buffered": (False, 20, "messages"),
    "messages:stream20": (True, 20, "messages"),
}
DEFAULT_MODES = ["buffered", "stream20", "stream100"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="a handler/ folder holding the older chatgw")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=DEFAULT_MODES)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chatgw-ab-") as tmp:
        work = Path(tmp)
        bench = Bench(parse_args(["--requests", str(args.requests), "--seconds", str(args.seconds)]), work)
        doors = {MODES[m][2] for m in args.modes}
        # only the doors asked for: an older tree's catalog would refuse a backend it does not have
        f = replace(
            bench.features,
            responses_door=bench.features.responses_door and "responses" in doors,
            messages_door=bench.features.messages_door and "messages" in doors,
        )
        with running(upstream_server(work / "upstream.log")) as upstream:
            env = chatgw_env(work / "state", upstream.port, f, None)
            key = create_key(env)
            before_env = {**env, "PYTHONPATH": str(args.before.resolve())}
            with (
                running(baseline_server(upstream.port, key, work / "baseline.log")) as base,
                running(chatgw_server("before", before_env, work / "before.log")) as before,
                running(chatgw_server("after", env, work / "after.log")) as after,
            ):
                for _ in range(args.rounds):
                    for stream, chunks, door in (MODES[m] for m in args.modes):
                        for server, name in ((base, "baseline"), (before, "chatgw-before"), (after, "chatgw-after")):
                            target = "chatgw-sqlite" if name.startswith("chatgw") else name
                            row = bench.measure(
                                server,
                                target,
                                key,
                                stream=stream,
                                chunks=chunks,
                                concurrency=args.concurrency,
                                door=door,
                            )
                            row["target"] = name
    cpu: dict[str, dict[str, list[float]]] = {}
    for row in bench.runs:
        cpu.setdefault(row["target"], {}).setdefault(row["mode"], []).append(row["cpu_ms_per_request"])
    medians = {t: {m: round(statistics.median(v), 3) for m, v in by.items()} for t, by in cpu.items()}
    print(f"\nserver CPU ms per request, c={args.concurrency}, median of {args.rounds} interleaved rounds")
    print("| | " + " | ".join(args.modes) + " | per extra chunk (us) |\n|---|" + "---|" * (len(args.modes) + 1))
    for t, by in medians.items():
        chunk = (
            round((by["stream100"] - by["stream20"]) * 1000 / 80, 1) if "stream100" in by and "stream20" in by else "-"
        )
        print(f"| {t} | " + " | ".join(str(by[m]) for m in args.modes) + f" | {chunk} |")
    for t in ("chatgw-before", "chatgw-after"):
        ratios = {m: round(medians[t][m] / medians["baseline"][m], 2) for m in args.modes if m != "stream100"}
        print(f"{t} / baseline: {json.dumps(ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
