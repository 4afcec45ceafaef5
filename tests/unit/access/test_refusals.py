"""The container's refusal cache: a refusal is repeated until its minute window ends, only for the
same limits, and (for tokens and budget) only for a request needing at least as much."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chatgw.access.keys import Limits
from chatgw.access.limits import Admission, decide, raise_if_refused
from chatgw.access.refusals import RefusalCache
from chatgw.errors import RateLimited

START = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
RPM = Limits(requests_per_minute=2)
TPM = Limits(tokens_per_minute=100)


def test_a_refusal_holds_until_the_window_ends() -> None:
    cache = RefusalCache()
    refused = Admission("requests", requests_used=2)
    cache.remember("k1", RPM, refused, START + timedelta(seconds=5))
    assert cache.get("k1", RPM, START + timedelta(seconds=5)) is refused
    assert cache.get("k1", RPM, START + timedelta(seconds=59)) is refused
    assert cache.get("k2", RPM, START + timedelta(seconds=59)) is None
    assert cache.get("k1", RPM, START + timedelta(seconds=60)) is None
    assert len(cache) == 0  # the stale entry is dropped


def test_admissions_are_not_remembered() -> None:
    cache = RefusalCache()
    cache.remember("k1", RPM, Admission(None, requests_used=1), START)
    assert cache.get("k1", RPM, START) is None and len(cache) == 0


def test_new_limits_ask_the_store_again() -> None:
    cache = RefusalCache()
    cache.remember("k1", RPM, Admission("requests", requests_used=2), START)
    assert cache.get("k1", Limits(requests_per_minute=10), START) is None


def test_a_token_refusal_is_repeated_only_for_a_request_as_large() -> None:
    cache = RefusalCache()
    refused = Admission("tokens", tokens_used=90)
    cache.remember("k1", TPM, refused, START, need=50)
    assert cache.get("k1", TPM, START, need=50) is refused
    assert cache.get("k1", TPM, START, need=80) is refused
    assert cache.get("k1", TPM, START, need=5) is None  # a smaller one may still fit
    cache.remember("k2", RPM, Admission("requests", requests_used=2), START, need=50)
    assert cache.get("k2", RPM, START, need=1) is not None  # a request count does not depend on size


def test_the_cache_is_bounded() -> None:
    cache = RefusalCache(max_keys=3)
    for i in range(5):
        cache.remember(f"k{i}", RPM, Admission("requests"), START)
    assert len(cache) == 3
    assert cache.get("k0", RPM, START) is None and cache.get("k4", RPM, START) is not None


CONCURRENT = Limits(max_concurrent=2)


def test_a_refusal_for_requests_in_flight_is_repeated_for_one_second_only() -> None:
    """A slot frees as soon as one of the key's requests ends (in any container): not a minute."""
    cache = RefusalCache()
    refused = Admission("concurrent", in_flight=2)
    cache.remember("k1", CONCURRENT, refused, START + timedelta(seconds=5, milliseconds=200))
    assert cache.get("k1", CONCURRENT, START + timedelta(seconds=5, milliseconds=900), need=1) is refused
    assert cache.get("k1", CONCURRENT, START + timedelta(seconds=6)) is None
    assert len(cache) == 0


def test_requests_in_flight_are_named_last_with_a_one_second_retry() -> None:
    both = Limits(requests_per_minute=1, max_concurrent=1)
    assert decide(both, requests=1, window_tokens=0, month_tokens=0, reserve=0, in_flight=1) == "requests"
    assert decide(both, requests=0, window_tokens=0, month_tokens=0, reserve=0, in_flight=1) == "concurrent"
    assert decide(both, requests=0, window_tokens=0, month_tokens=0, reserve=0, in_flight=0) is None
    with pytest.raises(RateLimited) as refused:
        raise_if_refused(Admission("concurrent", in_flight=2), rpm=None, tpm=None, now=START, concurrent=2)
    error = refused.value
    assert (error.status, error.type, error.code, error.cause) == (
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
        "concurrent",
    )
    assert error.headers["retry-after"] == "1"
    assert error.message.startswith("Too many requests in flight for this key: 2 at once.")
