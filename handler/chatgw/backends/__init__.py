"""Model backends: the port (`base`), the adapters by kind (`registry`), one module per upstream."""

from chatgw.backends.base import BackendDeps, CatalogError, ChatBackend
from chatgw.backends.registry import ADAPTERS, build_backend
from chatgw.deadline import Deadline

__all__ = ["ADAPTERS", "BackendDeps", "CatalogError", "ChatBackend", "Deadline", "build_backend"]
