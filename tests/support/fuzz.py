"""The gateway the fuzz tests share."""

from __future__ import annotations

from dataclasses import dataclass

from chatgw.compose import Container

BODY_LIMIT = 64 * 1024


@dataclass
class Fuzzed:
    """One gateway shared by the examples of a fuzz test: echo and a scripted model, a key for
    everything and a key that may only use `echo` without streaming."""

    container: Container
    key: str
    narrow_key: str

    @property
    def app(self) -> object:
        return self.container.app
