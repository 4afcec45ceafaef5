"""Every shell command of README.md and docs/deploy.md that runs without an AWS account runs here,
as written, through bash, in a temporary folder (with the repository's `events/`), with free ports:
a doc that drifts from the code fails this test. Commands that need an account (`--stack`, `aws`,
`sam deploy`) are listed, not run; the few written as a syntax summary (`a | b`, `[--opt]`) are
expanded into the concrete commands they stand for, and a new one must be added to EXPANSIONS."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "deploy.md"]
NEEDS_ACCOUNT = re.compile(r"--stack|(^|\s)aws\s|sam deploy|\$BASE|^BASE=|--query|--output text|\.venv-sam/bin/sam")
ELSEWHERE = {
    "make test": "this suite is what make test runs",
    "make install": "make test runs it first",
    "make build": "tests/integration/test_template.py::test_sam_build_packages_the_function_without_a_container",
}
WAIT_UP = """
wait_port() { "$PY" -c '
import socket, sys, time
for _ in range(400):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close(); sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)' "$1"; }
set -m  # each background server in a process group of its own, stopped whole at the end
trap 'for p in $(jobs -p); do kill -- -$p 2>/dev/null; done; wait' EXIT
"""
FIRST_KEY = """ID=$(chatgw keys list --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[0]["key_id"])')"""
EXPANSIONS: dict[str, list[str]] = {
    "chatgw keys create --name my-app --models echo 'gpt-4o*' --rpm 60 --tpm 100000 "
    "--monthly-tokens 5000000 --max-tokens 1024 --expires 90d --tag team=search": [
        "chatgw keys create --name my-app --models echo 'gpt-4o*' --rpm 60 --tpm 100000 "
        "--monthly-tokens 5000000 --max-tokens 1024 --expires 90d --tag team=search",
        FIRST_KEY,
    ],
    "chatgw keys show ID | update ID --rpm 120 --tpm none | disable ID | enable ID | rotate ID | delete ID": [
        'chatgw keys show "$ID"',
        'chatgw keys update "$ID" --rpm 120 --tpm none',
        'chatgw keys disable "$ID"',
        'chatgw keys enable "$ID"',
        'chatgw keys rotate "$ID"',
        "chatgw keys create --name spare >/dev/null",
        'chatgw keys delete "$ID"',
        FIRST_KEY,
    ],
    "chatgw usage [--key ID] [--month M | --day D | --from D --to D] [--by owner|tag:NAME|model|day] "
    "[--csv|--json|--html F]": [
        "chatgw usage",
        'chatgw usage --key "$ID" --month 2026-11 --by owner --csv',
        "chatgw usage --day 2026-11-25 --by tag:team --json",
        "chatgw usage --from 2026-11-01 --to 2026-11-30 --by model --html usage.html",
        "chatgw usage --from 2026-11-01 --to 2026-11-30 --by day",
    ],
    "chatgw usage --key ID --day 2026-11-25 --json": [
        "chatgw keys create --name a >/dev/null",
        FIRST_KEY,
        'chatgw usage --key "$ID" --day 2026-11-25 --json',
    ],
    "chatgw replay lambda.log": [
        """echo '{"msg": "usage_event", "usage_event": {"key_id": "abcdefgh1234", "request_id": "r-1", """
        """"at": "2026-11-25T10:00:00+00:00", "model": "echo", "backend": "echo", "prompt_tokens": 3, """
        """"completion_tokens": 2, "status": "ok", "streamed": false, "latency_ms": 5}}' > lambda.log""",
        "chatgw replay lambda.log",
    ],
    "chatgw smoke --stack chatgw | --url BASE_URL --key KEY": [
        'CHATGW_MODELS=\'{"echo": {"backend": "echo", "delay_ms": 30}}\' chatgw serve --port $SERVE_PORT '
        "--state-dir smoke-state > serve.log 2>&1 &",
        "wait_port $SERVE_PORT",
        'chatgw smoke --url http://127.0.0.1:$SERVE_PORT/v2/llms --key "$(cat smoke-state/dev-key)"',
    ],
    "chatgw keys update ID --shards 16 --keys-table K --usage-table U": [
        "chatgw tables create --keys-table ks-$SERVE_PORT --usage-table us-$SERVE_PORT",
        "HOT=$(chatgw keys create --name hot --rpm 6000 --keys-table ks-$SERVE_PORT --usage-table us-$SERVE_PORT "
        """--json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["key_id"])')""",
        'chatgw keys update "$HOT" --shards 16 --keys-table ks-$SERVE_PORT --usage-table us-$SERVE_PORT',
    ],
    "chatgw tables create [--keys-table K --usage-table U]": [
        "chatgw tables create --keys-table k-$SERVE_PORT --usage-table u-$SERVE_PORT",
    ],
    "chatgw serve --keys-table K --usage-table U [--dev-key]": [
        "chatgw serve --keys-table k-$SERVE_PORT --usage-table u-$SERVE_PORT --port $DYNAMO_SERVE_PORT --dev-key "
        "> serve-dynamo.log 2>&1 &",
        "wait_port $DYNAMO_SERVE_PORT",
        "test -s .chatgw/dev-key.k-$SERVE_PORT",
    ],
}


