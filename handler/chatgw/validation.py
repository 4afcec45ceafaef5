"""Request bodies to `ChatRequest`, and pydantic's errors to the spec's 400s."""

from __future__ import annotations

from typing import Any

import pydantic

from .errors import InvalidRequest, UnknownParameter
from .wire import ROUTING_OR_CREDENTIAL_FIELDS, ChatRequest


def parse_chat_request(body: bytes) -> ChatRequest:
    if not body.strip():
        raise InvalidRequest("The request body is empty: send a JSON chat-completions request.", param="body")
    try:
        return ChatRequest.model_validate_json(body)
    except pydantic.ValidationError as exc:
        raise to_invalid_request(exc.errors(include_url=False)) from None


def _path(loc: tuple[Any, ...]) -> str:
    """`('messages', 0, 'user', 'content')` to `messages[0].content` (dropping union tags)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TAGS or str(part).startswith(("function-", "literal[", "list[", "str", "int", "bool")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


_TAGS = {
    "system", "developer", "user", "assistant", "tool", "text", "image_url", "input_audio", "file", "refusal",
    "json_object", "json_schema", "function", "none", "auto", "required", "NamedToolChoice",
}  # fmt: skip


def _message(error: dict[str, Any], path: str) -> str:
    kind = error["type"]
    if kind == "json_invalid":
        return f"The request body is not valid JSON: {error.get('ctx', {}).get('error', 'parse error')}."
    if kind == "model_type" and path == "body":
        return "The request body must be a JSON object."
    if kind == "missing":
        return f"Missing required parameter: '{path}'."
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        tag = str(ctx.get("discriminator", "")).strip("'")
        return f"Invalid value for '{path}.{tag}': {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}."
    if kind == "union_tag_not_found":
        tag = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
        return f"Missing required parameter: '{path}.{tag}'."
    if kind == "too_short" and path == "messages":
        return "'messages' must contain at least one message."
    msg = str(error["msg"]).removeprefix("Value error, ")
    return f"Invalid value for '{path}': {msg}."


def to_invalid_request(errors: list[Any]) -> InvalidRequest:
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        path = _path(unknown[0]["loc"])
        name = str(unknown[0]["loc"][-1])
        if name.lower() in ROUTING_OR_CREDENTIAL_FIELDS:
            message = f"Parameter '{path}' is not allowed: the gateway alone chooses the upstream and its credentials."
        else:
            message = f"Unrecognized request argument supplied: {path}"
        return UnknownParameter(
            message, param=path, field_errors={_path(e["loc"]): "unknown parameter" for e in unknown}
        )
    field_errors: dict[str, str] = {}
    for error in errors:
        path = _path(error["loc"])
        field_errors.setdefault(path, _message(error, path))
    first_path, first_message = next(iter(field_errors.items()))
    return InvalidRequest(first_message, param=None if first_path == "body" else first_path, field_errors=field_errors)
