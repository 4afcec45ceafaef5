"""An answer's usage, and the usage event the ledger records for a request: the one place where
tokens become a ledger line (with its cost)."""

from __future__ import annotations

from datetime import datetime

from chatgw.conversation import Answer, Conversation, Usage
from chatgw.errors import UpstreamRateLimited, UpstreamRejected, UpstreamTimeout
from chatgw.metering.estimate import answer_text, count_tokens, estimate_prompt_tokens
from chatgw.metering.price import Price
from chatgw.store.base import DEFAULT_DOOR, UsageEvent, UsageStatus

NONE = Usage(0, 0)


def estimated_usage(conversation: Conversation, answer_text: str) -> Usage:
    """For an upstream that reported none: the prompt estimate and the answer's text counted."""
    return Usage(estimate_prompt_tokens(conversation), count_tokens(answer_text))


UPSTREAM_REFUSALS = frozenset({"auth", "redirect", "status", "429", "model"})
"""Causes of an upstream's own refusal (a 4xx, a redirect): it did no work for the request."""


def reached_upstream(error: BaseException) -> bool:
    """Whether the upstream may have worked (and billed) before this failure: after a timeout, a
    connection lost after sending, a 5xx, a broken answer, it may; before a connection was made, or
    when the upstream refused the request itself, it did not."""
    if isinstance(error, UpstreamRejected | UpstreamRateLimited):
        return False
    if getattr(error, "unsent", False):
        return False
    return getattr(error, "cause", None) not in UPSTREAM_REFUSALS


def failed_call_usage(conversation: Conversation, error: BaseException, *, buffered: bool, reserved: int) -> Usage:
    """What a failed upstream call is booked as: nothing when the upstream did no work; else at least
    the prompt (the upstream read it), and for a buffered call that timed out its whole reservation
    (such a call usually runs to its end upstream, and is billed)."""
    if not reached_upstream(error):
        return NONE
    prompt = estimate_prompt_tokens(conversation)
    if buffered and isinstance(error, UpstreamTimeout):
        cap = (conversation.max_output_tokens or 0) * conversation.choices
        return Usage(prompt, max(reserved - prompt, cap, 0))
    return Usage(prompt, 0)


def plus(a: Usage, b: Usage) -> Usage:
    if b is NONE or b == NONE:
        return a
    return Usage(
        a.input + b.input,
        a.output + b.output,
        a.cache_read + b.cache_read,
        a.cache_write + b.cache_write,
        a.reasoning + b.reasoning,
        a.native,
    )


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
    door: str | None,
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
        door=door or DEFAULT_DOOR,
    )
