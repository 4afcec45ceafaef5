"""Lambda SnapStart through chatgw's own runtime loop, as AWS's runtime interface clients do it.

When Lambda initialises an environment for a snapshot (`AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`),
the Runtime API also offers `GET /runtime/restore/next` and `POST /runtime/restore/error`. The
sequence (awslambdaric's `bootstrap.on_init_complete`, which the streaming runtime replaces):

    build the app -> before-snapshot hooks (reverse order of registration)
    -> GET restore/next (Lambda snapshots the environment while it waits; it returns in every
       environment restored from that snapshot) -> after-restore hooks (order of registration)
    -> GET invocation/next ...

A before-snapshot hook that fails (or a refused restore/next) is reported to `/init/error` as
`Runtime.BeforeSnapshotError` and the process exits 64; an after-restore hook that fails goes to
`/restore/error` as `Runtime.AfterRestoreError`, exit 65. Hooks are registered through
`snapshot_restore_py`, the library of the managed runtime, so that the same registrations work
under both entry points. All of this runs before any event loop exists: the loop that serves is
made after the restore, so nothing of asyncio (selector, self-pipe) is in the snapshot."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import snapshot_restore_py

from chatgw.aws_lambda.runtime_api import API_PREFIX, ERROR_TYPE_TRAILER, error_payload

logger = logging.getLogger("chatgw.runtime")

INIT_TYPE_ENV = "AWS_LAMBDA_INITIALIZATION_TYPE"
SNAP_START = "snap-start"
BEFORE_SNAPSHOT_ERROR = "Runtime.BeforeSnapshotError"
AFTER_RESTORE_ERROR = "Runtime.AfterRestoreError"
INIT_ERROR = "Runtime.InitError"
BEFORE_SNAPSHOT_EXIT = 64
AFTER_RESTORE_EXIT = 65

Hook = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
RestoreNext = Callable[[str], None]
"""Waits at `restore/next` until the environment is restored (the snapshot is taken meanwhile)."""


class RestoreRefused(Exception):
    """The Runtime API did not accept a lifecycle call."""


def requested(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get(INIT_TYPE_ENV) == SNAP_START


def run_before_snapshot() -> None:
    """The registered before-snapshot hooks, last registered first; each runs once (popped)."""
    hooks: list[Hook] = snapshot_restore_py.get_before_snapshot()
    while hooks:
        func, args, kwargs = hooks.pop()
        func(*args, **kwargs)


def run_after_restore() -> None:
    """The registered after-restore hooks, in the order of registration."""
    hooks: list[Hook] = snapshot_restore_py.get_after_restore()
    for func, args, kwargs in list(hooks):
        func(*args, **kwargs)


def _call(address: str, method: str, tail: str, expected: int, body: bytes = b"", **headers: str) -> None:
    """One blocking Runtime API call (http.client, as awslambdaric does): no event loop yet."""
    import http.client

    connection = http.client.HTTPConnection(address)
    try:
        connection.request(method, API_PREFIX + tail, body=body if method == "POST" else None, headers=headers)
        response = connection.getresponse()
        answer = response.read()
    except OSError as exc:
        raise RestoreRefused(f"{method} {tail} failed: {exc}") from exc
    finally:
        connection.close()
    if response.status != expected:
        raise RestoreRefused(f"{method} {tail} answered {response.status}: {answer[:200]!r}")


def restore_next(address: str) -> None:
    _call(address, "GET", "restore/next", 200)


def _post_error(address: str, tail: str, error_type: str, exc: BaseException) -> None:
    message = f"{type(exc).__name__}: {exc}"
    body = error_payload(error_type, message)
    try:
        _call(
            address,
            "POST",
            tail,
            202,
            body,
            **{"Content-Type": "application/json", ERROR_TYPE_TRAILER: error_type},
        )
    except RestoreRefused as refused:
        logger.error("could not report %s: %s", error_type, refused)


def report_init_error(address: str, exc: BaseException, error_type: str = INIT_ERROR) -> None:
    _post_error(address, "init/error", error_type, exc)


def take_part(address: str, wait_for_restore: RestoreNext = restore_next) -> int | None:
    """The snapshot lifecycle after the app is built. None when the environment is restored and
    may serve; otherwise the exit code, the failure already reported to the Runtime API."""
    try:
        run_before_snapshot()
        wait_for_restore(address)
    except Exception as exc:
        logger.exception("before the snapshot")
        report_init_error(address, exc, BEFORE_SNAPSHOT_ERROR)
        return BEFORE_SNAPSHOT_EXIT
    try:
        run_after_restore()
    except Exception as exc:
        logger.exception("after the restore")
        _post_error(address, "restore/error", AFTER_RESTORE_ERROR, exc)
        return AFTER_RESTORE_EXIT
    return None
