"""The OpenAPI document, corrected to what the app really does: the chat body is `ChatRequest`, a
chat answer is `chat.completion` JSON or (with `stream: true`) an SSE stream of
`chat.completion.chunk` events ending in `[DONE]`, every error is the one envelope (never
FastAPI's 422 `{"detail": ...}`), and keys go in headers. Plain data: `http` builds FastAPI's
document and hands it here."""

from __future__ import annotations

from typing import Any

from chatgw.api.openai_chat.wire import ChatRequest

CHAT_PATHS = ("/v2/llms/chat/completions", "/v1/chat/completions")
PUBLIC_PATHS = {"/health"}

ERROR_ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "messages", "field_errors", "request_id"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        },
        "messages": {"type": "array", "items": {"type": "string"}},
        "field_errors": {"type": "object", "additionalProperties": {"type": "string"}},
        "request_id": {"type": "string"},
    },
}

_USAGE: dict[str, Any] = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        "prompt_tokens": {"type": "integer", "minimum": 0},
        "completion_tokens": {"type": "integer", "minimum": 0},
        "total_tokens": {"type": "integer", "minimum": 0},
    },
}
_FINISH_REASON: dict[str, Any] = {"type": "string"}

CHAT_COMPLETION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": {"type": "integer", "minimum": 0},
                    "message": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"const": "assistant"},
                            "content": {"type": ["string", "null"]},
                        },
                    },
                    "finish_reason": _FINISH_REASON,
                },
            },
        },
        "usage": {"$ref": "#/components/schemas/Usage"},
    },
}

CHAT_COMPLETION_CHUNK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion.chunk"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "delta", "finish_reason"],
                "properties": {
                    "index": {"type": "integer", "minimum": 0},
                    "delta": {"type": "object"},
                    "finish_reason": {"anyOf": [_FINISH_REASON, {"type": "null"}]},
                },
            },
        },
        "usage": {"$ref": "#/components/schemas/Usage"},
    },
}

STREAM_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": ERROR_ENVELOPE_SCHEMA["properties"]["error"]},
}

# One server-sent event of a chat stream (`itemSchema`, as OpenAPI 3.2 and schemathesis read it):
# its `data` is a JSON chunk, an in-band error after the stream started, or the final `[DONE]`.
CHAT_STREAM_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"const": "message"},
        "data": {
            "anyOf": [
                {"const": "[DONE]"},
                {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/ChatCompletionChunk"},
                            {"$ref": "#/components/schemas/StreamError"},
                        ]
                    },
                },
            ]
        },
    },
}

CHAT_OK_RESPONSE: dict[str, Any] = {
    "description": "The answer: a `chat.completion`, or with `stream: true` server-sent events, one "
    "`chat.completion.chunk` each, ending with `data: [DONE]` (or an in-band error and no `[DONE]`).",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
        "text/event-stream": {"itemSchema": CHAT_STREAM_EVENT_SCHEMA},
    },
}


def correct(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's generated document, made true to the app (in place; returned for convenience)."""
    chat_schema = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(chat_schema.pop("$defs", {}))
    schemas["ChatRequest"] = chat_schema
    _describe_validators(schemas)
    schemas["ErrorEnvelope"] = ERROR_ENVELOPE_SCHEMA
    schemas["Usage"] = _USAGE
    schemas["ChatCompletion"] = CHAT_COMPLETION_SCHEMA
    schemas["ChatCompletionChunk"] = CHAT_COMPLETION_CHUNK_SCHEMA
    schemas["StreamError"] = STREAM_ERROR_SCHEMA
    components["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        "Bearer": {"type": "http", "scheme": "bearer"},
    }
    error = {
        "description": "The error envelope",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    }
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["default"] = error
            if path in CHAT_PATHS:
                responses["200"] = CHAT_OK_RESPONSE
            if path not in PUBLIC_PATHS:
                operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
    return schema


def _non_null(name: str, **extra: Any) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"not": {"type": "null"}, **extra}}}


def _describe_validators(schemas: dict[str, Any]) -> None:
    """What the wire models check in code, said in the schema too, so that schema-valid is valid."""
    assistant = schemas.get("AssistantMessage")
    if assistant is not None:
        assistant["anyOf"] = [
            _non_null("content"),
            _non_null("tool_calls", minItems=1),
            _non_null("refusal"),
            _non_null("audio"),
        ]
    metadata = schemas.get("ChatRequest", {}).get("properties", {}).get("metadata", {})
    for option in metadata.get("anyOf", []):
        if option.get("type") == "object":
            option.update(maxProperties=16, propertyNames={"maxLength": 64})
