"""`chatgw serve` on a shared laptop: the SQLite files are private to their owner (key hashes and the
ledger are not for other local users), and a connection whose headers never finish is closed
(docs/hardening.md, the security table: 9b, 9c)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from chatgw.access.keys import new_key
from chatgw.cli.server import HEADER_TIMEOUT_ENV, uvicorn_options
from chatgw.compose import Container
from chatgw.store.base import UsageEvent
from chatgw.store.sqlite import SqliteStore
from tests.support.servers import free_port, wait_healthy


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_sqlite_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files 0644 unless made otherwise
    try:
        state = tmp_path / "state"
        store = SqliteStore(state / "chatgw.db")
        _, record = new_key("k")
        store.create_key(record)
        at = datetime.now(UTC)
        fields = {"model": "echo", "backend": "echo", "prompt_tokens": 1, "completion_tokens": 1, "latency_ms": 1}
        store.record_usage(UsageEvent(record.key_id, "r1", at, status="ok", streamed=False, **fields))  # type: ignore[arg-type]
        files = sorted(p for p in state.iterdir() if p.name.startswith("chatgw.db"))
        assert {p.name for p in files} >= {"chatgw.db", "chatgw.db-wal", "chatgw.db-shm"}
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
        assert mode(state) == 0o700
        store.close()
        (state / "chatgw.db").chmod(0o644)  # an existing file made before the fix is tightened
        SqliteStore(state / "chatgw.db").close()
        assert mode(state / "chatgw.db") == 0o600
    finally:
        os.umask(old)


# `chatgw serve`'s header-read timeout ----------------------------------------------------------


class Served:
    """The app under uvicorn configured as `chatgw serve` configures it, on a loopback port."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, **uvicorn_options())
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        wait_healthy(f"http://127.0.0.1:{self.port}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def closed_by_server(sock: socket.socket, trickle: bytes = b"", wait_s: float = 15.0) -> bool:
    """Whether the server closes the connection within `wait_s`, while `trickle` is sent a byte at a time."""
    sock.settimeout(0.1)
    deadline = time.monotonic() + wait_s
    sent = 0
    while time.monotonic() < deadline:
        try:
            if sent < len(trickle):
                sock.sendall(trickle[sent : sent + 1])
                sent += 1
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_serve_closes_connections_whose_headers_never_finish(
    make_container: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HEADER_TIMEOUT_ENV, "0.5")
    gw = make_container()
    with Served(gw.app) as served, contextlib.ExitStack() as stack:
        address = ("127.0.0.1", served.port)
        silent = [stack.enter_context(socket.create_connection(address)) for _ in range(10)]
        slow = [stack.enter_context(socket.create_connection(address)) for _ in range(10)]
        headers = b"POST /v2/llms/chat/completions HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: 1\r\n" * 400
        for sock in slow:
            sock.sendall(headers[:10])
        # a normal client is served meanwhile, and keeps its connection between requests
        with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=5) as client:
            assert client.get("/health").status_code == 200
            assert client.get("/health").status_code == 200
        assert all(closed_by_server(s) for s in silent)
        assert all(closed_by_server(s, headers[10:]) for s in slow)  # a byte every 0.1 s does not keep it
        kept = stack.enter_context(socket.create_connection(address))  # one request, then a trickle
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in kept.recv(4096)
        assert closed_by_server(kept, b"GET /health HTTP/1.1\r\n" + b"X-Slow: 1\r\n" * 400)
