"""The ledger's side of a request: which models may serve it (the fallback chain inside the key's
permissions), what admission reserves (its worst case), and how a fallback chain that failed as a
whole is reported. Pure: no store, no HTTP."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from chatgw.access.keys import KeyRecord, Limits, model_allowed
from chatgw.api.openai_chat.wire import ChatRequest
from chatgw.catalog import Catalog, ModelEntry
from chatgw.errors import ChatgwError
from chatgw.metering.estimate import estimate_prompt_tokens
from chatgw.observability import logs


def fallback_chain(catalog: Catalog, record: KeyRecord, entry: ModelEntry, request: ChatRequest) -> list[ModelEntry]:
    """The requested model, then each fallback this key may use and whose backend accepts the request."""
    return [entry] + [
        e for e in catalog.chain(entry.name)[1:] if model_allowed(record, e.name) and _accepts(e, request)
    ]


def _accepts(entry: ModelEntry, request: ChatRequest) -> bool:
    try:
        entry.check(request)
    except ChatgwError:
        return False
    return True


# reservations ------------------------------------------------------------------------------


def reserves_tokens(limits: Limits) -> bool:
    return limits.tokens_per_minute is not None or limits.monthly_token_budget is not None


def output_cap(request: ChatRequest, record: KeyRecord, entry: ModelEntry, default: int) -> int:
    """Per choice: the request's max_completion_tokens/max_tokens, else the key's
    max_tokens_per_request, else the model's `max_output_tokens`, else the gateway default."""
    for cap in (request.token_cap, record.limits.max_tokens_per_request, entry.max_output_tokens):
        if cap is not None:
            return cap
    return default


def with_cap(request: ChatRequest, cap: int) -> ChatRequest:
    """The request as sent: bound by the cap its reservation assumed."""
    if request.token_cap is not None:
        return request
    return request.model_copy(update={"max_tokens": cap})


def worst_case(request: ChatRequest, cap: int) -> int:
    """What admission reserves: the prompt estimate plus n times the output cap."""
    return estimate_prompt_tokens(request) + (request.n or 1) * cap


# a fallback chain's outcome ------------------------------------------------------------------


@dataclass(slots=True)
class ChainLog:
    """What each model of a fallback chain did, logged once when a fallback was tried."""

    request_id: str
    requested: str
    outcomes: list[dict[str, str]] = field(default_factory=list)

    def failed(self, entry: ModelEntry, error: ChatgwError) -> None:
        self.outcomes.append({"model": entry.name, "outcome": error.code})

    def served(self, entry: ModelEntry) -> None:
        self.outcomes.append({"model": entry.name, "outcome": "ok"})

    def flush(self) -> None:
        if len(self.outcomes) > 1 or (self.outcomes and self.outcomes[0]["outcome"] != "ok"):
            level = logging.WARNING if self.outcomes[-1]["outcome"] != "ok" else logging.INFO
            logs.event("fallback_chain", level, request_id=self.request_id, model=self.requested, chain=self.outcomes)

    def whole_chain_failed(self, error: ChatgwError) -> ChatgwError:
        """The last error, renamed after the requested model when fallbacks were tried too."""
        tried = [o["model"] for o in self.outcomes[1:]]
        if tried:
            names = ", ".join(f"`{name}`" for name in tried)
            error.message = (
                f"The model `{self.requested}` failed and its fallbacks ({names}) failed too. "
                f"Last error: {error.message}"
            )
        return error
