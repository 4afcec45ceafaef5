"""A minimal, fast upstream for the benchmark in three dialects: raw asyncio HTTP/1.1 with keep-alive,
no framework, so that it costs as little CPU as possible next to the servers being measured.
N below comes from a model named `...-N` (default 20).

- `POST /v1/chat/completions`: a buffered `chat.completion`, or with `"stream": true` an SSE stream of
  N `chat.completion.chunk` events, a usage chunk when `stream_options.include_usage` is set, then
  `data: [DONE]`.
- `POST /v1/responses`: a buffered `response` object, or OpenAI's Responses event stream: created,
  in_progress, the message item and its part, N `response.output_text.delta`, the done events, and
  `response.completed` with usage.
- `POST /v1/messages`: Anthropic's `message`, or its event stream: message_start, one text block with
  N `content_block_delta` events, message_delta with usage, message_stop.
- `GET /v1/models`, `GET /health`.
- `--chunk-delay-ms`: sleep between streamed chunks (default 0: no delay anywhere).

    python -m bench.fake_upstream --port 9100 [--chunk-delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import re
import time
from collections.abc import Sequence

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


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _response_object(model: str, status: str, output: list[object], n: int | None) -> dict[str, object]:
    usage = None
    if n is not None:
        usage = {
            "input_tokens": 12,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": n,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 12 + n,
        }
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "store": False,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


def _response_message(n: int) -> dict[str, object]:
    text = " ".join(["word"] * n)
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": "msg_fake", "type": "message", "status": "completed", "role": "assistant", "content": [part]}


@functools.lru_cache(maxsize=64)  # built once per model: the fake must stay cheap
def response(model: str, n: int) -> bytes:
    return _json(_response_object(model, "completed", [_response_message(n)], n)).encode()


@functools.lru_cache(maxsize=64)
def response_events(model: str, n: int) -> tuple[bytes, ...]:
    """OpenAI's Responses stream grammar for one text message of n deltas, each event numbered."""
    item = _response_message(n)
    part = item["content"][0]  # type: ignore[index]
    at = '"item_id":"msg_fake","output_index":0,"content_index":0'
    added = {**item, "status": "in_progress", "content": []}
    events: list[tuple[str, str]] = [
        ("response.created", f'"response":{_json(_response_object(model, "in_progress", [], None))}'),
        ("response.in_progress", f'"response":{_json(_response_object(model, "in_progress", [], None))}'),
        ("response.output_item.added", f'"output_index":0,"item":{_json(added)}'),
        ("response.content_part.added", f'{at},"part":{_json({**part, "text": ""})}'),  # type: ignore[dict-item]
    ]
    events += [
        ("response.output_text.delta", f'{at},"delta":"{"word" if i == 0 else " word"}","logprobs":[]')
        for i in range(n)
    ]
    events += [
        ("response.output_text.done", f'{at},"text":{_json(part["text"])},"logprobs":[]'),  # type: ignore[index]
        ("response.content_part.done", f'{at},"part":{_json(part)}'),
        ("response.output_item.done", f'"output_index":0,"item":{_json(item)}'),
        ("response.completed", f'"response":{_json(_response_object(model, "completed", [item], n))}'),
    ]
    return tuple(
        f'event: {kind}\ndata: {{"type":"{kind}","sequence_number":{seq},{fields}}}\n\n'.encode()
        for seq, (kind, fields) in enumerate(events)
    )


@functools.lru_cache(maxsize=64)
def message(model: str, n: int) -> bytes:
    return _json(
        {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": " ".join(["word"] * n)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 12,
                "output_tokens": n,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
    ).encode()


@functools.lru_cache(maxsize=64)
def message_events(model: str, n: int) -> tuple[bytes, ...]:
    """Anthropic's Messages stream grammar for one text block of n deltas."""
    start = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    events: list[tuple[str, str]] = [
        ("message_start", f'"message":{_json(start)}'),
        ("content_block_start", '"index":0,"content_block":{"type":"text","text":""}'),
    ]
    events += [
        ("content_block_delta", f'"index":0,"delta":{{"type":"text_delta","text":"{"word" if i == 0 else " word"}"}}')
        for i in range(n)
    ]
    events += [
        ("content_block_stop", '"index":0'),
        ("message_delta", f'"delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{n}}}'),
        ("message_stop", ""),
    ]
    return tuple(
        f'event: {kind}\ndata: {{"type":"{kind}"{"," if fields else ""}{fields}}}\n\n'.encode()
        for kind, fields in events
    )


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
        dialect = _dialect(path) if method == "POST" else None
        if dialect is not None:
            request = json.loads(body)
            model = str(request.get("model", "fake"))
            n = chunks_for(model)
            if request.get("stream"):
                writer.write(SSE_HEADERS)
                for event in _stream(dialect, request, model, n):
                    writer.write(chunked(event))
                    if self.chunk_delay_s:
                        await writer.drain()
                        await asyncio.sleep(self.chunk_delay_s)
                writer.write(b"0\r\n\r\n")
            else:
                payload = BUFFERED[dialect](model, n)
                writer.write(JSON_HEADERS % len(payload) + payload)
        elif method == "GET" and path in ("/health", "/v1/models"):
            payload = b'{"object":"list","data":[{"id":"fake-20","object":"model","created":0,"owned_by":"bench"}]}'
            writer.write(JSON_HEADERS % len(payload) + payload)
        else:
            payload = b'{"error":{"message":"not found","type":"invalid_request_error"}}'
            writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload))
        await writer.drain()


BUFFERED = {"chat": completion, "responses": response, "messages": message}


def _dialect(path: str) -> str | None:
    for suffix, dialect in (("/chat/completions", "chat"), ("/responses", "responses"), ("/messages", "messages")):
        if path.endswith(suffix):
            return dialect
    return None


def _stream(dialect: str, request: dict[str, object], model: str, n: int) -> Sequence[bytes]:
    if dialect == "responses":
        return response_events(model, n)
    if dialect == "messages":
        return message_events(model, n)
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))  # type: ignore[attr-defined]
    return sse_events(model, n, include_usage)


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
