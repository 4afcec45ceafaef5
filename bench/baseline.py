"""The baseline: a bare FastAPI + httpx pass-through with an in-memory key check, the least a gateway
can be, for each door's dialect (chat completions, Responses, Messages). No validation, no limits, no
usage ledger. Run under uvicorn exactly as `chatgw serve` is.

    BENCH_UPSTREAM=http://127.0.0.1:9100/v1 BENCH_KEY=k python -m bench.baseline --port 9200
"""

from __future__ import annotations

import argparse
import hmac
import os
from collections.abc import AsyncIterator

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9100/v1")
KEYS = {os.environ.get("BENCH_KEY", "bench-key")}
app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
client = httpx.AsyncClient(base_url=UPSTREAM, timeout=60, limits=httpx.Limits(max_keepalive_connections=64))


def authorized(request: Request) -> bool:
    presented = request.headers.get("authorization", "").removeprefix("Bearer ")
    return any(hmac.compare_digest(presented, k) for k in KEYS)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def relay(request: Request, path: str) -> Response:
    if not authorized(request):
        return JSONResponse({"error": {"message": "Invalid API key.", "type": "authentication_error"}}, 401)
    body = await request.json()
    if not body.get("stream"):
        upstream = await client.post(path, json=body)
        return Response(upstream.content, upstream.status_code, media_type="application/json")
    upstream = await client.send(client.build_request("POST", path, json=body), stream=True)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()

    return StreamingResponse(chunks(), upstream.status_code, media_type="text/event-stream")


# The same pass-through for each door's dialect: the request goes to the upstream's path of that dialect.
@app.post("/v1/chat/completions")
async def chat(request: Request) -> Response:
    return await relay(request, "/chat/completions")


@app.post("/v1/responses")
async def responses(request: Request) -> Response:
    return await relay(request, "/responses")


@app.post("/v1/messages")
async def messages(request: Request) -> Response:
    return await relay(request, "/messages")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9200)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
