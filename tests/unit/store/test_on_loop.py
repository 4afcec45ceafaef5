"""Store calls from the event loop (store/on_loop.py): the embedded store answers on the loop when it
can without waiting, and otherwise, having done nothing, on a worker thread; a busy database never
stalls the loop. Causality only: no assertion on time."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chatgw.access.keys import Limits
from chatgw.errors import StoreUnavailable
from chatgw.store.base import UsageEvent, UsageQuery
from chatgw.store.on_loop import WouldBlock, store_call
from chatgw.store.sqlite import SqliteStore

LIMITS = Limits(requests_per_minute=100)
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def event(request_id: str) -> UsageEvent:
    return UsageEvent("k1", request_id, NOW, "echo", "echo", 3, 4, "ok", False, 5)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    made = SqliteStore(tmp_path / "chatgw.db")
    try:
        yield made
    finally:
        made.close()


def requests_counted(store: SqliteStore) -> int:
    return store.admit("k1", Limits(requests_per_minute=10**6), NOW).requests_used - 1


def test_a_free_store_answers_on_the_loop_thread(store: SqliteStore) -> None:
    threads: list[int] = []

    def admit() -> int:
        threads.append(threading.get_ident())
        return store.admit("k1", LIMITS, NOW, request_id="r1").requests_used

    async def scenario() -> int:
        return await store_call(store, admit)

    assert asyncio.run(scenario()) == 1
    assert threads == [threading.get_ident()]  # asyncio.run's loop runs on this thread


@pytest.mark.parametrize("call", ["admit", "record_usage"])
def test_another_connections_write_lock_is_would_block_and_nothing_is_done(
    store: SqliteStore, tmp_path: Path, call: str
) -> None:
    other = sqlite3.connect(tmp_path / "chatgw.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process (the CLI, a second server) is writing
    try:
        with pytest.raises(WouldBlock), store.at_once():
            if call == "admit":
                store.admit("k1", LIMITS, NOW, request_id="r1")
            else:
                store.record_usage(event("r1"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert requests_counted(store) == 0
    assert store.usage(UsageQuery("month", "2026-11", key_id="k1")) == []
    assert store.record_usage(event("r1")) is True  # not written before: the fallback writes it once


def test_this_process_lock_held_by_a_thread_is_would_block(store: SqliteStore) -> None:
    # (held here as a worker thread in the middle of a call would hold it)
    with store._lock, pytest.raises(WouldBlock), store.at_once():
        store.admit("k1", LIMITS, NOW)
    assert requests_counted(store) == 0


def test_a_busy_database_goes_to_a_worker_thread_and_the_loop_keeps_running(store: SqliteStore, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "chatgw.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threads: list[int] = []

    def admit() -> int:
        threads.append(threading.get_ident())
        return store.admit("k1", LIMITS, NOW, request_id="r1").requests_used

    async def scenario() -> tuple[int, int]:
        ticks = 0
        call = asyncio.ensure_future(store_call(store, admit))
        while ticks < 3:  # the loop runs other work while the call waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
        assert not call.done()
        other.execute("ROLLBACK")  # the other writer finishes: the waiting call goes on
        return await asyncio.wait_for(call, 30), ticks

    try:
        used, ticks = asyncio.run(scenario())
    finally:
        other.close()
    assert (used, ticks) == (1, 3)
    # tried on the loop (gave up at once), then made on a worker thread
    assert threads[0] == threading.get_ident() and threads[-1] != threading.get_ident()


def test_a_store_without_at_once_is_called_on_a_worker_thread() -> None:
    class Remote:  # the DynamoDB store: its calls wait on the network
        def admit(self) -> int:
            return threading.get_ident()

    remote = Remote()

    async def scenario() -> int:
        return await store_call(remote, remote.admit)

    assert asyncio.run(scenario()) != threading.get_ident()


def test_a_store_not_in_wal_mode_is_always_called_on_a_worker_thread() -> None:
    # Outside WAL mode a reader or a commit may wait for another connection: never on the loop.
    memory = SqliteStore(":memory:")  # journal mode "memory", as on a file system without WAL
    threads: list[int] = []

    def admit() -> int:
        threads.append(threading.get_ident())
        return memory.admit("k1", LIMITS, NOW, request_id="r1").requests_used

    try:
        with pytest.raises(WouldBlock), memory.at_once():
            memory.admit("k1", LIMITS, NOW)
        assert asyncio.run(store_call(memory, admit)) == 1
    finally:
        memory.close()
    assert threads[-1] != threading.get_ident()  # tried on the loop (gave up at once), made on a thread


def test_a_failed_commit_leaves_the_store_usable(store: SqliteStore) -> None:
    # A COMMIT that fails (disk full, I/O error) must not leave the connection inside a transaction,
    # nor with the busy timeout of a call made at once: every later call would fail.
    real = store._db

    class CommitFailsOnce:
        failed = False

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql == "COMMIT" and not self.failed:
                self.failed = True
                raise sqlite3.OperationalError("disk I/O error")
            return real.execute(sql, *args)

    store._db = CommitFailsOnce()  # type: ignore[assignment]
    with pytest.raises(StoreUnavailable), store.at_once():
        store.admit("k1", LIMITS, NOW, request_id="r1")
    assert not real.in_transaction
    assert real.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    assert store.admit("k1", LIMITS, NOW, request_id="r2").requests_used == 1  # r1 was rolled back
