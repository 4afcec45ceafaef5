"""CPU of chatgw's side of the DynamoDB path, per request (admission + usage write), against a moto
server in its own process (its CPU is not counted): client configurations compared in one run,
interleaved rounds, medians. `--profile` prints the top functions (cProfile, cumulative).
`--before DIR` compares the store code of another tree (e.g. `git archive <commit> handler | tar -x
-C /tmp/before`) with this one, each measured in its own process, rounds interleaved.

    .venv/bin/python -m bench.dynamo_cpu [--requests 300] [--rounds 3] [--profile] [--before DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from bench.procs import PY, Server, free_port, running
from bench.targets import AWS_ENV
from chatgw.access.keys import Limits
from chatgw.store import UsageEvent
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import create_tables, make_client

LIMITS = Limits(requests_per_minute=10**6, tokens_per_minute=10**9, monthly_token_budget=10**12)


def old_client(endpoint: str) -> Any:
    """The client as it was before issue 13: botocore standard retries (3 attempts), validation on."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=2.0, read_timeout=5.0, retries={"mode": "standard", "max_attempts": 3})
    return boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint, config=config)


def new_client(endpoint: str) -> Any:
    return make_client(region="us-east-1", endpoint_url=endpoint)


VARIANTS: dict[str, Callable[[str], Any]] = {"before": old_client, "after": new_client}


def one_request(store: DynamoStore, key_id: str) -> None:
    now = datetime.now(UTC)
    store.admit(key_id, LIMITS, now)
    event = UsageEvent(key_id, uuid.uuid4().hex, now, "gpt-4o-mini", "openai", 1234, 567, "ok", True, 1830, 412)
    store.record_usage(event)


def measure(store: DynamoStore, requests: int) -> float:
    """CPU milliseconds of this process per request."""
    key_id = uuid.uuid4().hex[:12]
    one_request(store, key_id)  # warm: window hint, connection
    start = time.process_time()
    for _ in range(requests):
        one_request(store, key_id)
    return (time.process_time() - start) * 1000 / requests


def compare_trees(before: Path, endpoint: str, requests: int, rounds: int) -> None:
    import subprocess
    import sys

    trees = {"before": {"PYTHONPATH": str(before.resolve())}, "after": {}}
    results: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, extra in trees.items():
            argv = [sys.executable, "-m", "bench.dynamo_cpu", "--child", endpoint, "--requests", str(requests)]
            out = subprocess.run(argv, env={**os.environ, **extra}, capture_output=True, text=True, check=True)
            results[name].append(float(out.stdout.strip().splitlines()[-1]))
    base = statistics.median(results["before"])
    for name, values in results.items():
        median = statistics.median(values)
        rounds_text = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:8} {median:6.2f} ms CPU/request (rounds {rounds_text})  x{median / base:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", choices=sorted(VARIANTS))
    parser.add_argument("--http10", action="store_true", help="moto's own server (closes every connection)")
    parser.add_argument("--before", type=Path, help="a handler/ folder holding the older chatgw")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update(AWS_ENV)
    if args.child:  # one measurement in this process, against the parent's moto server
        store = DynamoStore(make_client(region="us-east-1", endpoint_url=args.child), "keys", "usage")
        print(f"{measure(store, args.requests):.4f}")
        return
    with TemporaryDirectory() as tmp:
        port = free_port()
        argv = [PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        if not args.http10:
            argv = [PY, "-m", "bench.moto_keepalive", str(port)]
        with running(Server("moto", argv, port, env=AWS_ENV, log=Path(tmp) / "moto.log")):
            endpoint = f"http://127.0.0.1:{port}"
            create_tables(make_client(region="us-east-1", endpoint_url=endpoint), "keys", "usage")
            if args.before:
                compare_trees(args.before, endpoint, args.requests, args.rounds)
                return
            stores = {name: DynamoStore(make(endpoint), "keys", "usage") for name, make in VARIANTS.items()}
            if args.profile:
                profiler = cProfile.Profile(time.process_time)
                profiler.enable()
                measure(stores[args.profile], args.requests)
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
                return
            results: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for _ in range(args.rounds):
                for name, store in stores.items():
                    results[name].append(measure(store, args.requests))
            base = statistics.median(results["before"])
            for name, values in results.items():
                median = statistics.median(values)
                rounds = ", ".join(f"{v:.2f}" for v in values)
                print(f"{name:8} {median:6.2f} ms CPU/request (rounds {rounds})  x{median / base:.2f}")


if __name__ == "__main__":
    main()
