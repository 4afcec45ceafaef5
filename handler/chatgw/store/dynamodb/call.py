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

Within the deadline of the call (store/deadline.py), when one is set: no attempt is started with
less than `min_attempt_s` left, no backoff sleep is taken that would leave less than that, and each
attempt's read timeout is cut to what is left (`bound_read_timeouts`, botocore's per-request
`read_timeout`): giving up early is `StoreUnavailable` too.
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

from chatgw.errors import StoreUnavailable
from chatgw.store import deadline

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


def _jitter(top: float) -> float:
    return random.uniform(0, top)


@dataclass
class RetryPolicy:
    attempts: int = 4
    """Tries in all (the first included)."""
    base_s: float = 0.025
    cap_s: float = 0.4
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    """The deadline's clock (store/deadline.py holds a `time.monotonic()` time)."""
    jitter: Callable[[float], float] = _jitter
    """A backoff from its ceiling (full jitter: uniform from 0)."""
    min_attempt_s: float = 0.05
    """No attempt is started with less time than this left before the deadline; also the shortest
    read timeout an attempt is given."""

    def delay(self, attempt: int) -> float:
        return self.jitter(min(self.cap_s, self.base_s * 2**attempt))

    def left(self) -> float | None:
        """Seconds left before the deadline of this call; None: no deadline set."""
        at = deadline.current()
        return None if at is None else at - self.clock()

    def room_for(self, wait: float) -> bool:
        """Is there time to wait `wait` seconds and then make an attempt?"""
        left = self.left()
        return left is None or wait + self.min_attempt_s <= left


def maybe_applied(exc: BaseException) -> bool:
    """Did the write that failed with `exc` perhaps reach the store (a timeout or a connection lost
    after sending, a 5xx)? Throttling, conflicts, connections never opened: surely not applied."""
    cause = exc.__cause__
    if isinstance(cause, EndpointConnectionError | ConnectTimeoutError):
        return False
    if isinstance(cause, ClientError):
        return int(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500
    return isinstance(cause, BotoCoreError)


def past_deadline(failure: BaseException | None) -> StoreUnavailable:
    cause = f" ({type(failure).__name__})" if failure is not None else ""
    return StoreUnavailable(f"The key store did not answer within the request's deadline{cause}.")


def call(policy: RetryPolicy, fn: Callable[..., T], *, ambiguous_ok: bool = True, **kwargs: Any) -> T:
    failure: Exception | None = None
    for attempt in range(policy.attempts):
        if not policy.room_for(0.0):
            raise past_deadline(failure) from failure
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
            failure = exc
        except (EndpointConnectionError, ConnectTimeoutError) as exc:  # never reached the store
            if last:
                raise unavailable(exc) from exc
            failure = exc
        except BotoCoreError as exc:
            if not ambiguous_ok:
                raise Unsettled(f"The key store did not confirm a write ({type(exc).__name__}).") from exc
            if last:
                raise unavailable(exc) from exc
            failure = exc
        wait = policy.delay(attempt)
        if not policy.room_for(wait):
            raise past_deadline(failure) from failure
        policy.sleep(wait)
    raise AssertionError("unreachable")


def bound_read_timeouts(client: Any, policy: RetryPolicy) -> None:
    """Cut each request's read timeout to the time left before the deadline (at least
    `min_attempt_s`), through botocore's per-request `read_timeout` (botocore >= 1.44; older ones
    ignore it and keep the client's). A contextvar read per call, where a client per timeout
    class would cost about 4 ms and a connection pool each (docs/store.md "Deadlines")."""
    configured = float(client.meta.config.read_timeout or 0) or None

    def bound(context: dict[str, Any], **_: Any) -> None:
        left = policy.left()
        if left is not None and (configured is None or left < configured):
            context["read_timeout"] = max(policy.min_attempt_s, left)

    client.meta.events.register("before-call.dynamodb", bound, unique_id=f"chatgw-deadline-{id(policy)}")
