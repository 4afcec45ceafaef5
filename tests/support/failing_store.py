"""The SQLite store failing from outside: a second connection that breaks its tables."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from chatgw.compose import Container
from chatgw.store.sqlite import SqliteStore


def raw_db(container: Container) -> sqlite3.Connection:
    """A second, independent connection to the store's file: the fault comes from outside."""
    store = container.store
    assert isinstance(store, SqliteStore)
    return sqlite3.connect(str(store.path), isolation_level=None)


@contextmanager
def failing_table(container: Container, table: str) -> Iterator[None]:
    """Every insert into `table` fails inside SQLite, as a full disk or a broken file would."""
    db = raw_db(container)
    db.execute(f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    try:
        yield
    finally:
        db.execute(f"DROP TRIGGER fail_{table}")
        db.close()
