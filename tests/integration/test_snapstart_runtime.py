"""SnapStart through the streaming runtime, against the fake Runtime API initialised for a snapshot
(`FakeRuntimeAPI(snap_start=True)`, which serves `restore/next` and `restore/error` as Lambda's
runtime interface emulator does for that init type)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import snapshot_restore_py
from mangum.types import ASGI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatgw.aws_lambda import snapstart
from chatgw.aws_lambda.fake_runtime_api import FakeRuntimeAPI
from chatgw.aws_lambda.stream_runtime import run
from tests.support.bootstrap import BOOTSTRAP, MANAGED_RUNTIME_COMMAND, wrapper_env
from tests.support.lambda_events import rest_v1_event

SNAP_START = {snapstart.INIT_TYPE_ENV: snapstart.SNAP_START}


@pytest.fixture(autouse=True)
def hook_registry() -> Iterator[None]:
    """snapshot_restore_py keeps one registry per process: each test starts and ends with it empty."""
    before, after = snapshot_restore_py.get_before_snapshot(), snapshot_restore_py.get_after_restore()
    saved = (list(before), list(after))
    before.clear()
    after.clear()
    yield
    before[:] = saved[0]
    after[:] = saved[1]


class Journal:
    """What happened, in order: the app build, each hook, each request the app answered."""

    def __init__(self) -> None:
        self.entries: list[str] = []

    def hook(self, name: str, fail: bool = False) -> Callable[[], None]:
        def run_hook() -> None:
            self.entries.append(name)
            if fail:
                raise ValueError(f"{name} failed")

        return run_hook

    def factory(self) -> ASGI:
        self.entries.append("build")

        async def hello(request: Request) -> Response:
            self.entries.append("request")
            return JSONResponse({"ok": True})

        app: ASGI = Starlette(routes=[Route("/hello", hello)])
        return app


class RunThread:
    def __init__(self, target: Callable[[], int]) -> None:
        self.exit_code: int | None = None
        self._target = target
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.exit_code = self._target()

    def join(self, timeout: float = 30.0) -> int | None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the runtime did not stop"
        return self.exit_code


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.005)


def start(fake: FakeRuntimeAPI, journal: Journal, environ: dict[str, str] = SNAP_START, **kwargs: Any) -> RunThread:
    return RunThread(lambda: run(fake.address, journal.factory, max_invocations=1, environ=environ, **kwargs))


def test_hooks_run_around_restore_next_and_before_the_first_invocation() -> None:
    journal = Journal()
    snapshot_restore_py.register_before_snapshot(journal.hook("before 1"))
    snapshot_restore_py.register_before_snapshot(journal.hook("before 2"))
    snapshot_restore_py.register_after_restore(journal.hook("after 1"))
    snapshot_restore_py.register_after_restore(journal.hook("after 2"))
    with FakeRuntimeAPI(snap_start=True, hold_restore=True) as fake:
        invocation = fake.push(rest_v1_event("GET", "/hello"))
        runtime = start(fake, journal)

        # The environment waits at restore/next (Lambda takes the snapshot then): the app is
        # built, the before-snapshot hooks ran (last registered first), nothing after them has.
        wait_until(lambda: "GET restore/next" in fake.calls)
        assert journal.entries == ["build", "before 2", "before 1"]
        assert fake.calls == ["GET restore/next"]

        fake.restored.set()
        assert runtime.join() == 0

    assert journal.entries == ["build", "before 2", "before 1", "after 1", "after 2", "request"]
    assert fake.calls[:2] == ["GET restore/next", "GET invocation/next"]
    assert invocation.succeeded
    assert fake.restore_error is None and fake.init_error is None


def test_a_failing_after_restore_hook_is_reported_to_restore_error() -> None:
    journal = Journal()
    snapshot_restore_py.register_after_restore(journal.hook("after 1", fail=True))
    snapshot_restore_py.register_after_restore(journal.hook("after 2"))
    with FakeRuntimeAPI(snap_start=True) as fake:
        fake.push(rest_v1_event("GET", "/hello"))
        exit_code = start(fake, journal).join()

    assert exit_code == snapstart.AFTER_RESTORE_EXIT
    assert fake.restore_error_type == "Runtime.AfterRestoreError"
    assert fake.restore_error is not None
    assert fake.restore_error["errorType"] == "Runtime.AfterRestoreError"
    assert "after 1 failed" in fake.restore_error["errorMessage"]
    assert journal.entries == ["build", "after 1"]  # nothing after the failing hook, no invocation
    assert fake.calls == ["GET restore/next", "POST restore/error"]


def test_a_failing_before_snapshot_hook_is_an_init_error_and_no_snapshot_is_taken() -> None:
    journal = Journal()
    snapshot_restore_py.register_before_snapshot(journal.hook("before 1"))
    snapshot_restore_py.register_before_snapshot(journal.hook("before 2", fail=True))
    snapshot_restore_py.register_after_restore(journal.hook("after 1"))
    with FakeRuntimeAPI(snap_start=True) as fake:
        exit_code = start(fake, journal).join()

    assert exit_code == snapstart.BEFORE_SNAPSHOT_EXIT
    assert fake.init_error_type == "Runtime.BeforeSnapshotError"
    assert fake.init_error is not None and "before 2 failed" in fake.init_error["errorMessage"]
    assert journal.entries == ["build", "before 2"]
    assert fake.calls == ["POST init/error"]


def test_an_app_that_cannot_be_built_for_a_snapshot_is_an_init_error() -> None:
    def broken() -> ASGI:
        raise RuntimeError("no catalog")

    with FakeRuntimeAPI(snap_start=True) as fake:
        exit_code = RunThread(lambda: run(fake.address, broken, max_invocations=1, environ=SNAP_START)).join()

    assert exit_code == 1
    assert fake.init_error_type == "Runtime.InitError"
    assert fake.init_error is not None and fake.init_error["errorMessage"] == "RuntimeError: no catalog"
    assert fake.calls == ["POST init/error"]


def test_a_refused_restore_next_is_a_before_snapshot_error() -> None:
    journal = Journal()
    with FakeRuntimeAPI(snap_start=False) as fake:  # an API that does not offer restore/next
        exit_code = start(fake, journal).join()

    assert exit_code == snapstart.BEFORE_SNAPSHOT_EXIT
    assert fake.init_error_type == "Runtime.BeforeSnapshotError"
    assert fake.calls == ["GET restore/next", "POST init/error"]


def test_without_snap_start_nothing_changes() -> None:
    journal = Journal()
    snapshot_restore_py.register_before_snapshot(journal.hook("before"))
    snapshot_restore_py.register_after_restore(journal.hook("after"))
    with FakeRuntimeAPI(snap_start=True) as fake:
        invocation = fake.push(rest_v1_event("GET", "/hello"))
        assert start(fake, journal, environ={}).join() == 0

    assert invocation.succeeded
    assert journal.entries == ["build", "request"]
    assert fake.calls[0] == "GET invocation/next"
    assert not any("restore" in call for call in fake.calls)


def test_the_wrapper_takes_part_in_snap_start(tmp_path: Path) -> None:
    """handler/bootstrap as Lambda starts it, with the real app, initialised for a snapshot."""
    with FakeRuntimeAPI(snap_start=True, hold_restore=True) as fake, (tmp_path / "log").open("wb") as log:
        env = wrapper_env(
            fake.address,
            AWS_LAMBDA_INITIALIZATION_TYPE="snap-start",
            CHATGW_STATE_DIR=str(tmp_path / "state"),
            CHATGW_LOG_LEVEL="WARNING",
        )
        process = subprocess.Popen([str(BOOTSTRAP), *MANAGED_RUNTIME_COMMAND], env=env, stdout=log, stderr=log)
        try:
            wait_until(lambda: "GET restore/next" in fake.calls, timeout=60)
            invocation = fake.push(rest_v1_event("GET", "/health"))
            assert fake.calls == ["GET restore/next"]
            fake.restored.set()
            assert invocation.wait(60)
        finally:
            process.kill()
            process.wait(timeout=10)

    assert invocation.succeeded, (tmp_path / "log").read_text()
    assert invocation.prelude is not None and invocation.prelude["statusCode"] == 200
    assert fake.calls[:2] == ["GET restore/next", "GET invocation/next"]
