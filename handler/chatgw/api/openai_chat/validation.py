"""Request bodies to `ChatRequest`, and pydantic's errors to the spec's 400s."""

from __future__ import annotations

from typing import Any

from chatgw.api.http import parse_json_body
from chatgw.api.openai_chat.wire import ROUTING_OR_CREDENTIAL_FIELDS, ChatRequest
from chatgw.errors import InvalidRequest, UnknownParameter


def parse_chat_request(body: bytes) -> ChatRequest:
    return parse_json_body(ChatRequest, body, "chat-completions", to_invalid_request)


def _path(loc: tuple[Any, ...], data: Any, missing: bool = False) -> str:
    """`('messages', 0, 'user', 'content')` to `messages[0].content`, walking the input so that
    pydantic's union tags (`user`, `str`, `list[str]`, ...) are dropped and field names kept."""
    out, current = "", data
    for i, part in enumerate(loc):
        if isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            out += f"[{part}]"
            current = current[part]
        elif isinstance(current, dict) and part in current:
            out += f".{part}" if out else str(part)
            current = current[part]
        elif missing and i == len(loc) - 1:
            out += f".{part}" if out else str(part)
    return out or "body"


def _message(error: dict[str, Any], path: str) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "json_invalid":
        return f"The request body is not valid JSON: {ctx.get('error', 'parse error')}."
    if kind == "model_type" and path == "body":
        return "The request body must be a JSON object."
    if kind == "missing":
        return f"Missing required parameter: '{path}'."
    if kind == "union_tag_invalid":
        tag = str(ctx.get("discriminator", "")).strip("'")
        return f"Invalid value for '{path}.{tag}': {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}."
    if kind == "union_tag_not_found":
        return f"Missing required parameter: '{path}.{str(ctx.get('discriminator', '')).strip(chr(39))}'."
    if kind == "too_short" and path == "messages":
        return "'messages' must contain at least one message."
    msg = str(error["msg"]).removeprefix("Value error, ")
    return f"Invalid value for '{path}': {msg}."


def to_invalid_request(errors: list[Any], data: Any) -> InvalidRequest:
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        path = _path(unknown[0]["loc"], data)
        name = str(unknown[0]["loc"][-1])
        if name.lower() in ROUTING_OR_CREDENTIAL_FIELDS:
            message = f"Parameter '{path}' is not allowed: the gateway alone chooses the upstream and its credentials."
        else:
            message = f"Unrecognized request argument supplied: {path}"
        field_errors = {_path(e["loc"], data): "unknown parameter" for e in unknown}
        return UnknownParameter(message, param=path, field_errors=field_errors)
    field_errors = {}
    for error in errors:
        path = _path(error["loc"], data, missing=error["type"] == "missing")
        field_errors.setdefault(path, _message(error, path))
    first_path, first_message = next(iter(field_errors.items()))
    return InvalidRequest(first_message, param=None if first_path == "body" else first_path, field_errors=field_errors)
