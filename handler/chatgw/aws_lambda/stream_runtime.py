"""The streaming entry point: a Lambda runtime loop over the Runtime API that runs the ASGI app on
one event loop for the life of the container and writes each response as it comes, in Lambda's
streaming response mode (JSON prelude, 8 NUL bytes, then the body chunks).

Started by `handler/bootstrap` (the function's AWS_LAMBDA_EXEC_WRAPPER) as
`python -m chatgw.aws_lambda.stream_runtime`. The request side (event -> ASGI scope and body) is Mangum's,
so the buffered and the streaming entry points read events the same way."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mangum.handlers import APIGateway, HTTPGateway
from mangum.types import ASGI, LambdaConfig, LambdaHandler, Message

from chatgw.aws_lambda import snapstart
from chatgw.aws_lambda.context import LambdaContext
from chatgw.aws_lambda.runtime_api import PRELUDE_DELIMITER, Invocation, ResponseStream, RuntimeAPIError, RuntimeClient
from chatgw.observability import logs

logger = logging.getLogger("chatgw.runtime")

APP_FACTORY_ENV = "CHATGW_ASGI_FACTORY"
DEFAULT_APP_FACTORY = "chatgw.compose:app"
DEADLINE_MARGIN_ENV = "CHATGW_RUNTIME_DEADLINE_MARGIN_MS"
DEFAULT_DEADLINE_MARGIN_MS = 500
TRACE_ENV = "_X_AMZN_TRACE_ID"

# Picked in this order by `infer()`, as Mangum does: HTTP API (v1 and v2 payloads) and function
# URLs carry `version`; REST API events carry `resource`.
EVENT_HANDLERS: tuple[type[LambdaHandler], ...] = (HTTPGateway, APIGateway)
MANGUM_CONFIG = LambdaConfig(
    api_gateway_base_path="/",
    text_mime_types=["text/", "application/json"],
    exclude_headers=[],
)


class UnsupportedEvent(Exception):
    pass


class DeadlineExceeded(Exception):
    pass


def infer_handler(event: Any, context: LambdaContext) -> LambdaHandler:
    if isinstance(event, dict):
        for handler_cls in EVENT_HANDLERS:
            if handler_cls.infer(event, context, MANGUM_CONFIG):
                return handler_cls(event, context, MANGUM_CONFIG)
    raise UnsupportedEvent("the event is not an API Gateway (REST or HTTP API) or function URL request")


def prelude(status: int, raw_headers: Iterable[tuple[bytes, bytes] | list[bytes]]) -> bytes:
    """The `application/vnd.awslambda.http-integration-response` prelude and its delimiter."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, raw_value in raw_headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name == "set-cookie":
            cookies.append(value)
        else:
            headers[name] = f"{headers[name]},{value}" if name in headers else value
    metadata = {"statusCode": status, "headers": headers, "cookies": cookies}
    return json.dumps(metadata, separators=(",", ":")).encode() + PRELUDE_DELIMITER


