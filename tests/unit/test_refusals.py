"""The container's refusal cache: a refusal is repeated until its minute window ends, only for the
same limits, and (for tokens and budget) only for a request needing at least as much."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chatgw.keys import Limits
from chatgw.limits import Admission
from chatgw.refusals import RefusalCache

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
