"""The handler context object of the managed Python runtime (`context` of a Lambda handler), for
the streaming runtime's `scope["aws.context"]` and for events run on this machine."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatgw.aws_lambda.runtime_api import Invocation

LOCAL_FUNCTION = "chatgw-local"


@dataclass(slots=True)
class LambdaContext:
    """What Lambda's own context object holds; the function's names come from its environment."""

    aws_request_id: str
    deadline_ms: int
    """When Lambda stops the invocation, in milliseconds since the epoch."""
    invoked_function_arn: str
    function_name: str = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""))
    function_version: str = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", ""))
    memory_limit_in_mb: int = field(default_factory=lambda: int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or 0))
    log_group_name: str = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", ""))
    log_stream_name: str = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", ""))
    identity: Any = None
    client_context: Any = None

    @classmethod
    def of(cls, invocation: Invocation) -> LambdaContext:
        """The context of an invocation the Runtime API handed out."""
        return cls(invocation.request_id, invocation.deadline_ms, invocation.invoked_function_arn)

    @classmethod
    def local(cls, timeout_s: float = 900.0) -> LambdaContext:
        """A context for an event run on this machine (`chatgw invoke`, tests): Lambda's longest timeout."""
        return cls(
            aws_request_id=str(uuid.uuid4()),
            deadline_ms=int((time.time() + timeout_s) * 1000),
            invoked_function_arn=f"arn:aws:lambda:us-east-1:000000000000:function:{LOCAL_FUNCTION}",
            function_name=LOCAL_FUNCTION,
            function_version="$LATEST",
            memory_limit_in_mb=1024,
            log_group_name=f"/aws/lambda/{LOCAL_FUNCTION}",
            log_stream_name="local",
        )

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))