class _Exchange:
    """One invocation's ASGI receive/send pair, bridging the app to a streamed `/response`."""

    def __init__(self, client: RuntimeClient, invocation: Invocation, body: bytes) -> None:
        self.client = client
        self.invocation = invocation
        self.stream: ResponseStream | None = None
        self.content_type = ""
        self.complete = False
        self.broken = False
        self._body: bytes | None = body
        self._disconnected = asyncio.Event()

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.broken or self.complete:
            return
        try:
            if message["type"] == "http.response.start":
                if self.stream is not None:
                    raise RuntimeError("http.response.start sent twice")
                headers = message.get("headers", [])
                self.content_type = next((v.decode("latin-1") for k, v in headers if k.lower() == b"content-type"), "")
                self.stream = await self.client.open_stream(self.invocation.request_id)
                await self.stream.write(prelude(message["status"], headers))
            elif message["type"] == "http.response.body":
                if self.stream is None:
                    raise RuntimeError("http.response.body sent before http.response.start")
                await self.stream.write(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    await self.finish()
        except (OSError, RuntimeAPIError) as exc:
            # The Runtime API connection is gone (Lambda closed it): the app sees a disconnect.
            logger.warning("response stream broken: %s", exc)
            self.broken = True
            self._disconnected.set()
            if self.stream is not None:
                self.stream.abort()

    async def finish(self, error_type: str | None = None, message: str = "") -> None:
        if self.stream is None or self.complete:
            return
        self.complete = True
        try:
            # Shielded: an app that cancels its own send (Starlette does once it sees the disconnect
            # below) must not cut the stream short of its end.
            status = await asyncio.shield(self.stream.finish(error_type, message))
        finally:
            self._disconnected.set()
        if status >= 300:
            logger.error("the Runtime API refused the response: %s", status)


class StreamingRuntime:
    def __init__(
        self,
        app: ASGI,
        client: RuntimeClient,
        deadline_margin_ms: int = DEFAULT_DEADLINE_MARGIN_MS,
    ) -> None:
        self.app = app
        self.client = client
        self.deadline_margin_ms = deadline_margin_ms

    async def run(self, max_invocations: int | None = None) -> None:
        done = 0
        while max_invocations is None or done < max_invocations:
            invocation = await self.client.next_invocation()
            await self.handle(invocation)
            done += 1

    async def handle(self, invocation: Invocation) -> None:
        if invocation.trace_id:
            os.environ[TRACE_ENV] = invocation.trace_id
        else:
            os.environ.pop(TRACE_ENV, None)
        context = LambdaContext.of(invocation)
        try:
            handler = infer_handler(invocation.event, context)
            scope, body = handler.scope, handler.body
        except Exception as exc:
            logger.warning("cannot read the event: %s", exc)
            await self._report(
                invocation, "UnsupportedEvent" if isinstance(exc, UnsupportedEvent) else "InvalidEvent", exc
            )
            return
        exchange = _Exchange(self.client, invocation, body)
        task = asyncio.ensure_future(self.app(scope, exchange.receive, exchange.send))
        try:
            await asyncio.wait_for(asyncio.shield(task), self._budget_s(context))
            if exchange.stream is None:
                raise RuntimeError("the application returned without sending a response")
            await exchange.finish()  # the app returned without `more_body: False`
        except TimeoutError:
            await self._abandon(task, exchange, invocation)
        except Exception as exc:
            logger.exception("the application raised")
            await self._fail(exchange, invocation, exc)

    def _budget_s(self, context: LambdaContext) -> float | None:
        if not context.deadline_ms:
            return None
        return max(0.0, context.get_remaining_time_in_millis() - self.deadline_margin_ms) / 1000

    async def _abandon(self, task: asyncio.Future[None], exchange: _Exchange, invocation: Invocation) -> None:
        """The deadline is near and the app has not finished: stop it and end the invocation."""
        task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 0.2)
        message = "the function's deadline was reached before the response was complete"
        logger.error(message)
        streaming_sse = exchange.content_type.startswith("text/event-stream")
        if exchange.stream is not None and not exchange.complete and not exchange.broken and streaming_sse:
            frame = {"error": {"message": message, "type": "api_error", "code": "upstream_timeout"}}
            with contextlib.suppress(OSError, RuntimeAPIError):
                await exchange.stream.write(f"data: {json.dumps(frame)}\n\n".encode())
        await self._fail(exchange, invocation, DeadlineExceeded(message))

    async def _fail(self, exchange: _Exchange, invocation: Invocation, exc: BaseException) -> None:
        if exchange.stream is None:
            await self._report(invocation, type(exc).__name__, exc)
        elif not exchange.complete and not exchange.broken:
            with contextlib.suppress(OSError, RuntimeAPIError):
                await exchange.finish(type(exc).__name__, f"{type(exc).__name__}: {exc}")

    async def _report(self, invocation: Invocation, error_type: str, exc: BaseException) -> None:
        await self.client.invocation_error(invocation.request_id, error_type, str(exc) or error_type)


def load_factory(target: str | None = None) -> Callable[[], ASGI]:
    """The app factory named `module:callable` (CHATGW_ASGI_FACTORY, default chatgw.compose:app)."""
    target = target or os.environ.get(APP_FACTORY_ENV) or DEFAULT_APP_FACTORY
    module_name, _, attr = target.partition(":")
    factory: Callable[[], ASGI] = getattr(importlib.import_module(module_name), attr or "app")
    return factory


