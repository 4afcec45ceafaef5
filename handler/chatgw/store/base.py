"""The store interface. Adapters are synchronous (boto3 and sqlite3 are); the service calls
them from a worker thread, never on the event loop. Adapters raise `StoreUnavailable`
(errors.py) when the store cannot be reached, so that no request is let through unchecked."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from ..keys import KeyRecord, Limits
from ..limits import Admission

UsageStatus = Literal["ok", "error", "client_closed"]


class KeyExists(Exception):
    pass


class KeyNotFound(Exception):
    pass


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

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_log(self) -> dict[str, Any]:
        """The JSON-able form, as written to the `usage_event` log line when the store fails."""
        out = asdict(self)
        out["at"] = self.at.isoformat()
        out["total_tokens"] = self.total_tokens
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
    def admit(self, key_id: str, limits: Limits, now: datetime) -> Admission:
        """One atomic step: refuse if the minute's requests, the minute's tokens or the month's
        tokens are at their limit; otherwise count this request in the minute's requests."""

    # usage ledger
    def record_usage(self, event: UsageEvent) -> bool:
        """Write the event and add it to the minute, day and month counters (and per model),
        once per request_id: False if this request_id was already recorded."""

    def usage(self, query: UsageQuery) -> list[UsageRow]: ...

    def usage_events(self, key_id: str) -> list[UsageEvent]: ...

    def close(self) -> None: ...
