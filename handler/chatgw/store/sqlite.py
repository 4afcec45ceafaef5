"""The embedded store: one SQLite file, safe across threads and processes (WAL, BEGIN IMMEDIATE)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from chatgw.access.keys import KeyRecord, Limits
from chatgw.access.limits import Admission, day_of, decide, generation_of, minute_window, month_of
from chatgw.errors import StoreUnavailable
from chatgw.settings import private_dir
from chatgw.store.base import KeyExists, KeyNotFound, UsageEvent, UsageQuery, UsageRow, split_ledger_model
from chatgw.store.codec import event_from_dict, key_from_dict, key_to_dict
from chatgw.store.on_loop import WouldBlock

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
    key_id TEXT NOT NULL, kind TEXT NOT NULL, window INTEGER NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (key_id, kind, window));
CREATE TABLE IF NOT EXISTS events (
    request_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, at TEXT NOT NULL, expires_at INTEGER NOT NULL,
    event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_key ON events (key_id, at);
CREATE INDEX IF NOT EXISTS events_by_expiry ON events (expires_at);
CREATE TABLE IF NOT EXISTS aggregates (
    key_id TEXT NOT NULL, period TEXT NOT NULL, model TEXT NOT NULL,
    requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    PRIMARY KEY (key_id, period, model));
CREATE TABLE IF NOT EXISTS reservations (
    request_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, window INTEGER NOT NULL, month TEXT NOT NULL,
    tokens INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS reservations_by_key ON reservations (key_id, month);
CREATE TABLE IF NOT EXISTS inflight (
    request_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, generation INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS inflight_by_key ON inflight (key_id, generation);
"""
# Columns added after the first release: added in place to a state file written before them.
AGGREGATE_COLUMNS = {
    "cached_tokens": "INTEGER NOT NULL DEFAULT 0",
    "cache_write_tokens": "INTEGER NOT NULL DEFAULT 0",
    "reasoning_tokens": "INTEGER NOT NULL DEFAULT 0",
    "cost": "REAL",
}
ALL_MODELS = ""


def create_private(path: Path) -> None:
    """The database file readable by its owner alone (0600: it holds key hashes and the ledger), in a
    folder made 0700 if new. SQLite gives its -wal and -shm files the database file's mode."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


BUSY_TIMEOUT_MS = 10_000
"""How long a transaction waits for another connection's write lock (made on a worker thread)."""


