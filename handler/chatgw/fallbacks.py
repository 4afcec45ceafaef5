"""Which models may serve a request (the fallback chain inside the key's permissions), and how a
fallback chain that failed as a whole is reported. Pure: no store, no HTTP."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from chatgw.access.keys import KeyRecord, model_allowed
from chatgw.catalog import Catalog, ModelEntry
from chatgw.conversation import Conversation
from chatgw.errors import ChatgwError
from chatgw.observability import logs


def fallback_chain(catalog: Catalog, record: KeyRecord, entry: ModelEntry, request: Conversation) -> list[ModelEntry]:
    """The requested model, then each fallback this key may use and whose backend accepts the request."""
    return [entry] + [
        e for e in catalog.chain(entry.name)[1:] if model_allowed(record, e.name) and _accepts(e, request)
    ]


def _accepts(entry: ModelEntry, request: Conversation) -> bool:
    try:
        entry.check(request)
    except ChatgwError:
        return False
    return True


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
