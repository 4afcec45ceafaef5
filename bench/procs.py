"""Server processes for the benchmark: start on a free loopback port, wait until healthy, read the CPU
time (user + system) and resident memory of the whole process tree from /proc, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from `state` on (the name may hold spaces)


def tree(pid: int) -> list[int]:
    """The process and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(int(st[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """user + system CPU of the process tree (children still running; finished ones are in cutime)."""
    total = 0
    for p in tree(pid):
        st = _stat(p)
        if st is not None:
            total += int(st[11]) + int(st[12])  # utime, stime
    return total / CLK_TCK


def rss_bytes(pid: int) -> int:
    total = 0
    for p in tree(pid):
        st = _stat(p)
        if st is not None:
            total += int(st[21]) * PAGE  # rss in pages
    return total


def wait_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.01)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    _log_file: IO[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Server:
        if self.log:
            self._log_file = open(self.log, "ab")  # noqa: SIM115 (closed in stop)
        out = self._log_file or subprocess.DEVNULL
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env={**os.environ, **self.env}, stdout=out, stderr=out, start_new_session=True
        )
        wait_port(self.port, timeout, self.process)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def send_signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


@contextlib.contextmanager
def running(server: Server, timeout: float = 30.0) -> Iterator[Server]:
    try:
        yield server.start(timeout)
    finally:
        server.stop()
