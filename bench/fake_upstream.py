"""A minimal, fast OpenAI-compatible upstream for the benchmark: raw asyncio HTTP/1.1 with keep-alive,
no framework, so that it costs as little CPU as possible next to the servers being measured.

- `POST /v1/chat/completions`: a buffered `chat.completion`, or with `"stream": true` an SSE stream of
  N `chat.completion.chunk` events (N from a model named `...-N`, default 20), a usage chunk when
  `stream_options.include_usage` is set, then `data: [DONE]`.
- `GET /v1/models`, `GET /health`.
- `--chunk-delay-ms`: sleep between streamed chunks (default 0: no delay anywhere).

    python -m bench.fake_upstream --port 9100 [--chunk-delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

DEFAULT_CHUNKS = 20
_CHUNKS_IN_NAME = re.compile(r"-(\d+)$")
JSON_HEADERS = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
SSE_HEADERS = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunks_for(model: str) -> int:
    m = _CHUNKS_IN_NAME.search(model)
    return max(1, min(int(m.group(1)), 10_000)) if m else DEFAULT_CHUNKS


def completion(model: str, n_words: int) -> bytes:
    text = " ".join(["word"] * n_words)
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": n_words, "total_tokens": 12 + n_words},
        },
        separators=(",", ":"),
    ).encode()


def sse_events(model: str, n: int, include_usage: bool) -> list[bytes]:
    created = int(time.time())
    head = f'{{"id":"chatcmpl-fake","object":"chat.completion.chunk","created":{created},"model":"{model}",'
    events = []
    for i in range(n):
        delta = '{"role":"assistant","content":"word"}' if i == 0 else '{"content":" word"}'
        finish = '"stop"' if i == n - 1 else "null"
        events.append(f'data: {head}"choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]}}\n\n')
    if include_usage:
        usage = f'{{"prompt_tokens":12,"completion_tokens":{n},"total_tokens":{12 + n}}}'
        events.append(f'data: {head}"choices":[],"usage":{usage}}}\n\n')
    events.append("data: [DONE]\n\n")
    return [e.encode() for e in events]


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Upstream:
    def __init__(self, chunk_delay_s: float) -> None:
        self.chunk_delay_s = chunk_delay_s

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                await self.answer(method, path.split("?", 1)[0], body, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def answer(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> None:
        if method == "POST" and path.endswith("/chat/completions"):
            request = json.loads(body)
            model = str(request.get("model", "fake"))
            n = chunks_for(model)
            if request.get("stream"):
                include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
                writer.write(SSE_HEADERS)
                for event in sse_events(model, n, include_usage):
                    writer.write(chunked(event))
                    if self.chunk_delay_s:
                        await writer.drain()
                        await asyncio.sleep(self.chunk_delay_s)
                writer.write(b"0\r\n\r\n")
            else:
                payload = completion(model, n)
                writer.write(JSON_HEADERS % len(payload) + payload)
        elif method == "GET" and path in ("/health", "/v1/models"):
            payload = b'{"object":"list","data":[{"id":"fake-20","object":"model","created":0,"owned_by":"bench"}]}'
            writer.write(JSON_HEADERS % len(payload) + payload)
        else:
            payload = b'{"error":{"message":"not found","type":"invalid_request_error"}}'
            writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload))
        await writer.drain()


async def serve(host: str, port: int, chunk_delay_ms: float) -> None:
    upstream = Upstream(chunk_delay_ms / 1000)
    server = await asyncio.start_server(upstream.handle, host, port, backlog=1024)
    print(f"fake upstream on http://{host}:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    if not args.host.startswith("127."):
        parser.error("the fake upstream listens on loopback only")
    asyncio.run(serve(args.host, args.port, args.chunk_delay_ms))


if __name__ == "__main__":
    main()
