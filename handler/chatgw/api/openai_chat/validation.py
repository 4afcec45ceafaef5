"""Request bodies to `ChatRequest`, and pydantic's errors to the spec's 400s."""

from __future__ import annotations

import json
from typing import Any

import pydantic

from chatgw.api.openai_chat.wire import ROUTING_OR_CREDENTIAL_FIELDS, ChatRequest
from chatgw.errors import InvalidRequest, UnknownParameter


def parse_chat_request(body: bytes) -> ChatRequest:
    if not body.strip():
        raise InvalidRequest("The request body is empty: send a JSON chat-completions request.", param="body")
    try:
        return ChatRequest.model_validate_json(body)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        data = None
        if not any(e["type"] == "json_invalid" for e in errors):  # never re-parse what pydantic could not
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):  # deep nesting must not be a 500
                data = None
        raise to_invalid_request(errors, data) from None


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
