"""The store interface, and the optional capabilities an adapter may add to it.

Adapters are synchronous (boto3 and sqlite3 are). The service makes each call through
`on_loop.store_call`: on a worker thread, or on the event loop itself when the adapter can answer
at once (`AnswersAtOnce`: SQLite, which gives up with `WouldBlock` rather than wait for a lock).
Adapters raise `StoreUnavailable` (errors.py) when the store cannot be reached, so that no request
is let through unchecked."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from chatgw.access.keys import KeyRecord, Limits
from chatgw.access.limits import Admission

UsageStatus = Literal["ok", "error", "client_closed"]


class KeyExists(Exception):
    pass


class KeyNotFound(Exception):
    pass


DEFAULT_DOOR = "chat"
DOOR_MARK = "\x1f"
"""Between a model and its door in a per-model aggregate's name (no catalog name may hold it)."""


def split_ledger_model(name: str) -> tuple[str, str]:
    """A per-model aggregate's name as (served model, door)."""
    model, mark, door = name.partition(DOOR_MARK)
    return model, door if mark else DEFAULT_DOOR


@dataclass(frozen=True, slots=True)
class UsageEvent:
    key_id: str
    request_id: str
    at: datetime
    model: str
    backend: str
    prompt_tokens: int
    completion_tokens: int
    status: UsageStatus
    streamed: bool
    latency_ms: int
    ttft_ms: int | None = None
    estimated: bool = False
    served_model: str = ""
    """The model that answered (a fallback's name after a fallback); "" means `model` itself."""
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None
    """USD, from the served model's prices when the event was made; None when it has no price."""
    reserved_tokens: int = 0
    """What admission reserved for this request; settlement replaces it by the actual tokens."""
    door: str = "chat"
    """The front door the request came through: chat, messages or responses."""
    pending: tuple[str, ...] = ()
    """Set only in a `usage_event` log line whose event is stored but some of its aggregate writes
    are not (DynamoDB: "month", "day"): what `chatgw replay` still applies, once."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def booked_model(self) -> str:
        """The model the ledger books the event under: the one that served."""
        return self.served_model or self.model

    @property
    def ledger_model(self) -> str:
        """The name of the event's per-model aggregate: the served model, and the door unless it is
        the chat door (so that rows written before doors existed are the chat door's)."""
        return self.booked_model if self.door == DEFAULT_DOOR else f"{self.booked_model}{DOOR_MARK}{self.door}"

    def to_log(self) -> dict[str, Any]:
        """The JSON-able form, as written to the `usage_event` log line when the store fails."""
        out = asdict(self)
        out["at"] = self.at.isoformat()
        out["total_tokens"] = self.total_tokens
        if not self.pending:
            out.pop("pending")
        else:
            out["pending"] = list(self.pending)
        return out


@dataclass(frozen=True, slots=True)
class UsageQuery:
    period: Literal["day", "month"]
    value: str
    """`YYYY-MM-DD` for a day, `YYYY-MM` for a month."""
    key_id: str | None = None
    by_model: bool = False


@dataclass(frozen=True, slots=True)
class UsageRow:
    key_id: str
    period: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    model: str | None = None
    """The served model, for per-model rows."""
    door: str | None = None
    """The front door, for per-model rows (one row per model and door)."""
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None
    """The sum of the stored costs of the row's events; None when none of them had a price."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Store(Protocol):
    # keys
    def create_key(self, record: KeyRecord) -> None:
        """Store a new key; `KeyExists` if its key_id is taken."""

    def get_key(self, key_id: str) -> KeyRecord | None: ...

    def list_keys(self) -> list[KeyRecord]: ...

    def save_key(self, record: KeyRecord) -> None:
        """Replace an existing key's record; `KeyNotFound` if there is none."""

    def delete_key(self, key_id: str) -> bool: ...

    # limits
    def admit(
        self, key_id: str, limits: Limits, now: datetime, *, request_id: str | None = None, reserve: int = 0
    ) -> Admission:
        """One atomic step: `limits.decide` over the minute's requests, the minute's committed
        tokens and the month's committed tokens (committed = settled + reserved); if admitted,
        count this request in the minute's requests and reserve `reserve` tokens in the minute
        and the month (under `request_id`)."""

    # usage ledger
    def record_usage(self, event: UsageEvent) -> bool:
        """Settle: write the event, add its tokens (and cost) to the day and month aggregates (all
        models and the served model), and replace its reservation (`event.reserved_tokens`) by its
        actual tokens, once per request_id: False if this request_id was already recorded."""

    def usage(self, query: UsageQuery) -> list[UsageRow]: ...

    def usage_events(self, key_id: str) -> list[UsageEvent]: ...

    def close(self) -> None: ...


# optional capabilities: what one adapter has and another lacks, asked with isinstance ----------


@runtime_checkable
class AnswersAtOnce(Protocol):
    """A store that can be called on the event loop (store/on_loop.py): inside `at_once()` a call
    either answers without waiting or raises `WouldBlock` having done nothing. SQLite."""

    def at_once(self) -> AbstractContextManager[None]: ...


@runtime_checkable
class DropsConnections(Protocol):
    """A holder of pooled network connections, which must not outlive a SnapStart snapshot
    (aws_lambda/snapstart_hooks.py). DynamoDB, and the backends' HTTP clients."""

    def drop_connections(self) -> None: ...


@runtime_checkable
class Reshards(Protocol):
    """A store that spreads a key's counters over shards: a change of the shard count moves them
    to the new layout before the record is saved, so the limits stay exact (docs/store.md). DynamoDB."""

    def reshard(self, record: KeyRecord, updated: KeyRecord, now: datetime) -> KeyRecord: ...


@runtime_checkable
class NamesTables(Protocol):
    """A store in named tables (DynamoDB), which a state folder's dev-key file is named after."""

    keys_table: str
