"""Init and SnapStart restore at Lambda's CPU shares (issue 15): short, interleaved rounds, medians.

    python -m bench.snapinit [--rounds 3] [--memory 256 512 1024 1769] [--no-cgroup]

For each CPU share (none, then each memory size as Lambda gives it: memory/1769 of a vCPU, set as a
cgroup v1 cpu quota under /sys/fs/cgroup/cpu; skipped with a message where that is not writable):
- import: `import fastapi, mangum, boto3` + `boto3.client("dynamodb")` (the floor), against the
  buffered entry with the DynamoDB store (`import chatgw.aws_lambda.buffered`, what Lambda's init runs),
  and against the same entry as the stack deploys it (it also reads the pepper secret at init, from
  the moto server here: its CPU counts, the wait does not);
  CPU seconds of the child (user + system, robust on a shared machine) and wall seconds;
- cold: process start to the first answered chat request through the streaming runtime against the
  fake Runtime API, DynamoDB store on a moto server (what a new environment without SnapStart pays);
- snapshot init: process start to `restore/next` with AWS_LAMBDA_INITIALIZATION_TYPE=snap-start;
- restore: from the moment `restore/next` returns (in a forked copy, `bench.snapfork`) to the first
  answered chat request (after-restore hooks, a new event loop, the request). A fork is not a Firecracker
  restore (no snapshot pages to fault in), so this is the runtime's share of a restore only.
Loopback only; every process started here is waited for or killed by its own id."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .procs import PY, ROOT
from .targets import AWS_ENV

FLOOR = "import fastapi, mangum, boto3; boto3.client('dynamodb')"
ENTRY = "import chatgw.aws_lambda.buffered"
OLD_ENTRY = "import chatgw.lambda_buffered"  # where it was before the house went by layer


def entry_of(handler: Path) -> str:
    """The buffered entry's import in another tree, as that tree names it."""
    return ENTRY if (handler / "chatgw" / "aws_lambda" / "buffered.py").exists() else OLD_ENTRY


CGROUP_ROOT = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000
LAMBDA_FULL_VCPU_MB = 1769
DYNAMODB_ENV = {
    **AWS_ENV,
    "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:9",  # never reached: nothing connects at init
    "CHATGW_KEYS_TABLE": "bench-keys",
    "CHATGW_USAGE_TABLE": "bench-usage",
    "CHATGW_LOG_LEVEL": "WARNING",
}


