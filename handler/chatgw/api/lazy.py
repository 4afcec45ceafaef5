"""Endpoints whose module is imported by the first request that needs it.

A door's request models cost import time (the Responses door's ~14 ms of CPU, the Messages door's
~8 ms, Python 3.13): a new Lambda environment without SnapStart pays init before its first answer,
so each door's module loads when that door is first called, and an environment that serves one
door pays for that door only. Before a SnapStart snapshot every such module is loaded
(`load_all`, from the before-snapshot hook), so that a restored environment has them all."""

from __future__ import annotations

import importlib
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from chatgw.api.door import Endpoint

MODULES: set[str] = set()


def endpoint(module: str, factory: str, *args: Any) -> Endpoint:
    """`module.factory(*args)`, the door's endpoint, made by the first request. No await comes
    between the check and the assignment: concurrent first requests on one loop make it once."""
    MODULES.add(module)
    made: Endpoint | None = None

    async def call(request: Request) -> Response:
        nonlocal made
        if made is None:
            made = getattr(importlib.import_module(module), factory)(*args)
        return await made(request)

    call.__name__ = factory
    return call


def load_all() -> None:
    """Import every module an endpoint of this process loads lazily."""
    for module in sorted(MODULES):
        importlib.import_module(module)