class SqliteStore:
    def __init__(self, path: Path | str, *, usage_ttl_days: int = 90) -> None:
        self.path = Path(path)
        self.usage_ttl = timedelta(days=usage_ttl_days)
        self._lock = threading.Lock()
        self._now_only = threading.local()
        try:
            if str(path) != ":memory:":
                create_private(self.path)
            self._db = sqlite3.connect(
                str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()
            # Only in WAL mode do readers never wait and does a commit take no lock but the write
            # lock BEGIN IMMEDIATE took: the condition for answering on the event loop (`at_once`).
            self._wal = bool(mode) and str(mode[0]).lower() == "wal"
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"The key store is unavailable: {exc}") from exc

    def _migrate(self) -> None:
        have = {row[1] for row in self._db.execute("PRAGMA table_info(aggregates)")}
        for name, kind in AGGREGATE_COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE aggregates ADD COLUMN {name} {kind}")

    @contextmanager
    def at_once(self) -> Iterator[None]:
        """This thread's calls inside wait for no lock: `WouldBlock`, having done nothing, if this
        process's lock or the database's write lock is held (store/on_loop.py)."""
        before = getattr(self._now_only, "on", False)
        self._now_only.on = True
        try:
            yield
        finally:
            self._now_only.on = before

    @contextmanager
    def _locked(self) -> Iterator[bool]:
        """This process's lock; yields whether the caller asked not to wait (`at_once`)."""
        now_only = getattr(self._now_only, "on", False)
        if now_only and not self._wal:  # (a file system without WAL: always on a worker thread)
            raise WouldBlock
        if not self._lock.acquire(blocking=not now_only):
            raise WouldBlock
        try:
            yield now_only
        finally:
            self._lock.release()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One serialized write transaction (BEGIN IMMEDIATE takes the write lock up front)."""
        with self._locked() as now_only:
            try:
                self._begin(now_only)
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._abandon()
                raise StoreUnavailable("The key store is unavailable.") from exc

    def _abandon(self) -> None:
        """After a failed statement (a COMMIT too): never leave the connection inside a transaction
        (every later call would fail) or with the busy timeout of an `at_once` call."""
        with suppress(sqlite3.Error):  # the file itself is gone or broken: the next call reports it
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def _begin(self, now_only: bool) -> None:
        if not now_only:
            self._db.execute("BEGIN IMMEDIATE")
            return
        self._db.execute("PRAGMA busy_timeout = 0")
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise WouldBlock from None
            raise
        finally:  # (if this fails after BEGIN, `_tx` rolls back and `_abandon` restores it)
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._locked():
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StoreUnavailable("The key store is unavailable.") from exc

    # keys ---------------------------------------------------------------------------

    def create_key(self, record: KeyRecord) -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM keys WHERE key_id = ?", (record.key_id,)).fetchone():
                raise KeyExists(record.key_id)
            db.execute("INSERT INTO keys VALUES (?, ?)", (record.key_id, json.dumps(key_to_dict(record))))

    def get_key(self, key_id: str) -> KeyRecord | None:
        with self._read() as db:
            row = db.execute("SELECT record FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        return key_from_dict(json.loads(row[0])) if row else None

    def list_keys(self) -> list[KeyRecord]:
        with self._read() as db:
            rows = db.execute("SELECT record FROM keys ORDER BY key_id").fetchall()
        return [key_from_dict(json.loads(r[0])) for r in rows]

    def save_key(self, record: KeyRecord) -> None:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE keys SET record = ? WHERE key_id = ?",
                (json.dumps(key_to_dict(record)), record.key_id),
            )
            if cur.rowcount == 0:
                raise KeyNotFound(record.key_id)

    def delete_key(self, key_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM keys WHERE key_id = ?", (key_id,)).rowcount > 0

    # limits -------------------------------------------------------------------------

    def admit(
        self, key_id: str, limits: Limits, now: datetime, *, request_id: str | None = None, reserve: int = 0
    ) -> Admission:
        window, month = minute_window(now), month_of(now)
        generation, counted = generation_of(now), limits.max_concurrent is not None
        request_id = request_id or f"anonymous-{uuid.uuid4().hex}"
        with self._tx() as db:
            requests = self._window(db, key_id, "requests", window)
            tokens = self._window(db, key_id, "tokens", window) + self._reserved(db, key_id, "window", window)
            month_tokens = self._month_tokens(db, key_id, month) + self._reserved(db, key_id, "month", month)
            in_flight = self._in_flight(db, key_id, generation) if counted else 0
            refused = decide(
                limits,
                requests=requests,
                window_tokens=tokens,
                month_tokens=month_tokens,
                reserve=reserve,
                in_flight=in_flight,
            )
            if refused is None:
                if counted:
                    in_flight += 1
                    db.execute("INSERT OR REPLACE INTO inflight VALUES (?, ?, ?)", (request_id, key_id, generation))
                requests += 1
                self._add_window(db, key_id, "requests", window, 1)
                db.execute("DELETE FROM windows WHERE key_id = ? AND window < ?", (key_id, window - 60))
                # Reservations of past months (their requests never settled) hold nothing any more.
                db.execute("DELETE FROM reservations WHERE key_id = ? AND month < ?", (key_id, month))
                if reserve > 0:
                    tokens, month_tokens = tokens + reserve, month_tokens + reserve
                    db.execute(
                        "INSERT OR REPLACE INTO reservations VALUES (?, ?, ?, ?, ?)",
                        (request_id, key_id, window, month, reserve),
                    )
        return Admission(
            refused,
            requests_used=requests,
            tokens_used=tokens,
            month_tokens_used=month_tokens,
            reserve=reserve,
            window=window,
            in_flight=in_flight,
            generation=generation if counted and refused is None else -1,
        )

    @staticmethod
    def _in_flight(db: sqlite3.Connection, key_id: str, generation: int) -> int:
        """The key's requests in flight: admitted in this generation or the one before and not settled
        (the lease of docs/store.md; older rows are requests whose container died: dropped)."""
        db.execute("DELETE FROM inflight WHERE key_id = ? AND generation < ?", (key_id, generation - 1))
        row = db.execute("SELECT COUNT(*) FROM inflight WHERE key_id = ?", (key_id,)).fetchone()
        return int(row[0])

    @staticmethod
    def _reserved(db: sqlite3.Connection, key_id: str, column: str, value: int | str) -> int:
        row = db.execute(
            f"SELECT COALESCE(SUM(tokens), 0) FROM reservations WHERE key_id = ? AND {column} = ?",  # noqa: S608
            (key_id, value),
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _window(db: sqlite3.Connection, key_id: str, kind: str, window: int) -> int:
        row = db.execute(
            "SELECT amount FROM windows WHERE key_id = ? AND kind = ? AND window = ?", (key_id, kind, window)
        ).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _add_window(db: sqlite3.Connection, key_id: str, kind: str, window: int, amount: int) -> None:
        db.execute(
            "INSERT INTO windows VALUES (?, ?, ?, ?) ON CONFLICT (key_id, kind, window) "
            "DO UPDATE SET amount = amount + excluded.amount",
            (key_id, kind, window, amount),
        )

    @staticmethod
    def _month_tokens(db: sqlite3.Connection, key_id: str, month: str) -> int:
        row = db.execute(
            "SELECT prompt_tokens + completion_tokens FROM aggregates WHERE key_id = ? AND period = ? AND model = ?",
            (key_id, month, ALL_MODELS),
        ).fetchone()
        return int(row[0]) if row else 0

    # usage ledger -------------------------------------------------------------------

    def record_usage(self, event: UsageEvent) -> bool:
        expires = int((event.at + self.usage_ttl).timestamp())
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)",
                (event.request_id, event.key_id, event.at.isoformat(), expires, json.dumps(event.to_log())),
            )
            if cur.rowcount == 0:
                return False
            for period in (day_of(event.at), month_of(event.at)):
                for model in (ALL_MODELS, event.ledger_model):
                    db.execute(
                        "INSERT INTO aggregates (key_id, period, model, requests, prompt_tokens, completion_tokens,"
                        " cached_tokens, cache_write_tokens, reasoning_tokens, cost)"
                        " VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (key_id, period, model) DO UPDATE SET requests = requests + 1,"
                        " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
                        " completion_tokens = completion_tokens + excluded.completion_tokens,"
                        " cached_tokens = cached_tokens + excluded.cached_tokens,"
                        " cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,"
                        " reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,"
                        " cost = CASE WHEN excluded.cost IS NULL THEN cost ELSE COALESCE(cost, 0) + excluded.cost END",
                        (
                            event.key_id,
                            period,
                            model,
                            event.prompt_tokens,
                            event.completion_tokens,
                            event.cached_tokens,
                            event.cache_write_tokens,
                            event.reasoning_tokens,
                            event.cost,
                        ),
                    )
            db.execute("DELETE FROM reservations WHERE request_id = ?", (event.request_id,))
            db.execute("DELETE FROM inflight WHERE request_id = ?", (event.request_id,))
            self._add_window(db, event.key_id, "tokens", minute_window(event.at), event.total_tokens)
            db.execute("DELETE FROM events WHERE expires_at < ?", (int(datetime.now(UTC).timestamp()),))
        return True

    def usage(self, query: UsageQuery) -> list[UsageRow]:
        sql = (
            "SELECT key_id, period, model, requests, prompt_tokens, completion_tokens, cached_tokens,"
            " cache_write_tokens, reasoning_tokens, cost FROM aggregates "
        )
        sql += "WHERE period = ? AND model " + ("!= ?" if query.by_model else "= ?")
        args: list[str] = [query.value, ALL_MODELS]
        if query.key_id is not None:
            sql += " AND key_id = ?"
            args.append(query.key_id)
        with self._read() as db:
            rows = db.execute(sql + " ORDER BY key_id, model", args).fetchall()
        return [
            UsageRow(
                key_id=r[0],
                period=r[1],
                model=split_ledger_model(r[2])[0] if r[2] else None,
                door=split_ledger_model(r[2])[1] if r[2] else None,
                requests=r[3],
                prompt_tokens=r[4],
                completion_tokens=r[5],
                cached_tokens=r[6],
                cache_write_tokens=r[7],
                reasoning_tokens=r[8],
                cost=None if r[9] is None else round(float(r[9]), 12),
            )
            for r in rows
        ]

    def usage_events(self, key_id: str) -> list[UsageEvent]:
        with self._read() as db:
            rows = db.execute("SELECT event FROM events WHERE key_id = ? ORDER BY at", (key_id,)).fetchall()
        return [event_from_dict(json.loads(r[0])) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
