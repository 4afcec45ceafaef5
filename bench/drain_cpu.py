"""Client CPU of the openai backend per 20-chunk stream, with and without reading the body to its end
after `[DONE]` (backends/_drain.py: the connection is reused, or a new one opened per stream), against
bench/fake_upstream.py in its own process; 4 streams at a time, rounds alternating the order, medians.

    .venv/bin/python -m bench.drain_cpu [--streams 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from chatgw.api.openai_chat.inbound import conversation_of
from chatgw.backends import _drain, build_backend
from chatgw.backends.base import BackendDeps
from chatgw.deadline import Deadline

from .procs import PY, Server, free_port, running

REQUEST = conversation_of({"model": "fake-20", "messages": [{"role": "user", "content": "x"}], "stream": True})


async def cpu_per_stream(port: int, streams: int, reads: int) -> float:
    _drain.MAX_READS = reads
    deps = BackendDeps()
    options = {"base_url": f"http://127.0.0.1:{port}/v1", "upstream_model": "fake-20"}
    backend = build_backend("openai", "fake-20", options, deps)

    async def one() -> None:
        async for _ in backend.stream(REQUEST, Deadline.in_seconds(30)):
            pass

    await asyncio.gather(*[one() for _ in range(4)])  # warm
    start = time.process_time()
    for _ in range(streams // 4):
        await asyncio.gather(*[one() for _ in range(4)])
    spent = (time.process_time() - start) * 1000 / streams
    await deps.aclose()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    variants = {"no drain (a connection per stream)": 0, "drain (connection reused)": _drain.MAX_READS}
    results: dict[str, list[float]] = {name: [] for name in variants}
    with TemporaryDirectory() as tmp:
        port = free_port()
        argv = [PY, "-m", "bench.fake_upstream", "--port", str(port)]
        with running(Server("upstream", argv, port, log=Path(tmp) / "upstream.log")):
            for r in range(args.rounds):
                order = list(variants.items())
                for name, reads in order if r % 2 == 0 else reversed(order):
                    results[name].append(asyncio.run(cpu_per_stream(port, args.streams, reads)))
    for name, values in results.items():
        print(f"{name:36} {statistics.median(values):.3f} ms CPU/stream (rounds {[round(v, 3) for v in values]})")


if __name__ == "__main__":
    main()
