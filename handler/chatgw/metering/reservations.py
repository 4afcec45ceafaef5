"""What admission reserves for a token-limited key: the request's worst case (docs/store.md,
"Reservations"), and the output cap the request is sent with so that the worst case holds."""

from __future__ import annotations

from chatgw.access.keys import KeyRecord, Limits
from chatgw.conversation import Conversation
from chatgw.metering.estimate import IMAGE_TOKENS, estimate_prompt_tokens


def reserves_tokens(limits: Limits) -> bool:
    return limits.tokens_per_minute is not None or limits.monthly_token_budget is not None


def output_cap(conversation: Conversation, record: KeyRecord, model_cap: int | None, default: int) -> int:
    """Per choice: the request's own cap, else the key's max_tokens_per_request, else the model's
    `max_output_tokens`, else the gateway default."""
    for cap in (conversation.max_output_tokens, record.limits.max_tokens_per_request, model_cap):
        if cap is not None:
            return cap
    return default


def with_cap(conversation: Conversation, cap: int) -> Conversation:
    """The request as sent: bound by the cap its reservation assumed."""
    if conversation.max_output_tokens is not None:
        return conversation
    return conversation.with_cap(cap)


def worst_case(conversation: Conversation, cap: int, image_tokens: int | None = None) -> int:
    """What admission reserves: the prompt estimate (each image at what the model says one may cost)
    plus each choice's output cap."""
    prompt = estimate_prompt_tokens(conversation, image_tokens if image_tokens is not None else IMAGE_TOKENS)
    return prompt + conversation.choices * cap
