"""Cold start: import time of the entry points against `import fastapi, mangum, boto3` (the floor), in the
same run, interleaved, medians of N, measured as bench.snapinit does (CPU and wall of the child up to the
end of the import); and the time from process start to the first answered request."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from .load import Target, first_answer
from .procs import PY, ROOT, Server
from .targets import CHAT_PATH

FLOOR_NAME = "floor: import fastapi, mangum, boto3"
CLIENT_FLOOR_NAME = "floor with the client: import fastapi, mangum, boto3; boto3.client('dynamodb')"
CLIENT_FLOOR = "import fastapi, mangum, boto3; boto3.client('dynamodb')"
HTTPX_FLOOR_NAME = "floor with the client and httpx: the above; import httpx"
HTTPX_FLOOR = CLIENT_FLOOR + "; import httpx"
DYNAMODB_ENTRY = "buffered entry with the DynamoDB store"
DYNAMODB_DEFAULT = f"{DYNAMODB_ENTRY}, the stack's default catalog (echo) (x the floor with the client)"
DYNAMODB_OPENAI = f"{DYNAMODB_ENTRY}, an OpenAI-compatible catalog (x the floor with the client and httpx)"
BUFFERED = "buffered entry: import chatgw.aws_lambda.buffered (builds the app)"
IMPORTS = {
    FLOOR_NAME: "import fastapi, mangum, boto3",
    "interpreter: pass": "pass",
    BUFFERED: "import chatgw.aws_lambda.buffered",
}
STREAMING_IMPORTS = {
    "streaming entry: import chatgw.aws_lambda.stream_runtime": "import chatgw.aws_lambda.stream_runtime",
    "streaming entry + app build": "import chatgw.aws_lambda.stream_runtime, chatgw.compose as c; c.app()",
}


def _timed(code: str, env: dict[str, str]) -> tuple[float, float]:
    """(wall, cpu) seconds of `python -c CODE` up to the end of CODE, as bench.snapinit measures an init:
    the interpreter's teardown is not part of a Lambda init (the runtime asks for the next event)."""
    from .snapinit import Share, timed_child

    return timed_child(code, env, Share(None))


def import_times(
    env: dict[str, str], repeats: int, streaming: bool, dynamodb_env: dict[str, str] | None
) -> dict[str, Any]:
    """Median CPU and wall time of `python -c CODE` for each entry, interleaved so that drift hits all
    alike. The ratio to the floor is of CPU seconds (user + system of the child): on a shared machine
    wall time also counts the other processes' turns; the wall ratio is given beside it."""
    base_env = {**os.environ, **env}
    commands = {name: (code, base_env) for name, code in IMPORTS.items()}
    if streaming:
        commands.update({name: (code, base_env) for name, code in STREAMING_IMPORTS.items()})
    if dynamodb_env is not None:  # what Lambda runs: the DynamoDB store (boto3), nothing touches the network
        # Its floor (issue 15) includes making the client, which the entry does at init as well. As the
        # stack deploys it by default (Models empty: echo only), and with an OpenAI-compatible catalog,
        # whose backend needs httpx: against a floor that imports httpx too (any such gateway would).
        with_catalog = {**base_env, **dynamodb_env}
        default = {k: v for k, v in with_catalog.items() if k != "CHATGW_MODELS"}
        commands[CLIENT_FLOOR_NAME] = (CLIENT_FLOOR, default)
        commands[DYNAMODB_DEFAULT] = (IMPORTS[BUFFERED], default)
        if "CHATGW_MODELS" in with_catalog:
            commands[HTTPX_FLOOR_NAME] = (HTTPX_FLOOR, with_catalog)
            commands[DYNAMODB_OPENAI] = (IMPORTS[BUFFERED], with_catalog)
    for code, run_env in commands.values():  # warm the OS page cache and __pycache__
        _timed(code, run_env)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, (code, run_env) in commands.items():
            wall, cpu = _timed(code, run_env)
            walls[name].append(wall)
            cpus[name].append(cpu)
    wall_of = {name: statistics.median(v) for name, v in walls.items()}
    cpu_of = {name: statistics.median(v) for name, v in cpus.items()}

    def floor_of(name: str) -> str:
        return {DYNAMODB_DEFAULT: CLIENT_FLOOR_NAME, DYNAMODB_OPENAI: HTTPX_FLOOR_NAME}.get(name, FLOOR_NAME)

    return {
        name: {
            "median_s": round(wall_of[name], 4),
            "cpu_s": round(cpu_of[name], 4),
            "ratio_to_floor": round(cpu_of[name] / cpu_of[floor_of(name)], 3),
            "wall_ratio_to_floor": round(wall_of[name] / wall_of[floor_of(name)], 3),
            "samples_s": [round(s, 4) for s in walls[name]],
            "cpu_samples_s": [round(s, 4) for s in cpus[name]],
        }
        for name in commands
    }


