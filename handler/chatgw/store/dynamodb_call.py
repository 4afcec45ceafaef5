"""One DynamoDB request with the store's own retries (botocore's are off: `make_client` builds the
client with one attempt, so that the two never multiply).

What is retried, with jittered exponential backoff and a bounded number of attempts:
- answers DynamoDB guarantees were not applied: throttling (ThrottlingException,
  ProvisionedThroughputExceededException, RequestLimitExceeded) and TransactionConflictException;
- a connection that could not be opened;
- when the write is idempotent (`ambiguous_ok`, the default): 5xx answers, timeouts and connections
  lost after the request was sent, whose effect is unknown.
Everything else, and the last failure, is `StoreUnavailable` (a 503: nothing passes unchecked).
A failed condition is `Refused` with the item as it was (`ReturnValuesOnConditionCheckFailure`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)

from ..errors import StoreUnavailable

T = TypeVar("T")

NOT_APPLIED = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TransactionConflictException",
        "TransactionInProgressException",
    }
)
"""Error codes DynamoDB answers without applying the write: always safe to send again."""


class Refused(Exception):
    """A conditional write failed; `item` is the item as it was (ALL_OLD), or empty."""

    def __init__(self, item: Mapping[str, Any]) -> None:
        super().__init__("condition failed")
        self.item = item


class Unsettled(StoreUnavailable):
    """The write may or may not have been applied (timeout, connection lost, 5xx) and it was not
    safe to send again."""


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def unavailable(exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"The key store is unavailable ({type(exc).__name__}).")


@dataclass
class RetryPolicy:
    attempts: int = 4
    """Tries in all (the first included)."""
    base_s: float = 0.025
    cap_s: float = 0.4
    sleep: Callable[[float], None] = time.sleep

    def backoff(self, attempt: int) -> None:
        self.sleep(random.uniform(0, min(self.cap_s, self.base_s * 2**attempt)))


def call(policy: RetryPolicy, fn: Callable[..., T], *, ambiguous_ok: bool = True, **kwargs: Any) -> T:
    for attempt in range(policy.attempts):
        last = attempt + 1 == policy.attempts
        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = error_code(exc)
            if code == "ConditionalCheckFailedException":
                item: Mapping[str, Any] = exc.response.get("Item") or {}  # type: ignore[assignment]
                raise Refused(item) from None
            if code == "TransactionCanceledException":
                raise
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            retry = code in NOT_APPLIED or (status >= 500 and ambiguous_ok)
            if not retry and status >= 500:
                raise Unsettled(f"The key store did not confirm a write ({code or status}).") from exc
            if last or not retry:
                raise unavailable(exc) from exc
        except (EndpointConnectionError, ConnectTimeoutError) as exc:  # never reached the store
            if last:
                raise unavailable(exc) from exc
        except BotoCoreError as exc:
            if not ambiguous_ok:
                raise Unsettled(f"The key store did not confirm a write ({type(exc).__name__}).") from exc
            if last:
                raise unavailable(exc) from exc
        policy.backoff(attempt)
    raise AssertionError("unreachable")