class Share:
    """A cgroup v1 cpu group with the quota of `memory_mb` (None: no limit)."""

    def __init__(self, memory_mb: int | None) -> None:
        self.memory_mb = memory_mb
        self.path: Path | None = None
        if memory_mb is not None:
            self.path = CGROUP_ROOT / f"chatgw-bench-{os.getpid()}-{memory_mb}"
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            quota = max(1000, PERIOD_US * memory_mb // LAMBDA_FULL_VCPU_MB)
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    @property
    def name(self) -> str:
        return "no limit" if self.memory_mb is None else f"{self.memory_mb} MB"

    def enter(self) -> Callable[[], None] | None:
        """A preexec_fn that puts the child in the group before it runs anything."""
        if self.path is None:
            return None
        procs = self.path / "cgroup.procs"
        return lambda: procs.write_text(str(os.getpid()))

    def remove(self) -> None:
        """The group goes once its last process has exited (a killed child may still be exiting)."""
        for _ in range(100):
            if self.path is None or not self.path.exists():
                return
            with contextlib.suppress(OSError):
                self.path.rmdir()
                return
            time.sleep(0.05)


def cgroup_writable() -> str | None:
    """None when quotas can be set, else why not."""
    try:
        probe = Share(256)
        probe.remove()
    except OSError as exc:
        return f"cgroup v1 cpu controller not writable at {CGROUP_ROOT} ({exc.strerror})"
    return None


def absent_in_lambda() -> list[str]:
    """Top-level modules installed here for development but not in the Lambda package
    (handler/requirements.txt): rich, click, pygments, pytest, moto... Some libraries import them when
    they can (httpx imports click, pygments and rich for its command line): here that cost 37 ms of CPU
    that Lambda never pays, so the children measured here see them as Lambda does, missing."""
    import importlib.metadata
    import re

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    text = (ROOT / "handler" / "requirements.txt").read_text()
    locked = {norm(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==", text, re.M)}
    installed = importlib.metadata.packages_distributions()
    return sorted(
        module
        for module, dists in installed.items()
        if module.isidentifier() and module != "chatgw" and not any(norm(d) in locked for d in dists)
    )


def compile_as_built(*trees: Path) -> None:
    """Bytecode for chatgw's own modules, as the deployed package has it (`make build` runs compileall):
    the dependencies got theirs when pip installed them, but chatgw is installed editable, and with
    PYTHONDONTWRITEBYTECODE set (as in this sandbox) every measured child compiled chatgw's ~50 modules
    from source: about 30 ms of CPU per init that a deployed function never pays. Timestamp-checked, so an
    edited source is still recompiled."""
    import compileall

    for tree in trees or (ROOT / "handler",):
        compileall.compile_dir(str(tree / "chatgw") if (tree / "chatgw").is_dir() else str(tree), quiet=2)


AS_IN_LAMBDA = f"import sys as _s; _s.modules.update(dict.fromkeys({absent_in_lambda()!r})); "
REPORT = "; import resource as _r, sys as _s, time as _t; _u = _r.getrusage(_r.RUSAGE_SELF)"
REPORT += "; _s.stdout.write(f'\\n{_u.ru_utime + _u.ru_stime} {_t.time()}')"


def timed_child(code: str, env: dict[str, str], share: Share) -> tuple[float, float]:
    """(wall, cpu) seconds of `python -c CODE` up to the end of CODE, as the child reports them: an
    init ends there (the interpreter's teardown is not part of it and grows with what was built).
    The modules Lambda's package does not have are missing in the child (AS_IN_LAMBDA)."""
    started = time.time()
    done = subprocess.run(
        [PY, "-c", AS_IN_LAMBDA + code + REPORT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=share.enter(),
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{code!r} exited {done.returncode}: {done.stderr[-2000:]}")
    cpu, ended = done.stdout.strip().splitlines()[-1].split()
    return float(ended) - started, float(cpu)


@contextlib.contextmanager
def dynamodb_state(workdir: Path) -> Iterator[tuple[dict[str, str], str]]:
    """A moto server (outside the CPU share: it stands for DynamoDB) with the tables and a key, for
    the runs that answer a request: (env, key)."""
    from .targets import KEYS_TABLE, USAGE_TABLE, create_key, moto_server

    moto = moto_server(workdir / "moto.log").start()
    try:
        env = {
            **AWS_ENV,
            "AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{moto.port}",
            "CHATGW_KEYS_TABLE": KEYS_TABLE,
            "CHATGW_USAGE_TABLE": USAGE_TABLE,
            "CHATGW_LOG_LEVEL": "WARNING",
        }
        yield env, create_key(env)
    finally:
        moto.stop()


def pepper_secret_env(store_env: dict[str, str]) -> dict[str, str]:
    """The entry as the stack deploys it: DYNAMODB_ENV plus the pepper secret (CHATGW_PEPPER_SECRET),
    which init reads from Secrets Manager (here the moto server of `store_env`, outside the share)."""
    import botocore.session

    endpoint = store_env["AWS_ENDPOINT_URL_DYNAMODB"]
    secrets = botocore.session.get_session().create_client(
        "secretsmanager",
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        endpoint_url=endpoint,
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    name = f"chatgw-bench-pepper-{os.getpid()}"
    secrets.create_secret(Name=name, SecretString=json.dumps({"current": "v1", "v1": "bench-pepper-" + "x" * 20}))
    return {**DYNAMODB_ENV, "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint, "CHATGW_PEPPER_SECRET": name}


def chat_event(key: str) -> dict[str, Any]:
    text = (ROOT / "events" / "rest-v1-chat.json").read_text()
    event: dict[str, Any] = json.loads(text.replace("CHATGW_DEV_KEY", key))
    return event


def runtime_runs(env: dict[str, str], key: str, share: Share) -> dict[str, float]:
    """cold (start -> first answer), snapshot init (start -> restore/next), restore (-> first answer)."""
    from chatgw.aws_lambda.fake_runtime_api import FakeRuntimeAPI

    out: dict[str, float] = {}
    with FakeRuntimeAPI() as fake:
        invocation = fake.push(chat_event(key))
        started = time.perf_counter()
        process = subprocess.Popen(
            [PY, "-m", "chatgw.aws_lambda.stream_runtime"],
            cwd=ROOT,
            env={**env, "AWS_LAMBDA_RUNTIME_API": fake.address},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=share.enter(),
        )
        try:
            if invocation.wait(120) and invocation.succeeded:
                out["cold start to first answer"] = time.perf_counter() - started
        finally:
            process.kill()
            process.wait(10)
    with FakeRuntimeAPI(snap_start=True, hold_restore=True) as fake:
        started = time.perf_counter()
        process = subprocess.Popen(
            [PY, "-m", "bench.snapfork"],
            cwd=ROOT,
            env={**env, "AWS_LAMBDA_RUNTIME_API": fake.address, "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=share.enter(),
        )
        try:
            end = time.monotonic() + 120
            while "GET restore/next" not in fake.calls and time.monotonic() < end and process.poll() is None:
                time.sleep(0.002)
            out["snapshot init (start to restore/next)"] = time.perf_counter() - started
            invocation = fake.push(chat_event(key))
            restored = time.perf_counter()
            fake.restored.set()
            if invocation.wait(120) and invocation.succeeded:
                out["restore to first answer (fork)"] = time.perf_counter() - restored
            process.wait(30)
        finally:
            process.kill()
            process.wait(10)
    return out


def median_table(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {share: {k: round(statistics.median(v), 4) for k, v in rows.items() if v} for share, rows in samples.items()}


def run(
    rounds: int,
    memories: list[int],
    use_cgroup: bool,
    say: Callable[[str], None],
    before: Path | None = None,
    runtime: bool = True,
) -> dict[str, Any]:
    shares = [Share(None)]
    reason = cgroup_writable() if use_cgroup else "--no-cgroup"
    if reason is None:
        shares += [Share(m) for m in memories]
    else:
        say(f"CPU shares skipped: {reason}")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATGW_", "AWS_"))}
    base_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "handler"), str(ROOT)])
    samples: dict[str, dict[str, list[float]]] = {s.name: {} for s in shares}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="chatgw-snapinit-") as work,
            dynamodb_state(Path(work)) as (
                store_env,
                key,
            ),
        ):
            deployed_env = pepper_secret_env(store_env)
            compile_as_built(ROOT / "handler", *([before] if before is not None else []))
            for s in shares:  # warm the page cache and __pycache__ once
                timed_child(ENTRY, {**base_env, **DYNAMODB_ENV}, s)
                break
            for number in range(rounds):
                for share in shares:
                    rows = samples[share.name]
                    imports = [
                        ("floor", FLOOR, {**base_env, **DYNAMODB_ENV}),
                        ("buffered entry + DynamoDB", ENTRY, {**base_env, **DYNAMODB_ENV}),
                        ("as deployed: + pepper secret", ENTRY, {**base_env, **deployed_env}),
                    ]
                    if before is not None:
                        before_env = {**base_env, "PYTHONPATH": os.pathsep.join([str(before), str(ROOT)])}
                        entry = entry_of(before)
                        imports.append(("before: buffered entry + DynamoDB", entry, {**before_env, **DYNAMODB_ENV}))
                        imports.append(("before: as deployed: + pepper secret", entry, {**before_env, **deployed_env}))
                    for name, code, env in imports:
                        wall, cpu = timed_child(code, env, share)
                        rows.setdefault(f"{name} wall s", []).append(wall)
                        rows.setdefault(f"{name} cpu s", []).append(cpu)
                    if not runtime:
                        continue
                    for name, seconds in runtime_runs({**base_env, **store_env}, key, share).items():
                        rows.setdefault(f"{name} s", []).append(seconds)
                say(f"round {number + 1}/{rounds} done")
    finally:
        for share in shares:
            share.remove()
    table = median_table(samples)
    for rows in table.values():
        rows["import ratio (cpu)"] = round(rows["buffered entry + DynamoDB cpu s"] / rows["floor cpu s"], 3)
        rows["import ratio (wall)"] = round(rows["buffered entry + DynamoDB wall s"] / rows["floor wall s"], 3)
        rows["as deployed: ratio (cpu)"] = round(rows["as deployed: + pepper secret cpu s"] / rows["floor cpu s"], 3)
        if before is not None:
            for name in ("buffered entry + DynamoDB", "as deployed: + pepper secret"):
                rows[f"before: {name} ratio (cpu)"] = round(rows[f"before: {name} cpu s"] / rows["floor cpu s"], 3)
    return {"rounds": rounds, "medians": table, "samples": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", type=int, nargs="*", default=[256, 512, 1024, 1769])
    parser.add_argument("--no-cgroup", action="store_true")
    parser.add_argument("--before", type=Path, help="also import the buffered entry from this handler/ dir")
    parser.add_argument("--imports-only", action="store_true", help="no runtime runs (cold, snapshot, restore)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    result = run(
        args.rounds,
        args.memory,
        not args.no_cgroup,
        lambda line: print(line, file=sys.stderr),
        before=args.before,
        runtime=not args.imports_only,
    )
    for share, rows in result["medians"].items():
        print(f"{share}:")
        for name, value in rows.items():
            print(f"  {name:45} {value}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
