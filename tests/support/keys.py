"""Keys made straight in a container's store, as `chatgw keys create` would make them."""

from __future__ import annotations

from typing import Any

from chatgw.access.keys import new_key
from chatgw.compose import Container


def add_key(container: Container, **fields: Any) -> str:
    key, record = new_key("test", pepper=container.settings.pepper, **fields)
    container.store.create_key(record)
    return key
