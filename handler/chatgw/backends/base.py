"""The backend interface: what the service needs of a model backend, and the shared parts
(HTTP client, AWS clients) that backends get from `compose.py` instead of making their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from chatgw.conversation import Answer, Conversation, Event
from chatgw.deadline import Deadline
from chatgw.errors import UnsupportedParameter


class CatalogError(ValueError):
    """A model catalog entry that cannot be used; the message names the model and field."""


class ChatBackend(Protocol):
    kind: str
    """"echo", "openai", "anthropic" or "bedrock": written to the usage ledger."""

    def check(self, request: Conversation) -> None:
        """Raise `UnsupportedParameter` naming the first parameter this backend cannot honour
        (by the door's name for it: `request.spelled(...)`)."""

    async def complete(self, request: Conversation, deadline: Deadline) -> Answer: ...

    def stream(self, request: Conversation, deadline: Deadline) -> AsyncIterator[Event]:
        """An async generator of events; an event with `usage` may come last. Closing the
        generator closes the upstream call.
        The caller bounds the whole stream by the deadline (`ChatStream` does), so a backend need not
        time each read against it: one read waits at most the model's timeout."""

    async def aclose(self) -> None: ...


@runtime_checkable
class CountsTokens(Protocol):
    """A backend whose upstream counts a request's input tokens itself (Anthropic's count_tokens,
    Bedrock's CountTokens). A door's count route asks it, and answers 404 for a backend without:
    clients decide when to compact on this number, so the gateway never makes one up."""

    async def count_tokens(self, request: Conversation, deadline: Deadline | None = None) -> int: ...


def unsupported(request: Conversation, name: str, backend: str, why: str = "") -> UnsupportedParameter:
    param = request.spelled(name)
    return UnsupportedParameter(
        f"The parameter `{param}` is not supported by the {backend} backend of model '{request.model}'{why}.",
        param=param,
    )


def refuse_unsupported(request: Conversation, supported: Iterable[str], backend: str) -> None:
    """Refuse the first setting the client gave that is not in `supported` (names of
    `conversation.FEATURES`, or a door's own parameter names)."""
    for name in sorted(request.given - frozenset(supported), key=request.spelled):
        raise unsupported(request, name, backend)


class BackendDeps:
    """Shared, lazily made clients: one per container, handed to every backend."""

    def __init__(
        self,
        http_client_factory: Callable[[], Any] | None = None,
        aws_client_factory: Callable[..., Any] | None = None,
    ) -> None:
        self._http_client_factory = http_client_factory
        self._aws_client_factory = aws_client_factory
        self._http_client: Any = None
        self._http_loop: asyncio.AbstractEventLoop | None = None
        self._aws_clients: dict[tuple[str, str | None], Any] = {}
        self._forgetters: list[Callable[[], None]] = []

    def forget_on_restore(self, forget: Callable[[], None]) -> None:
        """`forget` drops something read before a snapshot (an upstream key) when it is restored."""
        self._forgetters.append(forget)

    def drop_connections(self) -> None:
        """For a SnapStart snapshot and restore: every pooled connection (the HTTP client's, each AWS
        client's) is dropped and what was read once is forgotten; the next call makes them anew."""
        self._http_client = None  # its connections, if any, belong to a loop of the snapshotted process
        self._http_loop = None
        for client in self._aws_clients.values():
            client.close()  # botocore: clears the urllib3 pools; the client makes new connections on use
        for forget in self._forgetters:
            forget()

    def http_client(self) -> Any:
        """The one `httpx.AsyncClient` of the container (connection reuse, no redirects). Its pooled
        connections belong to the event loop that opened them: under another loop (a caller that
        runs each request in `asyncio.run`), a new client is made instead of failing every call."""
        loop = asyncio.get_running_loop()
        if self._http_client is not None and self._http_loop is not loop:
            self._http_client = None  # the old loop is gone or elsewhere: its client cannot be closed from here
        if self._http_client is None:
            self._http_loop = loop
            if self._http_client_factory is None:
                import httpx

                self._http_client = httpx.AsyncClient(follow_redirects=False, timeout=None)  # noqa: S113 (per call)
            else:
                self._http_client = self._http_client_factory()
        return self._http_client

    def aws_client(self, service: str, region: str | None = None) -> Any:
        key = (service, region)
        if key not in self._aws_clients:
            if self._aws_client_factory is not None:
                self._aws_clients[key] = self._aws_client_factory(service, region)
            else:
                from chatgw import aws

                self._aws_clients[key] = aws.client(service, region)
        return self._aws_clients[key]

    async def aclose(self) -> None:
        if self._http_client is not None:
            await self._http_client.aclose()
            self._http_client = None
