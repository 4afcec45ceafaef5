"""The CLI as a new user meets it: one-line errors and non-zero exits, never a traceback; a pipe that
closes early ends quietly; read-only commands create nothing; expired keys are called expired."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chatgw.access.keys import new_key
from chatgw.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[3]
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("CHATGW_")}


def chatgw(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatgw.cli.main", *argv],
        env={**CLEAN_ENV, "CHATGW_LOG_LEVEL": "WARNING", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def one_line_error(out: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("chatgw: ") and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert fragment in out.stderr


def test_invoke_a_missing_event_file(tmp_path: Path) -> None:
    out = chatgw("invoke", "events/nope.json", "--state-dir", str(tmp_path / "s"))
    one_line_error(out, 1, "cannot read events/nope.json: No such file or directory")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("content", "fragment"), [("{}", "not an API Gateway"), ("{nope", "not JSON")])
def test_invoke_an_event_that_is_not_one(tmp_path: Path, content: str, fragment: str) -> None:
    event = tmp_path / "event.json"
    event.write_text(content)
    one_line_error(chatgw("invoke", str(event), "--state-dir", str(tmp_path / "s")), 2, fragment)


def test_replay_a_missing_log(tmp_path: Path) -> None:
    out = chatgw("replay", str(tmp_path / "missing.log"), "--state-dir", str(tmp_path / "s"))
    one_line_error(out, 1, "missing.log: No such file or directory")


@pytest.mark.parametrize(
    "command", [["keys", "list"], ["keys", "show", "abcdefgh1234"], ["usage"], ["pepper", "status"]]
)
def test_read_only_commands_create_no_state_dir(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    out = chatgw(*command, "--state-dir", str(missing))
    one_line_error(out, 2, f"--state-dir {missing}: no such folder (nothing created")
    assert not missing.exists() and not missing.parent.exists()


@pytest.mark.parametrize(
    "command", [["keys", "list"], ["keys", "show", "abcdefgh1234"], ["usage"], ["pepper", "status"]]
)
def test_read_only_commands_on_a_folder_without_a_store_create_none(tmp_path: Path, command: list[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = chatgw(*command, "--state-dir", str(empty))
    assert out.stderr.startswith(f"chatgw: no chatgw store in {empty} yet (nothing created)\n")
    assert out.returncode == (1 if command[1:] == ["show", "abcdefgh1234"] else 0)  # "no such key"
    assert "Traceback" not in out.stderr
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("stream", [False, True])
def test_invoke_with_a_state_dir_that_does_not_exist_creates_nothing(tmp_path: Path, stream: bool) -> None:
    typo = tmp_path / "stat"
    out = chatgw("invoke", "events/rest-v1-chat.json", "--state-dir", str(typo), *(["--stream"] if stream else []))
    one_line_error(out, 2, f"--state-dir {typo}: no such folder")
    assert not typo.exists()


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "chatgw.db")
    for i in range(400):  # more JSON than a pipe's buffer holds, so the writer meets the closed pipe
        store.create_key(new_key(f"key-{i}", tags={"team": "x" * 50})[1])
    store.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "chatgw.cli.main", "keys", "list", "--json", "--state-dir", str(tmp_path)],
        env=CLEAN_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().strip() == "["
    process.stdout.close()  # as `| head -1` does
    stderr = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == 0
    assert stderr == ""


def test_an_expired_key_is_warned_about_and_listed_as_expired(tmp_path: Path) -> None:
    state = ["--state-dir", str(tmp_path)]
    created = chatgw("keys", "create", "--name", "old", "--expires", "2020-01-01", *state)
    assert created.returncode == 0
    assert "warning: key" in created.stderr and "expired already (2020-01-01T00:00+00:00)" in created.stderr
    listed = chatgw("keys", "list", *state)
    header, row = listed.stdout.splitlines()
    assert row.split()[header.split().index("ENABLED")] == "expired"
    (data,) = json.loads(chatgw("keys", "list", "--json", *state).stdout)
    assert data["expired"] is True and data["enabled"] is True


def test_update_says_when_running_gateways_see_the_change(tmp_path: Path) -> None:
    state = ["--state-dir", str(tmp_path)]
    key_id = json.loads(chatgw("keys", "create", "--name", "a", "--json", *state).stdout)["key_id"]
    out = chatgw("keys", "update", key_id, "--rpm", "5", *state)
    assert out.returncode == 0 and "CHATGW_KEY_CACHE_SECONDS" in out.stderr


def test_serve_on_a_port_in_use_says_so_before_serving(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        out = chatgw("serve", "--port", port, "--state-dir", str(tmp_path))
    one_line_error(out, 1, f"cannot listen on 127.0.0.1:{port}")
    assert "serving on" not in out.stdout


def test_no_aws_credentials_is_named(tmp_path: Path) -> None:
    env = {k: v for k, v in CLEAN_ENV.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",  # never reach for an instance's metadata service
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:9",  # never reached: signing fails first
    }
    out = subprocess.run(
        [sys.executable, "-m", "chatgw.cli.main", "tables", "create"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    one_line_error(out, 1, "no AWS credentials found")


def test_serve_sends_small_writes_at_once() -> None:
    """`serve` binds its socket itself (a busy port is reported first); each connection it accepts
    must still get TCP_NODELAY, as when uvicorn binds: without it every keep-alive request after the
    first waited 40 ms for the client's delayed ACK (headers and body are two writes)."""
    import asyncio

    from chatgw.cli.serve import listen

    listening = listen("127.0.0.1", 0)

    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listening)
        async with server:
            _, writer = await asyncio.open_connection(*listening.getsockname()[:2])
            value = await asyncio.wait_for(seen, 10)
            writer.close()
            return value

    assert asyncio.run(accepted_nodelay()) != 0
