"""The container's after-restore hook forgets what is as old as the snapshot: cached key records,
upstream keys, pooled connections and the `random` state (the fork test proves the rest)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from chatgw.access.keys import new_key
from chatgw.aws_lambda import snapstart_hooks as restore_safe
from chatgw.backends._upstream_keys import KeySource
from chatgw.backends.base import BackendDeps
from chatgw.compose import build
from chatgw.errors import PermissionDenied
from chatgw.observability import logs
from chatgw.settings import Settings


class AwsClient:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def container(tmp_path: Path) -> Any:
    built = build(Settings.from_env({"CHATGW_STATE_DIR": str(tmp_path), "CHATGW_KEY_CACHE_SECONDS": "3600"}))
    yield built
    built.store.close()


def test_a_key_cached_before_the_snapshot_is_read_again_after_the_restore(container: Any) -> None:
    key, record = new_key("cached")
    container.store.create_key(record)
    service = container.service
    assert asyncio.run(service.authenticate(key)).enabled
    container.store.save_key(dataclasses.replace(record, enabled=False))
    assert asyncio.run(service.authenticate(key)).enabled  # the cache, for up to an hour

    restore_safe.after_restore(service, container.deps, container.store)

    with pytest.raises(PermissionDenied, match="disabled"):
        asyncio.run(service.authenticate(key))


def test_upstream_keys_pools_and_clients_are_dropped(container: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    aws = AwsClient()
    deps = BackendDeps(aws_client_factory=lambda service, region: aws)
    source = KeySource("gpt", "env", "SNAP_UPSTREAM_KEY", deps)
    monkeypatch.setenv("SNAP_UPSTREAM_KEY", "before")

    async def before() -> Any:
        assert await source.get() == "before"
        return deps.http_client()

    old_client = asyncio.run(before())
    deps.aws_client("dynamodb")
    monkeypatch.setenv("SNAP_UPSTREAM_KEY", "rotated")

    restore_safe.after_restore(container.service, deps)

    async def after() -> Any:
        assert await source.get() == "rotated"
        client = deps.http_client()
        await client.aclose()
        return client

    assert asyncio.run(after()) is not old_client
    assert aws.closed == 1
    assert deps.aws_client("dynamodb") is aws  # the client stays; its pool is new


def test_random_is_reseeded_and_the_container_gets_a_new_identity(container: Any) -> None:
    random.seed(15)
    expected = random.random()
    random.seed(15)
    identity = logs.container_id()

    restore_safe.after_restore(container.service)

    assert random.random() != expected
    assert logs.container_id() != identity
