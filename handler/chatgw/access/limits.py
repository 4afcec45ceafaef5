"""Rate-limit and budget arithmetic (pure): windows, what a store's counters mean, and headers."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime

from chatgw.access.keys import Limits
from chatgw.errors import RateLimited

LEASE_SECONDS = 960
"""L, the length of one in-flight generation (docs/store.md, "Requests in flight"): at least the longest
a request can live between admission and settlement (Lambda's 900 s cap, plus a minute for clock
skew and the settlement's retries). A count that is never released (a container killed mid-request)
is dropped once its generation is two behind: at most 2 L after the request was admitted."""
RETRY_CONCURRENT_S = 1
"""Retry-After of a request refused for too many in flight: slots free as requests end."""


def generation_of(now: datetime) -> int:
    """The in-flight generation `now` falls in: floor(epoch seconds / L)."""
    return int(now.timestamp()) // LEASE_SECONDS


def minute_window(now: datetime) -> int:
    """The start of the current one-minute window, in epoch seconds."""
    return int(now.timestamp()) // 60 * 60


def month_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m")


def day_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def seconds_to_next_minute(now: datetime) -> int:
    return max(1, minute_window(now) + 60 - int(now.timestamp()))


def seconds_to_next_month(now: datetime) -> int:
    now = now.astimezone(UTC)
    days = calendar.monthrange(now.year, now.month)[1]
    end = datetime(now.year, now.month, days, tzinfo=UTC).timestamp() + 86400
    return max(1, int(end - now.timestamp()))


@dataclass(frozen=True, slots=True)
class Admission:
    """What a store's admission step saw: the counters after this request was (or was not) counted.

    `refused` names the limit that refused it: "requests", "tokens", "budget" or "concurrent"; None
    if admitted.
    """

    refused: str | None
    requests_used: int = 0
    tokens_used: int = 0
    """Tokens committed (settled + reserved) in the minute window, this request's reservation included."""
    month_tokens_used: int = 0
    """Tokens committed (settled + reserved) this month, this request's reservation included."""
    reserve: int = 0
    window: int = -1
    """The minute window (epoch s) the request was counted in (-1: not known, e.g. a local refusal)."""
    shard: int = 0
    """DynamoDB: the shard item that admitted the request (0 for a key of one shard)."""
    in_flight: int = 0
    """Requests of the key in flight (admitted, not settled, lease not expired), this one included."""
    generation: int = -1
    """The in-flight generation the request was counted in (-1: not counted; the key has no
    `max_concurrent`, or it was refused); its settlement releases it there."""

    @property
    def admitted(self) -> bool:
        return self.refused is None


def need_of(reserve: int) -> int:
    """What a request must fit: its reservation, and at least one token."""
    return max(1, reserve)


def decide(
    limits: Limits, *, requests: int, window_tokens: int, month_tokens: int, reserve: int, in_flight: int = 0
) -> str | None:
    """The one admission rule of both stores, in this order: requests, then tokens, then budget, then
    concurrent (the limit that frees soonest is named last: a client told to wait a second should
    not then find the minute's or the month's limit). `window_tokens` and `month_tokens` are
    committed tokens (settled + reserved by others); `in_flight` the key's requests in flight."""
    need = need_of(reserve)
    if limits.requests_per_minute is not None and requests >= limits.requests_per_minute:
        return "requests"
    if limits.tokens_per_minute is not None and window_tokens + need > limits.tokens_per_minute:
        return "tokens"
    if limits.monthly_token_budget is not None and month_tokens + need > limits.monthly_token_budget:
        return "budget"
    if limits.max_concurrent is not None and in_flight >= limits.max_concurrent:
        return "concurrent"
    return None


def raise_if_refused(
    admission: Admission, *, rpm: int | None, tpm: int | None, now: datetime, concurrent: int | None = None
) -> None:
    headers = rate_headers(admission, rpm=rpm, tpm=tpm, now=now)
    if admission.refused == "requests":
        raise RateLimited(
            f"Rate limit reached: {rpm} requests per minute for this key.",
            retry_after=seconds_to_next_minute(now),
            headers=headers,
            cause="requests",
        )
    if admission.refused == "tokens":
        raise RateLimited(
            f"Rate limit reached: {tpm} tokens per minute for this key"
            f" (this request reserves {admission.reserve}: its prompt plus its output cap).",
            retry_after=seconds_to_next_minute(now),
            headers=headers,
            cause="tokens",
        )
    if admission.refused == "budget":
        raise RateLimited(
            f"This key has used its monthly token budget (this request reserves {admission.reserve}"
            " tokens: its prompt plus its output cap).",
            retry_after=seconds_to_next_month(now),
            code="insufficient_quota",
            headers=headers,
            cause="budget",
        )
    if admission.refused == "concurrent":
        raise RateLimited(
            f"Too many requests in flight for this key: {concurrent} at once. Retry when one of them has finished.",
            retry_after=RETRY_CONCURRENT_S,
            headers=headers,
            cause="concurrent",
        )


def rate_headers(admission: Admission, *, rpm: int | None, tpm: int | None, now: datetime) -> dict[str, str]:
    headers: dict[str, str] = {}
    reset = f"{seconds_to_next_minute(now)}s"
    if rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, rpm - admission.requests_used))
        headers["x-ratelimit-reset-requests"] = reset
    if tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, tpm - admission.tokens_used))
        headers["x-ratelimit-reset-tokens"] = reset
    return headers
