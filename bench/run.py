"""The benchmark: the fake upstream direct, the bare FastAPI baseline and chatgw (SQLite; DynamoDB on a
moto server when that store is present), buffered and 20-chunk streamed, at concurrency 1, 8 and 32;
server CPU per request, memory, cold start, store round trips; ratios chatgw / baseline from this run.

    python -m bench.run [--quick] [--requests N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import coldstart, report, snapinit
from .load import RunResult, Target, run_load
from .procs import ROOT, Server, running
from .targets import (
    AWS_ENV,
    CHAT_PATH,
    KEYS_TABLE,
    USAGE_TABLE,
    Features,
    baseline_server,
    body_for,
    chatgw_env,
    chatgw_server,
    create_key,
    door_request,
    door_target,
    doors,
    model_for,
    moto_server,
    upstream_server,
)

RESULTS = ROOT / "bench" / "results"
MIB = 1024 * 1024


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.features = Features.detect()
        self.runs: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"python": platform.python_version(), "cpus": _cpus(), "platform": platform.platform()},
            "features": self.features.__dict__,
            "settings": {k: v for k, v in vars(args).items() if k != "func"},
            "runs": self.runs,
        }

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    # one measured run -------------------------------------------------------------------

    def measure(
        self,
        server: Server,
        target_name: str,
        key: str,
        *,
        stream: bool,
        chunks: int,
        concurrency: int,
        door: str = "chat",
    ) -> dict[str, Any]:
        mode = f"stream{chunks}" if stream else "buffered"
        if door == "chat":
            target = Target("127.0.0.1", server.port, CHAT_PATH, key)
            body = body_for(target_name, stream, chunks, self.features)
            model = model_for(target_name, chunks, self.features)
        else:  # another door: its path, its dialect's body, and the mode named by the door
            path, model = door_target(door, target_name)
            target = Target("127.0.0.1", server.port, path, key, door=door)
            body = door_request(door, target_name, stream)
            mode = f"{door}:{mode}"
        warm = min(self.args.warmup, self.args.requests)
        asyncio.run(run_load(target, body, stream=stream, concurrency=concurrency, requests=warm, seconds=5))
        cpu0 = server.cpu()
        result: RunResult = asyncio.run(
            run_load(
                target,
                body,
                stream=stream,
                concurrency=concurrency,
                requests=self.args.requests,
                seconds=self.args.seconds,
            )
        )
        cpu = server.cpu() - cpu0
        row = {
            "target": target_name,
            "mode": mode,
            "model": model,
            "concurrency": concurrency,
            **result.to_dict(),
            "cpu_ms_per_request": round(cpu * 1000 / result.requests, 3) if result.requests else None,
            "cpu_utilisation": round(cpu / result.seconds, 2) if result.seconds else None,
            "rss_mib": round(server.rss() / MIB, 1),
        }
        row.pop("extra", None)
        self.runs.append(row)
        self.say(
            f"  {target_name:15} {row['mode']:18} c={concurrency:<3} {result.requests:5} req {result.rps:8.1f}/s "
            f"p50 {result.p50_ms:7.2f} ms  cpu {row['cpu_ms_per_request']} ms/req  errors {result.errors}"
            + (f"  ({result.first_error})" if result.first_error else "")
        )
        return row

    def sweep(self, servers: list[tuple[Server, str, str]], chunk_runs: bool, concurrency: list[int]) -> None:
        """Every (mode, concurrency) against each server in turn, so that the ratios of one pair are
        measured minutes apart at most (this machine may be shared)."""
        for stream in (False, True):
            for c in concurrency:
                for server, name, key in servers:
                    self.measure(server, name, key, stream=stream, chunks=20, concurrency=c)
        if chunk_runs:  # against stream20 at the same concurrency, from above
            for server, name, key in servers:
                self.measure(server, name, key, stream=True, chunks=100, concurrency=self.args.headline_c)
            # more rounds of the budget's pairs, for medians (this machine may be shared)
            for _ in range(self.args.rounds - 1):
                for stream, chunks in ((False, 20), (True, 20), (True, 100)):
                    for server, name, key in servers:
                        if name != "upstream":
                            self.measure(
                                server, name, key, stream=stream, chunks=chunks, concurrency=self.args.headline_c
                            )

    def door_sweep(self, servers: list[tuple[Server, str, str]]) -> None:
        """The Responses and Messages doors, buffered and 20-event streams, at the headline concurrency:
        chatgw beside the baseline relaying the same dialect, interleaved in rounds as the chat pairs."""
        c = self.args.headline_c
        for round_ in range(self.args.rounds):
            for door in doors(self.features):
                for stream in (False, True):
                    for server, name, key in servers:
                        if name != "upstream" or round_ == 0:  # the upstream's own cost once, for reference
                            self.measure(server, name, key, stream=stream, chunks=20, concurrency=c, door=door)

    # the whole run ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        snapinit.compile_as_built()  # every start below (servers, cold starts) loads bytecode, as deployed
        f = self.features
        self.say(
            f"features: openai backend {f.openai_backend}, DynamoDB store {f.dynamodb_store}, "
            f"streaming runtime {f.streaming_runtime}, Responses door {f.responses_door}, "
            f"Messages door {f.messages_door}"
        )
        with running(upstream_server(self.log("upstream"))) as upstream:
            sqlite_env = chatgw_env(self.workdir / "sqlite", upstream.port, f, None)
            sqlite_key = create_key(sqlite_env)
            self.say("throughput, latency, CPU per request:")
            with (
                running(baseline_server(upstream.port, sqlite_key, self.log("baseline"))) as baseline,
                running(chatgw_server("chatgw-sqlite", sqlite_env, self.log("chatgw-sqlite"))) as gw,
            ):
                servers = [
                    (upstream, "upstream", "none"),
                    (baseline, "baseline", sqlite_key),
                    (gw, "chatgw-sqlite", sqlite_key),
                ]
                if not self.args.doors_only:
                    self.sweep(servers, chunk_runs=True, concurrency=self.args.concurrency)
                self.door_sweep(servers)
            if self.args.doors_only:
                self.results["seconds"] = round(time.perf_counter() - started, 1)
                return self.results
            self.results["round_trips"] = {"chatgw-sqlite": self.round_trips(sqlite_env, sqlite_key, "chatgw-sqlite")}
            if f.dynamodb_store and not self.args.skip_dynamodb:
                with running(moto_server(self.log("moto"))) as moto:
                    dyn_env = chatgw_env(self.workdir / "dynamo", upstream.port, f, moto.port)
                    dyn_key = create_key(dyn_env)
                    with running(chatgw_server("chatgw-dynamodb", dyn_env, self.log("chatgw-dynamodb"))) as gw:
                        # moto answers ~10 requests/s here: fewer, shorter runs
                        dyn = [(gw, "chatgw-dynamodb", dyn_key)]
                        self.sweep(dyn, chunk_runs=False, concurrency=[c for c in self.args.concurrency if c <= 8])
                        self.results["moto_cpu_note"] = "moto's own CPU is not counted in chatgw's"
                    self.results["round_trips"]["chatgw-dynamodb"] = self.round_trips(
                        dyn_env, dyn_key, "chatgw-dynamodb"
                    )
            if not self.args.quick:
                self.results["memory"] = self.soak(sqlite_env, sqlite_key)
                self.results["cold_start"] = self.cold_start(upstream, sqlite_env, sqlite_key)
        self.results["seconds"] = round(time.perf_counter() - started, 1)
        return self.results

    def round_trips(self, env: dict[str, str], key: str, name: str) -> dict[str, Any]:
        """Store calls per request, by phase, with the key cached (warm-up first), at concurrency 1."""
        out_path = self.workdir / f"counts-{name}.json"
        n = 50 if not self.args.quick else 10
        out: dict[str, Any] = {}
        for stream in (False, True):
            out_path.unlink(missing_ok=True)
            server = chatgw_server(name, env, self.log(f"{name}-counted"), counted_out=out_path)
            target = Target("127.0.0.1", server.port, CHAT_PATH, key)
            body = body_for(name, stream, 20, self.features)
            with running(server):
                asyncio.run(run_load(target, body, stream=stream, concurrency=1, requests=1, seconds=10))
                time.sleep(0.2)  # the usage write of the first request happens after its answer
                server.send_signal(signal.SIGUSR1)
                first = _read_when_written(out_path)
                out_path.unlink(missing_ok=True)
                asyncio.run(run_load(target, body, stream=stream, concurrency=1, requests=n, seconds=20))
                time.sleep(0.2)
            counts = _read_when_written(out_path)
            per_request = {k: round(v / n, 2) for k, v in sorted(counts.items())}
            out["stream" if stream else "buffered"] = {"per_request": per_request, "first_request": first}
        return out

    def soak(self, env: dict[str, str], key: str) -> dict[str, Any]:
        """Resident memory of a fresh `chatgw serve` after 5,000 and 10,000 requests (half streamed)."""
        self.say("memory: 10,000 requests against a fresh chatgw-sqlite")
        half = self.args.soak // 2
        marks: dict[str, float] = {}
        with running(chatgw_server("chatgw-sqlite", env, self.log("chatgw-soak"))) as gw:
            target = Target("127.0.0.1", gw.port, CHAT_PATH, key)
            marks["rss_start_mib"] = round(gw.rss() / MIB, 1)
            served = 0
            for mark in ("5k", "10k"):
                for stream in (False, True):
                    body = body_for("chatgw-sqlite", stream, 20, self.features)
                    result = asyncio.run(
                        run_load(target, body, stream=stream, concurrency=8, requests=half // 2, seconds=120)
                    )
                    served += result.requests
                marks[f"rss_{mark}_mib"] = round(gw.rss() / MIB, 1)
                marks[f"served_{mark}"] = served
        marks["growth_5k_to_10k_mib"] = round(marks["rss_10k_mib"] - marks["rss_5k_mib"], 1)
        self.say(f"  {marks}")
        return marks

    def cold_start(self, upstream: Server, sqlite_env: dict[str, str], key: str) -> dict[str, Any]:
        self.say("cold start:")
        reps = self.args.cold_repeats
        out: dict[str, Any] = {}
        dynamodb_env = None
        if self.features.dynamodb_store:
            dynamodb_env = {
                **AWS_ENV,
                "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:9",  # never reached: nothing connects at import
                "CHATGW_KEYS_TABLE": KEYS_TABLE,
                "CHATGW_USAGE_TABLE": USAGE_TABLE,
            }
        out["imports"] = coldstart.import_times(sqlite_env, reps, self.features.streaming_runtime, dynamodb_env)
        for name, v in out["imports"].items():
            self.say(f"  {name:70} {v['median_s'] * 1000:7.1f} ms  x{v['ratio_to_floor']}")
        model = model_for("chatgw-sqlite", 20, self.features)
        first: dict[str, Any] = {}
        body = body_for("chatgw-sqlite", False, 20, self.features)
        first["chatgw serve (uvicorn)"] = _median(
            lambda: coldstart.http_first_answer(chatgw_server("chatgw", sqlite_env, self.log("cold")), key, body),
            reps,
        )
        base_body = body_for("baseline", False, 20, self.features)
        first["baseline (uvicorn)"] = _median(
            lambda: coldstart.http_first_answer(baseline_server(upstream.port, key, self.log("cold")), key, base_body),
            reps,
        )
        event = ROOT / "events" / "rest-v1-chat.json"
        first["buffered entry (Mangum), REST v1 event"] = _median(
            lambda: coldstart.buffered_first_answer(sqlite_env, key, event, model), reps
        )
        if self.features.streaming_runtime:
            stream_event = ROOT / "events" / "rest-v1-chat-stream.json"
            first["streaming runtime + fake Runtime API, REST v1 stream event"] = _median(
                lambda: coldstart.streaming_first_answer(sqlite_env, key, stream_event, model), reps
            )
            first["SnapStart restore (fork-simulated) to the end of the first answer"] = _median(
                lambda: coldstart.restore_first_answer(sqlite_env, key, event, model), reps
            )
        for name, v in first.items():
            self.say(f"  first answer, {name:60} {v['median_s']} s")
        out["first_answer"] = first
        return out


def _read_when_written(path: Path) -> dict[str, int]:
    for _ in range(100):
        with contextlib.suppress(FileNotFoundError, ValueError):
            counts: dict[str, int] = json.loads(path.read_text())
            return counts
        time.sleep(0.05)
    return {}


def _median(fn: Any, repeats: int) -> dict[str, Any]:
    samples = [s for s in (fn() for _ in range(repeats)) if s is not None]
    return {
        "median_s": round(statistics.median(samples), 3) if samples else None,
        "samples_s": [round(s, 3) for s in samples],
        "failed": repeats - len(samples),
    }


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="chatgw-bench-"))
        print(f"work dir (kept): {path}", file=sys.stderr)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="chatgw-bench-") as tmp:
            yield Path(tmp)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few requests per run; no soak, no cold start")
    parser.add_argument("--requests", type=int, default=1500, help="requests per measured run (bound)")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per measured run (bound)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--headline-c", type=int, default=8, help="the concurrency whose ratios are the headline")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the headline runs (budget uses medians)")
    parser.add_argument("--soak", type=int, default=10_000, help="requests of the memory soak")
    parser.add_argument("--cold-repeats", type=int, default=7)
    parser.add_argument("--skip-dynamodb", action="store_true")
    parser.add_argument(
        "--doors-only",
        action="store_true",
        help="only the Responses and Messages doors beside their relays (writes doors.json and doors.md, not latest.*)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, SQLite files)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.seconds, args.warmup, args.rounds = min(args.requests, 30), min(args.seconds, 5.0), 5, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with workdir(args.keep) as tmp:
        results = Bench(args, tmp).run()
    results["budget"] = report.budget(results, args.headline_c)
    print(report.table(results))
    if not (args.quick or args.doors_only):
        report.write(results, args.out, plot_it=not args.no_plot)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        name = "quick" if args.quick else "doors"
        (args.out / f"{name}.json").write_text(json.dumps(results, indent=2, default=str))
        if not args.quick:
            (args.out / "doors.md").write_text(report.doors_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
