"""Errors on the Messages door's paths in Anthropic's envelope, and the key's rate-limit headers in
Anthropic's names.

    {"type": "error", "error": {"type": "...", "message": "..."}, "request_id": "..."}

with a `request-id` header. The type follows the status, as Anthropic's SDKs read it: 400
invalid_request_error, 401 authentication_error, 403 permission_error, 404 not_found_error, 413
request_too_large, 429 rate_limit_error (with `retry-after`), 500/502/503/504 api_error, and 529
overloaded_error for an upstream that says it is overloaded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.responses import JSONResponse, Response

from chatgw.errors import ChatgwError, UpstreamOverloaded

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
OVERLOADED = 529
RATE_NAMES = {
    "x-ratelimit-limit-requests": "anthropic-ratelimit-requests-limit",
    "x-ratelimit-remaining-requests": "anthropic-ratelimit-requests-remaining",
    "x-ratelimit-reset-requests": "anthropic-ratelimit-requests-reset",
    "x-ratelimit-limit-tokens": "anthropic-ratelimit-tokens-limit",
    "x-ratelimit-remaining-tokens": "anthropic-ratelimit-tokens-remaining",
    "x-ratelimit-reset-tokens": "anthropic-ratelimit-tokens-reset",
}


def status_of(error: ChatgwError) -> int:
    return OVERLOADED if isinstance(error, UpstreamOverloaded) else error.status


def error_object(error: ChatgwError) -> dict[str, str]:
    return {"type": TYPES.get(status_of(error), "api_error"), "message": error.message}


def anthropic_headers(headers: dict[str, str], request_id: str, now: datetime | None = None) -> dict[str, str]:
    """The gateway's headers with the rate-limit ones in Anthropic's names (a reset is an RFC 3339
    time, not a duration), and `request-id`."""
    out: dict[str, str] = {}
    moment = now or datetime.now(UTC)
    for name, value in headers.items():
        renamed = RATE_NAMES.get(name.lower())
        if renamed is None:
            out[name] = value
        elif renamed.endswith("-reset"):
            seconds = int(value.rstrip("s") or 0)
            at = (moment + timedelta(seconds=seconds)).replace(microsecond=0)
            out[renamed] = at.isoformat().replace("+00:00", "Z")
        else:
            out[renamed] = value
    out["request-id"] = request_id
    return out


def envelope(error: ChatgwError, request_id: str) -> dict[str, Any]:
    return {"type": "error", "error": error_object(error), "request_id": request_id}


class AnthropicErrors:
    """The `ErrorStyle` of the Messages door's paths (api/http.py)."""

    def response(self, exc: ChatgwError, request_id: str, headers: dict[str, str]) -> Response:
        return JSONResponse(
            envelope(exc, request_id),
            status_code=status_of(exc),
            headers=anthropic_headers({**exc.headers, **headers}, request_id),
        )


ANTHROPIC_ERRORS = AnthropicErrors()
