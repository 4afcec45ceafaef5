"""The `bedrock` backend: AWS Bedrock Converse and ConverseStream through the container's botocore
`bedrock-runtime` client (chatgw/aws.py). The blocking calls run on this backend's own threads, never on the event
loop; a stream is read by one thread that hands events to the loop through a queue. With `"api": "invoke"` the
same machinery calls InvokeModel with Anthropic's own body instead (`bedrock_invoke.py`); `bedrock.py` reads the
catalog entry and makes one or the other."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from chatgw.backends import _converse_mapping as mapping
from chatgw.backends._retry import Retryable, with_retries
from chatgw.backends._scrub import scrub
from chatgw.backends.base import BackendDeps
from chatgw.conversation import Answer, Conversation, Event
from chatgw.deadline import Deadline
from chatgw.errors import (
    ChatgwError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)

THREADS = 32

RATE_LIMITED = {"throttlingexception", "servicequotaexceededexception", "toomanyrequestsexception"}
REJECTED = {"validationexception", "resourcenotfoundexception"}
NOT_ALLOWED = {
    "accessdeniedexception",
    "unrecognizedclientexception",
    "expiredtokenexception",
    "invalidsignatureexception",
}
TIMED_OUT = {"modeltimeoutexception"}
RETRYABLE = {"serviceunavailableexception", "internalserverexception", "modelnotreadyexception"}


class BedrockBackend:
    kind = "bedrock"
    native_dialect: str | None = None

    def __init__(self, name: str, *, model_id: str, region: str | None, max_retries: int, deps: BackendDeps) -> None:
        self.name = name
        self.model_id = model_id
        self.region = region
        self.max_retries = max_retries
        self._deps = deps
        self._executor: ThreadPoolExecutor | None = None

    def check(self, request: Conversation) -> None:
        mapping.check(request)

    async def complete(self, request: Conversation, deadline: Deadline) -> Answer:
        kwargs = {"modelId": self.model_id, **mapping.converse_request(request)}
        response = await self._call(lambda client: client.converse(**kwargs), deadline)
        return mapping.answer_from(response)

    async def count_tokens(self, request: Conversation, deadline: Deadline | None = None) -> int:
        """Bedrock's own count of the request's input tokens (CountTokens)."""
        converse = mapping.converse_request(request)
        counted = {k: v for k, v in converse.items() if k in ("messages", "system", "toolConfig")}
        return await self._count({"converse": counted}, deadline)

    async def stream(self, request: Conversation, deadline: Deadline) -> AsyncIterator[Event]:
        kwargs = {"modelId": self.model_id, **mapping.converse_request(request)}
        response = await self._call(lambda client: client.converse_stream(**kwargs), deadline)
        mapper = mapping.StreamMapper()
        async with contextlib.aclosing(self._pump(response["stream"], deadline)) as items:
            async for item in items:
                for step in mapper.feed(item):
                    yield step
        if not mapper.stopped:
            raise UpstreamError(
                f"The Bedrock stream of model '{self.name}' ended without messageStop.", cause="malformed"
            )

    async def _count(self, counted: dict[str, Any], deadline: Deadline | None) -> int:
        deadline = deadline or Deadline.in_seconds(60)
        response = await self._call(lambda client: client.count_tokens(modelId=self.model_id, input=counted), deadline)
        count = response.get("inputTokens") if isinstance(response, dict) else None
        if not isinstance(count, int) or count < 0:
            raise UpstreamError(f"Bedrock answered a count without inputTokens for model '{self.name}'.")
        return count

    async def _pump(self, events: Any, deadline: Deadline) -> AsyncGenerator[Any]:
        """The items of a botocore event stream, read by one of this backend's threads; closing this
        generator stops that thread and closes the stream."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def hand_over(kind: str, item: Any) -> None:
            if not stop.is_set():
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
                    loop.call_soon_threadsafe(queue.put_nowait, (kind, item))

        def pump() -> None:
            try:
                for event in events:
                    if stop.is_set():
                        return
                    hand_over("event", event)
                hand_over("end", None)
            except Exception as exc:
                hand_over("error", exc)

        loop.run_in_executor(self._threads(), pump)
        try:
            while True:
                try:
                    async with asyncio.timeout(max(deadline.remaining(), 0.0)):
                        kind, item = await queue.get()
                except TimeoutError:
                    raise self._timeout() from None
                if kind == "end":
                    break
                if kind == "error":
                    error = self._map(item)
                    raise (error.error if isinstance(error, Retryable) else error) from None
                yield item
        finally:
            stop.set()
            _close(events)

    async def aclose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # ---- the calls -----------------------------------------------------------------------

    def _threads(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix=f"bedrock-{self.name}")
        return self._executor

    def _client(self) -> Any:
        client = self._deps.aws_client("bedrock-runtime", self.region)
        if not getattr(client, "_chatgw_retries_off", False):
            # This backend retries itself (at most `max_retries` more tries, within the deadline);
            # botocore's own retry handler would multiply that.
            client.meta.events.unregister("needs-retry.bedrock-runtime", unique_id="retry-config-bedrock-runtime")
            client._chatgw_retries_off = True
        return client

    async def _call(self, call: Callable[[Any], Any], deadline: Deadline) -> Any:
        client = await asyncio.get_running_loop().run_in_executor(self._threads(), self._client)

        async def attempt() -> Any:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise self._timeout()
            future = self._threads().submit(call, client)
            try:
                async with asyncio.timeout(remaining):
                    return await asyncio.wrap_future(future)
            except TimeoutError:
                future.add_done_callback(_close_abandoned)
                raise self._timeout() from None
            except asyncio.CancelledError:
                future.add_done_callback(_close_abandoned)
                raise
            except Exception as exc:
                raise self._map(exc) from None

        return await with_retries(attempt, max_retries=self.max_retries, deadline=deadline, model=self.name)

    # ---- errors --------------------------------------------------------------------------

    def _timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"Bedrock did not answer for model '{self.name}' in time.", cause="timeout")

    def _map(self, exc: BaseException) -> ChatgwError | Retryable:
        from botocore import exceptions as boto

        if isinstance(exc, boto.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "")
            message = scrub(str(error.get("Message") or code))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            return self._map_code(code, message, status)
        if isinstance(exc, boto.ConnectTimeoutError):
            timeout = self._timeout()
            timeout.unsent = True
            return Retryable(timeout)
        if isinstance(exc, boto.ReadTimeoutError):
            return self._timeout()
        if isinstance(exc, boto.EndpointConnectionError | boto.ConnectionClosedError):
            unsent = isinstance(exc, boto.EndpointConnectionError)  # no connection: nothing was sent
            return Retryable(
                UpstreamError(
                    f"The connection to Bedrock failed for model '{self.name}'.", cause="connect", unsent=unsent
                )
            )
        if isinstance(exc, boto.ParamValidationError):
            return UpstreamRejected(f"Bedrock cannot take this request: {scrub(str(exc))}")
        return UpstreamError(f"The Bedrock call for model '{self.name}' failed ({type(exc).__name__}).", cause="client")

    def _map_code(self, code: str, message: str, status: int) -> ChatgwError | Retryable:
        key = code.lower()
        if key in RATE_LIMITED or status == 429:
            limited = UpstreamRateLimited(
                f"Bedrock is throttling model '{self.name}': {message}", retry_after=1, cause="429"
            )
            return Retryable(limited)
        if key in REJECTED:
            return UpstreamRejected(message)
        if key in NOT_ALLOWED or status in (401, 403):
            return UpstreamError(
                f"The gateway is not allowed to call Bedrock model '{self.name}' ({code}).", cause="auth"
            )
        if key in TIMED_OUT or status == 408:
            return self._timeout()
        failed = UpstreamError(
            f"Bedrock failed for model '{self.name}' ({code}): {message}", cause="5xx" if status >= 500 else "model"
        )
        if key in RETRYABLE or (status >= 500 and key not in {"modelstreamerrorexception"}):
            return Retryable(failed)
        if 400 <= status < 500 and key not in {"modelstreamerrorexception", "modelerrorexception"}:
            return UpstreamRejected(message)
        return failed


def _close_abandoned(future: Future[Any]) -> None:
    """A call nobody waits for any more: the thread cannot be stopped, but a stream it opened is closed."""
    if not future.cancelled() and future.exception() is None:
        result = future.result()
        if isinstance(result, dict) and "stream" in result:
            _close(result["stream"])
        elif isinstance(result, dict) and hasattr(result.get("body"), "close"):
            _close(result["body"])  # InvokeModelWithResponseStream's event stream


def _close(events: Any) -> None:
    """Stop reading: wake the reading thread (shut the socket's read side), then close."""
    raw = getattr(events, "_raw_stream", None)
    with contextlib.suppress(ValueError, RuntimeError, OSError):
        if raw is not None and hasattr(raw, "shutdown"):
            raw.shutdown()
    with contextlib.suppress(Exception):  # best effort: the stream is abandoned either way
        events.close()
