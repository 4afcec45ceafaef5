"""What tokens cost: a model's prices, per million tokens."""

from __future__ import annotations

from dataclasses import dataclass

from chatgw.conversation import Usage


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. Cached input (read from the provider's prompt cache) and cache
    writes have their own rates; unset, they cost as ordinary input."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None

    def cost(
        self, prompt_tokens: int, completion_tokens: int, *, cached_tokens: int = 0, cache_write_tokens: int = 0
    ) -> float:
        """`prompt_tokens` includes the cached and cache-write tokens (OpenAI's convention)."""
        plain = max(0, prompt_tokens - cached_tokens - cache_write_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        write_rate = self.input if self.cache_write is None else self.cache_write
        total = (
            plain * self.input
            + cached_tokens * cached_rate
            + cache_write_tokens * write_rate
            + completion_tokens * self.output
        )
        return round(total / 1_000_000, 12)

    def of(self, usage: Usage) -> float:
        return self.cost(
            usage.input, usage.output, cached_tokens=usage.cache_read, cache_write_tokens=usage.cache_write
        )
