"""How `chatgw serve` runs uvicorn: with a header-read timeout, which uvicorn's h11 protocol lacks.

uvicorn arms no timer while a connection sends its request headers (its keep-alive timer runs only
between requests, and any byte cancels it), so a client that opens connections and sends nothing, or
a header byte now and then, holds them forever (slowloris). `HeaderTimeoutProtocol` closes a
connection whose request headers are not complete `CHATGW_HEADER_TIMEOUT_S` (10 s) after it opened
or after its previous response ended."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_ENV = "CHATGW_HEADER_TIMEOUT_S"
DEFAULT_HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
MAX_HEADER_BYTES = 64 * 1024


def header_timeout_s() -> float:
    raw = os.environ.get(HEADER_TIMEOUT_ENV) or ""
    try:
        value = float(raw) if raw else DEFAULT_HEADER_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{HEADER_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    return value if value > 0 else DEFAULT_HEADER_TIMEOUT_S


class HeaderTimeoutProtocol(H11Protocol):
    timeout_s = DEFAULT_HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and self.cycle is not self._waiting_after:
            self._disarm()  # a new request's headers are complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        idle = self.cycle is None or self.cycle.response_complete  # not a pipelined request under way
        if idle and not self.transport.is_closing():
            self._arm()  # the next request's headers get the same time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._waiting_after = self.cycle
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(self.timeout_s, self._expired)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` beyond app, host and port."""
    protocol = type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"timeout_s": header_timeout_s()})
    return {
        "http": protocol,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "log_level": "warning",
        "access_log": False,
    }
