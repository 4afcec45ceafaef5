"""Raw Lambda events of the three shapes API Gateway and function URLs send, CloudWatch Logs'
subscription event, and a helper that runs the streaming runtime against a fake Runtime API in a
thread of its own."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
from collections.abc import Callable
from typing import Any

from mangum.types import ASGI

from chatgw.aws_lambda.stream_runtime import serve


def rest_v1_event(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    raw = body if body is None or isinstance(body, str) else json.dumps(body)
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Host": "abc123.execute-api.us-east-1.amazonaws.com", **(headers or {})},
        "multiValueHeaders": None,
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "203.0.113.7"},
        },
        "body": raw,
        "isBase64Encoded": False,
    }


def http_v2_event(
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    base64_body: bool = False,
    domain: str = "abc123.execute-api.us-east-1.amazonaws.com",
) -> dict[str, Any]:
    raw = body if body is None or isinstance(body, str) else json.dumps(body)
    if base64_body and raw is not None:
        raw = base64.b64encode(raw.encode()).decode()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": domain, **{k.lower(): v for k, v in (headers or {}).items()}},
        "requestContext": {
            "domainName": domain,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7"},
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
        },
        "body": raw,
        "isBase64Encoded": base64_body,
    }


def function_url_event(method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
    return http_v2_event(method, path, body, domain="abcdefg.lambda-url.us-east-1.on.aws", **kw)


class RuntimeThread:
    """The streaming runtime (`serve`) on an event loop of its own thread, as in a container."""

    def __init__(self, address: str, factory: Callable[[], ASGI], max_invocations: int | None = 1) -> None:
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(address, factory, max_invocations), daemon=True)
        self._thread.start()

    def _run(self, address: str, factory: Callable[[], ASGI], max_invocations: int | None) -> None:
        try:
            self.exit_code = asyncio.run(serve(address, factory, max_invocations=max_invocations))
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 30.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the runtime loop did not stop"
        if self.error is not None:
            raise self.error


def probe_app() -> ASGI:
    """A small app for runs of `handler/bootstrap` in a subprocess (CHATGW_ASGI_FACTORY)."""
    import os

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def hello(request: Request) -> Response:
        context = request.scope["aws.context"]
        return JSONResponse(
            {
                "pid": os.getpid(),
                "request_id": context.aws_request_id,
                "function_name": context.function_name,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
            }
        )

    async def sse(request: Request) -> Response:
        async def events() -> Any:
            for word in ("one", "two", "three"):
                yield f"data: {word}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/hello", hello), Route("/sse", sse)])


def usage_event_line(event: Any) -> str:
    """The `usage_event` line the gateway logs for `event` when the store refuses it (service.py's
    call, through observability/logs.py's JSON formatter)."""
    import logging

    from chatgw.observability import logs
    from tests.support.asgi import captured_logs

    with captured_logs() as captured:
        logs.event("usage_event", logging.ERROR, usage_event=event.to_log(), reason="StoreUnavailable")
    (line,) = captured.lines
    return line


def cloudwatch_logs_event(lines: list[str], group: str = "/aws/lambda/chatgw-gateway") -> dict[str, Any]:
    """What CloudWatch Logs hands a subscribed function: base64(gzip(json)) of the batch."""
    payload = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": group,
        "logStream": "2026/01/01/[$LATEST]0123456789abcdef",
        "subscriptionFilters": ["chatgw-usage-events"],
        "logEvents": [
            {"id": str(i), "timestamp": 1_700_000_000_000 + i, "message": line + "\n"} for i, line in enumerate(lines)
        ],
    }
    return {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(payload).encode())).decode()}}