async def serve(
    runtime_api: str,
    factory: Callable[[], ASGI] | None = None,
    max_invocations: int | None = None,
    deadline_margin_ms: int = DEFAULT_DEADLINE_MARGIN_MS,
    app: ASGI | None = None,
) -> int:
    """Builds the app once (inside the loop) unless it is given, then serves invocations; init
    failures go to `/init/error`. Returns the process exit code."""
    client = RuntimeClient(runtime_api)
    if app is None:
        try:
            app = (factory or load_factory())()
        except Exception as exc:
            logger.exception("the application could not be built")
            await client.init_error(snapstart.INIT_ERROR, f"{type(exc).__name__}: {exc}")
            return 1
    await StreamingRuntime(app, client, deadline_margin_ms).run(max_invocations)
    return 0


def run(
    runtime_api: str,
    factory: Callable[[], ASGI] | None = None,
    max_invocations: int | None = None,
    deadline_margin_ms: int = DEFAULT_DEADLINE_MARGIN_MS,
    environ: Mapping[str, str] = os.environ,
    wait_for_restore: snapstart.RestoreNext = snapstart.restore_next,
) -> int:
    """The runtime process. Initialised for a snapshot (`AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`),
    it builds the app and takes part in the snapshot lifecycle before any event loop exists, then
    serves on a loop made after the restore; otherwise `serve` does everything on one loop."""
    if not snapstart.requested(environ):
        return asyncio.run(serve(runtime_api, factory, max_invocations, deadline_margin_ms))
    try:
        app = (factory or load_factory())()
    except Exception as exc:
        logger.exception("the application could not be built")
        snapstart.report_init_error(runtime_api, exc)
        return 1
    exit_code = snapstart.take_part(runtime_api, wait_for_restore)
    if exit_code is not None:
        return exit_code
    served = serve(runtime_api, max_invocations=max_invocations, deadline_margin_ms=deadline_margin_ms, app=app)
    return asyncio.run(served)


def main(argv: list[str] | None = None) -> int:
    if not logging.getLogger().handlers:
        # The root logger (every library) at WARNING; only chatgw's loggers follow CHATGW_LOG_LEVEL.
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)
    logs.configure(_log_level())
    runtime_api = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not runtime_api:
        print("AWS_LAMBDA_RUNTIME_API is not set: this runs inside Lambda", file=sys.stderr)
        return 2
    margin = int(os.environ.get(DEADLINE_MARGIN_ENV) or DEFAULT_DEADLINE_MARGIN_MS)
    try:
        return run(runtime_api, deadline_margin_ms=margin)
    except RuntimeAPIError as exc:
        print(f"Runtime API failure: {exc}", file=sys.stderr)
        traceback.print_exc()
        return 1


def _log_level() -> str:
    level = os.environ.get("CHATGW_LOG_LEVEL", "INFO").upper()
    return level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO"


def run_local(
    event: Mapping[str, Any],
    write: Callable[[str], None],
    factory: Callable[[], ASGI] | None = None,
    deadline_s: float = 300.0,
) -> int:
    """Runs one event through the streaming runtime against an in-process fake Runtime API on
    127.0.0.1 and writes, a line at a time as it happens, what Lambda receives: the prelude, each
    body chunk with its arrival time in ms, and the end or the error. 0 when the invocation
    succeeded (whatever the HTTP status), 1 on a function or init error."""
    from chatgw.aws_lambda.fake_runtime_api import FakeRuntimeAPI, describe

    with FakeRuntimeAPI() as fake:
        invocation = fake.push(dict(event), deadline_ms=int((time.time() + deadline_s) * 1000))
        invocation.on_update = lambda line: write(line + "\n")
        exit_code = asyncio.run(serve(fake.address, factory, max_invocations=1))
        if exit_code == 0:
            invocation.wait(timeout=5)
            write(describe(invocation) + "\n")
        elif fake.init_error is not None:
            write(f"init error (/init/error): {json.dumps(fake.init_error)}\n")
    if exit_code:
        return exit_code
    return 0 if invocation.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