def http_first_answer(server: Server, key: str, body: bytes, timeout: float = 30.0) -> float | None:
    """Seconds from spawning `server` to its first answered chat request (polling every 5 ms)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        server.argv,
        cwd=ROOT,
        env={**os.environ, **server.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server.process = process
    try:
        target = Target("127.0.0.1", server.port, CHAT_PATH, key)
        answered = asyncio.run(first_answer(target, body, stream=False, timeout_s=timeout))
        return None if answered is None else answered - started
    finally:
        server.stop()


def buffered_first_answer(env: dict[str, str], key: str, event_path: Path, model: str) -> float | None:
    """Seconds from starting `python -m bench.cold_buffered` (import of the buffered entry, then one event
    through its Mangum handler) to the moment it has the answer."""
    started = time.time()
    done = subprocess.run(
        [PY, "-m", "bench.cold_buffered", str(event_path), key, model],
        cwd=ROOT,
        env={**os.environ, **env, "CHATGW_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        return None
    return float(done.stdout.strip().splitlines()[-1]) - started


def load_event(event_path: Path, key: str, model: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(event_path.read_text().replace("CHATGW_DEV_KEY", key))
    body = json.loads(event["body"])
    body["model"] = model
    event["body"] = json.dumps(body)
    return event


def streaming_first_answer(env: dict[str, str], key: str, event_path: Path, model: str) -> float | None:
    """Seconds from starting the streaming runtime (`python -m chatgw.aws_lambda.stream_runtime`) against a fake
    Runtime API on loopback to the end of its first streamed response."""
    from chatgw.aws_lambda.fake_runtime_api import FakeRuntimeAPI  # type: ignore[import-not-found,unused-ignore]

    with FakeRuntimeAPI() as fake:
        invocation = fake.push(load_event(event_path, key, model))
        started = time.perf_counter()
        process = subprocess.Popen(
            [PY, "-m", "chatgw.aws_lambda.stream_runtime"],
            cwd=ROOT,
            env={**os.environ, **env, "AWS_LAMBDA_RUNTIME_API": fake.address, "CHATGW_LOG_LEVEL": "WARNING"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            finished = invocation.wait(30)
            elapsed = time.perf_counter() - started
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return elapsed if finished and invocation.succeeded else None


def restore_first_answer(env: dict[str, str], key: str, event_path: Path, model: str) -> float | None:
    """Seconds from the end of `restore/next` to the end of the first answer, in a SnapStart restore
    simulated by fork (`bench.snapfork`: the streaming runtime initialised with snap-start, forked at
    restore/next): after-restore hooks, a new event loop, the request. Not Firecracker's own restore."""
    from chatgw.aws_lambda.fake_runtime_api import FakeRuntimeAPI  # type: ignore[import-not-found,unused-ignore]

    with FakeRuntimeAPI(snap_start=True, hold_restore=True) as fake:
        process = subprocess.Popen(
            [PY, "-m", "bench.snapfork"],
            cwd=ROOT,
            env={
                **os.environ,
                **env,
                "AWS_LAMBDA_RUNTIME_API": fake.address,
                "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
                "CHATGW_LOG_LEVEL": "WARNING",
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while "GET restore/next" not in fake.calls:
                if process.poll() is not None or time.monotonic() > deadline:
                    return None
                time.sleep(0.002)
            invocation = fake.push(load_event(event_path, key, model))
            restored = time.perf_counter()
            fake.restored.set()
            finished = invocation.wait(30)
            elapsed = time.perf_counter() - restored
        finally:
            process.kill()
            process.wait(10)
        return elapsed if finished and invocation.succeeded else None
