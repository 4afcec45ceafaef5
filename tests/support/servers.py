"""Gateways on loopback: `chatgw serve` as a real process, or the app under uvicorn in a thread."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from chatgw.access.keys import new_key
from chatgw.store.sqlite import SqliteStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    base_url: str
    key: str
    state_dir: Path
    process: subprocess.Popen[str] | None = None

    @property
    def openai_base(self) -> str:
        return f"{self.base_url}/v2/llms"

    def store(self) -> SqliteStore:
        return SqliteStore(self.state_dir / "chatgw.db")

    def create_key(self, **fields: Any) -> str:
        store = self.store()
        key, record = new_key("test", **fields)
        store.create_key(record)
        store.close()
        return key


def wait_healthy(base_url: str, timeout: float = 20.0, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"gateway exited: {process.stdout.read() if process.stdout else ''}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("gateway did not become healthy")


@contextlib.contextmanager
def running_gateway(state_dir: Path, env: dict[str, str] | None = None) -> Iterator[Gateway]:
    """`chatgw serve` as a real process on a free loopback port, stopped on exit."""
    port = free_port()
    full_env = {**os.environ, "CHATGW_LOG_LEVEL": "WARNING", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "chatgw.cli.main", "serve", "--port", str(port), "--state-dir", str(state_dir)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process=process)
        key = (state_dir / "dev-key").read_text().strip()
        yield Gateway(base, key, state_dir, process)
    finally:
        stop(process)
        if process.stdout:
            process.stdout.close()


def stop(process: subprocess.Popen[Any]) -> None:
    """Terminate a server process, killing it if it does not exit within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ThreadServer:
    """uvicorn on a free loopback port in a thread: a real socket, so disconnects are real."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_healthy(self.base_url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
