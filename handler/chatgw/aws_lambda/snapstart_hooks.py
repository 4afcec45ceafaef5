"""The container's SnapStart hooks: what must not be shared by the environments restored from one
snapshot (AWS: "Handling uniqueness with Lambda SnapStart").

Before the snapshot: pooled connections are dropped, so that no socket is in it, and the modules the
doors load at their first request are loaded (`api/lazy.py`), so that a restored environment has
them. After each restore:
connections dropped again (anything opened in between belongs to the snapshot), the `random` module
reseeded from the OS (retry jitter must differ between environments), the key cache and the upstream
keys read so far forgotten (their age is the snapshot's, not this environment's), and a new container
identity for the logs. Request ids and key secrets come from `uuid4`/`secrets`, i.e. from the kernel,
which Lambda reseeds on restore.

Registered once per process, by `compose.container()`, through `snapshot_restore_py`: the streaming
runtime (`aws_lambda/snapstart.py`) and the managed runtime (buffered entry) run the same registrations."""

from __future__ import annotations

import logging
import random
from typing import Protocol

import snapshot_restore_py

from chatgw.api import lazy
from chatgw.observability import logs
from chatgw.store.base import DropsConnections


class ForgetsKeys(Protocol):
    def forget_cached_keys(self) -> None: ...


def before_snapshot(*holders: object) -> None:
    lazy.load_all()
    _drop(holders)
    logs.event("snapshot")


def after_restore(service: ForgetsKeys, *holders: object) -> None:
    snapshot_container = logs.container_id()
    random.seed()
    logs.renew_container_id()
    _drop(holders)
    service.forget_cached_keys()
    logs.event("restored", logging.INFO, restored_from=snapshot_container)


def _drop(holders: tuple[object, ...]) -> None:
    for holder in holders:
        if isinstance(holder, DropsConnections):  # a store without pooled connections is not one
            holder.drop_connections()


def register(deps: DropsConnections, store: object, service: ForgetsKeys) -> None:
    snapshot_restore_py.register_before_snapshot(before_snapshot, deps, store)
    snapshot_restore_py.register_after_restore(after_restore, service, deps, store)