def blocks() -> list[tuple[str, list[str]]]:
    """Each ```sh block of the docs: its file and its commands (continuations joined, comments cut)."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```(?:sh|bash)\n(.*?)```", doc.read_text(), re.S):
            text = block.replace("\\\n", " ")
            commands = [re.sub(r"\s+# .*$", "", line).strip() for line in text.splitlines()]
            commands = [re.sub(r"\s+", " ", c) for c in commands if c and not c.startswith("#")]
            found.append((doc.name, commands))
    return found


def plan(commands: list[str]) -> tuple[list[str], list[str]]:
    """(bash lines to run, commands left out and why)."""
    run: list[str] = []
    left: list[str] = []
    for command in commands:
        bare = re.sub(r"^(\.venv/bin/)?chatgw ", "chatgw ", command)
        if bare in EXPANSIONS:
            run += EXPANSIONS[bare]
        elif command in ELSEWHERE:
            left.append(f"{command}: {ELSEWHERE[command]}")
        elif NEEDS_ACCOUNT.search(command):
            left.append(f"{command}: needs an AWS account")
        elif command.startswith("make run"):
            run += ["make -C $ROOT run PORT=$SERVE_PORT STATE_DIR=$PWD/make-run-state > make-run.log 2>&1 &"]
            run += ["wait_port $SERVE_PORT", "kill -- -$!"]
        else:
            assert not re.search(r" \| [a-z-]+ [A-Z]|\[--", bare), f"a syntax summary to add to EXPANSIONS: {command}"
            run.append(re.sub(r"(?<=\s)ID(?=\s|$)", '"$ID"', command))  # the key made above
            if command.endswith("&"):  # a server: wait until it listens
                port = re.search(r"(?:-p|--port) (\d+)", command)
                assert port, f"a background command without a port: {command}"
                run.append(f"wait_port {port.group(1)}")
    return run, left


RUNNABLE = [(doc, i) for i, (doc, commands) in enumerate(blocks()) if plan(commands)[0]]


@pytest.mark.parametrize(("doc", "index"), RUNNABLE)
def test_the_docs_commands_run_as_written(doc: str, index: int, tmp_path: Path, moto_server: object) -> None:
    _, commands = blocks()[index]
    lines, _ = plan(commands)
    ports = {"5055": str(free_port()), "8055": str(free_port())}
    script = "\n".join(lines)
    for old, new in ports.items():
        script = script.replace(old, new)
    script = re.sub(r"(^|\s|\()(\.venv/bin/)?chatgw ", rf"\1{BIN}/chatgw ", script, flags=re.M)
    script = re.sub(r"(^|\s)\.venv/bin/moto_server ", rf"\1{BIN}/moto_server ", script, flags=re.M)
    (tmp_path / "events").symlink_to(ROOT / "events")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATGW_", "AWS_"))}
    env |= {
        "PY": sys.executable,
        "ROOT": str(ROOT),
        "SERVE_PORT": str(free_port()),
        "DYNAMO_SERVE_PORT": str(free_port()),
        "CHATGW_LOG_LEVEL": "WARNING",
        # DynamoDB commands of the README's reference block reach the suite's moto server; the
        # deploy.md walkthrough starts (and exports) its own.
        "AWS_ENDPOINT_URL_DYNAMODB": str(getattr(moto_server, "endpoint", "")),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    }
    full = f"set -euo pipefail\n{WAIT_UP}\n{script}\n"
    (tmp_path / "doc.sh").write_text(full)
    out = subprocess.run(["bash", "doc.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log") if p.name != "lambda.log")
    assert out.returncode == 0, (
        f"{doc} block {index}:\n{full}\n--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}\n{logs}"
    )
    assert "Traceback" not in out.stderr


def test_every_block_is_run_or_said_why_not() -> None:
    """Nothing silently dropped: each command runs, or is left out with its reason (an account, or
    another test); the walkthroughs that matter most are among those that run."""
    left_out = []
    for _, commands in blocks():
        _, left = plan(commands)
        left_out += left
        assert all(": " in reason for reason in left)
    ran = [c for _, commands in blocks() for c in commands if not any(r.startswith(f"{c}: ") for r in left_out)]
    assert any("moto_server" in c for c in ran) and any("invoke" in c for c in ran)
    assert any(c.startswith("make run") for c in ran)
    assert all("--stack" not in line for _, commands in blocks() for line in plan(commands)[0])
