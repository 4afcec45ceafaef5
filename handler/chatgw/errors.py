"""The exception tree of chatgw. Every error a client can see is one of these.

    ChatgwError                      status  type / code
    ├── InvalidRequest               400     invalid_request_error / invalid_value
    │   ├── UnknownParameter         400     invalid_request_error / unknown_parameter
    │   ├── UnsupportedParameter     400     invalid_request_error / unsupported_parameter
    │   └── UpstreamRejected         400     invalid_request_error / upstream_rejected
    ├── AuthenticationFailed         401     authentication_error / invalid_api_key
    ├── PermissionDenied             403     permission_error / permission_denied
    ├── NotFound                     404     invalid_request_error / not_found
    │   └── ModelNotFound            404     invalid_request_error / model_not_found
    ├── MethodNotAllowed             405     invalid_request_error / method_not_allowed
    ├── RequestTooLarge              413     invalid_request_error / request_too_large
    ├── RateLimited                  429     rate_limit_error / rate_limit_exceeded | insufficient_quota
    │   └── UpstreamRateLimited      429     rate_limit_error / upstream_rate_limited
    ├── InternalError                500     api_error / internal_error
    ├── UpstreamError                502     api_error / upstream_error
    │   └── UpstreamOverloaded       502     api_error / upstream_overloaded (529 on Anthropic's door)
    ├── StoreUnavailable             503     api_error / store_unavailable
    └── UpstreamTimeout              504     api_error / upstream_timeout

Backends and stores raise these; only `api/app.py` turns them into responses.
"""

from __future__ import annotations

from typing import Any

PERMISSION_MESSAGE = "Permissions do not allow creating a chat completion."


class ChatgwError(Exception):
    status = 500
    type = "api_error"
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        field_errors: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        cause: str | None = None,
        unsent: bool = False,
    ) -> None:
        super().__init__(message)
        self.unsent = unsent
        """An upstream failure known to come before the request reached the upstream (no connection)."""
        self.message = message
        self.param = param
        # What went wrong, for logs and metrics only (never sent): an upstream failure's class
        # (`connect`, `timeout`, `5xx`, `malformed`, ...) or the limit that refused a request.
        self.cause = cause
        if code is not None:
            self.code = code
        self.field_errors = field_errors or ({param: message} if param else {})
        self.headers = headers or {}

    def envelope(self, request_id: str) -> dict[str, Any]:
        """The one error body of the spec: OpenAI's `error` plus the seed's fields."""
        return {
            "error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code},
            "messages": [self.message],
            "field_errors": self.field_errors,
            "request_id": request_id,
        }


class InvalidRequest(ChatgwError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class UnknownParameter(InvalidRequest):
    code = "unknown_parameter"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class UpstreamRejected(InvalidRequest):
    code = "upstream_rejected"


class AuthenticationFailed(ChatgwError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ChatgwError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(ChatgwError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(ChatgwError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTooLarge(ChatgwError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(ChatgwError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None, **kw: Any) -> None:
        super().__init__(message, code=code, **kw)
        self.retry_after = max(1, int(retry_after))
        self.headers.setdefault("retry-after", str(self.retry_after))


class UpstreamRateLimited(RateLimited):
    code = "upstream_rate_limited"


class InternalError(ChatgwError):
    pass


class UpstreamError(ChatgwError):
    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamOverloaded(UpstreamError):
    """The upstream said it is overloaded (Anthropic's 529): retryable, and a 529 where the door's
    dialect has that status."""

    code = "upstream_overloaded"


class StoreUnavailable(ChatgwError):
    status = 503
    type = "api_error"
    code = "store_unavailable"


class UpstreamTimeout(ChatgwError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"


RETRYABLE_UPSTREAM = (UpstreamError, UpstreamTimeout, UpstreamRateLimited)
"""Errors after which a fallback model may be tried (only before the first byte)."""
