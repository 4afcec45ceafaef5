"""Request bodies to `MessagesRequest`, and pydantic's errors to Anthropic-style 400s
(`invalid_request_error`, "<field path>: <what is wrong>", as Anthropic words them: Claude Code
shows the message to its user verbatim)."""

from __future__ import annotations

from typing import Any

from chatgw.api.anthropic_messages.wire import CountTokensRequest, MessagesRequest
from chatgw.api.http import parse_json_body
from chatgw.errors import InvalidRequest


def parse_messages_request(body: bytes, *, counting: bool = False) -> MessagesRequest:
    """The request of `POST /v1/messages` (or of its `count_tokens`, which has no `max_tokens`)."""
    return parse_json_body(CountTokensRequest if counting else MessagesRequest, body, "Messages", to_invalid_request)


def _path(loc: tuple[Any, ...], data: Any, missing: bool) -> str:
    """`('messages', 0, 'content', 'list[...]', 1, 'text', 'text')` to `messages.0.content.1.text`: the
    input is walked, so that pydantic's union tags are dropped and field names kept."""
    out: list[str] = []
    current = data
    for i, part in enumerate(loc):
        walks_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if walks_list or (isinstance(current, dict) and part in current):
            out.append(str(part))
            current = current[part]
        elif missing and i == len(loc) - 1:
            out.append(str(part))
    return ".".join(out) or "body"


def _message(error: dict[str, Any], path: str) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "json_invalid":
        return f"The request body is not valid JSON: {ctx.get('error', 'parse error')}."
    if kind == "model_type" and path == "body":
        return "The request body must be a JSON object."
    if kind == "missing":
        return f"{path}: Field required"
    if kind == "union_tag_invalid":
        return f"{path}.type: Input tag {ctx.get('tag')!r} is not one of {ctx.get('expected_tags')}"
    if kind in ("union_tag_not_found", "invalid_union_discriminator"):
        return f"{path}.type: Field required"
    return f"{path}: {str(error['msg']).removeprefix('Value error, ')}"


def to_invalid_request(errors: list[Any], data: Any) -> InvalidRequest:
    field_errors: dict[str, str] = {}
    # of a union's failed branches, the one that went deepest says what is wrong (a content block's
    # missing `text`, rather than "not a string")
    for error in sorted(errors, key=lambda e: -len(e["loc"])):
        path = _path(error["loc"], data, missing=error["type"] == "missing")
        field_errors.setdefault(path, _message(error, path))
    first_path, first_message = next(iter(field_errors.items()))
    return InvalidRequest(first_message, param=None if first_path == "body" else first_path, field_errors=field_errors)
