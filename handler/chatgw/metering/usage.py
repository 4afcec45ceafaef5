"""An answer's usage, and the usage event the ledger records for a request: the one place where
tokens become a ledger line (with its cost)."""

from __future__ import annotations

from datetime import datetime

from chatgw.conversation import Answer, Conversation, Usage
from chatgw.metering.estimate import answer_text, count_tokens, estimate_prompt_tokens
from chatgw.metering.price import Price
from chatgw.store.base import UsageEvent, UsageStatus

NONE = Usage(0, 0)


def estimated_usage(conversation: Conversation, answer_text: str) -> Usage:
    """For an upstream that reported none: the prompt estimate and the answer's text counted."""
    return Usage(estimate_prompt_tokens(conversation), count_tokens(answer_text))


def usage_of(conversation: Conversation, answer: Answer) -> tuple[Usage, bool]:
    """The answer's usage, and whether it is an estimate."""
    if answer.usage is not None:
        return answer.usage, False
    return estimated_usage(conversation, answer_text(answer)), True


def usage_event(
    *,
    key_id: str,
    request_id: str,
    at: datetime,
    model: str,
    served_model: str,
    backend: str,
    price: Price | None,
    usage: Usage,
    status: UsageStatus,
    streamed: bool,
    latency_ms: int,
    ttft_ms: int | None,
    estimated: bool,
    reserved: int,
) -> UsageEvent:
    return UsageEvent(
        key_id=key_id,
        request_id=request_id,
        at=at,
        model=model,
        backend=backend,
        prompt_tokens=usage.input,
        completion_tokens=usage.output,
        status=status,
        streamed=streamed,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        estimated=estimated,
        served_model=served_model,
        cached_tokens=usage.cache_read,
        cache_write_tokens=usage.cache_write,
        reasoning_tokens=usage.reasoning,
        cost=price.of(usage) if price is not None else None,
        reserved_tokens=reserved,
    )
