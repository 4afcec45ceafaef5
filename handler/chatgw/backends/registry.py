"""Model backends by kind. Each adapter module exposes `from_options(name, options, deps)`; they are
imported only when the catalog names them, so that an unused backend costs no cold start."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from chatgw.backends.base import BackendDeps, ChatBackend

ADAPTERS = {
    "echo": "chatgw.backends.echo",
    "openai": "chatgw.backends.openai_chat",
    "bedrock": "chatgw.backends.bedrock",
    "anthropic": "chatgw.backends.anthropic",
}


def build_backend(kind: str, name: str, options: Mapping[str, Any], deps: BackendDeps) -> ChatBackend:
    module = importlib.import_module(ADAPTERS[kind])
    backend: ChatBackend = module.from_options(name, options, deps)
    return backend
