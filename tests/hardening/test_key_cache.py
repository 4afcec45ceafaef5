"""The key cache of `Service`, on a fake clock: a key that is disabled, rotated or deleted keeps
its cached behaviour until `CHATGW_KEY_CACHE_SECONDS` (the documented revocation delay) has
passed, and not a moment longer; the new secret of a rotated key works at once (within
`SECRET_RECHECK_SECONDS`); the cache is bounded (`KEY_CACHE_SIZE`, oldest out first); a cache
time of 0 reads the store every time. The store is the real SQLite adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from chatgw.access.key_cache import KeyCache
from chatgw.access.keys import format_key, hash_secret, new_secret, parse_key
from chatgw.compose import Container
from chatgw.errors import AuthenticationFailed, PermissionDenied
from chatgw.service import SECRET_RECHECK_SECONDS, Service
from tests.support.counting_store import CountingStore
from tests.support.keys import add_key

DELAY = 30.0  # the default CHATGW_KEY_CACHE_SECONDS, as README.md documents it
JUST_BEFORE = DELAY - 0.001


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Cached:
    def __init__(self, gw: Container, **settings: Any) -> None:
        self.gw = gw
        self.clock = FakeClock()
        self.store = CountingStore(gw.store)
        config = replace(gw.settings, **settings)
        self.service = Service(self.store, gw.catalog, config, clock=self.clock)  # type: ignore[arg-type]

    def outcome(self, key: str) -> str:
        """What a request with this key gets: 200, or the 401/403 it is refused with."""
        try:
            asyncio.run(self.service.authenticate(key))
        except AuthenticationFailed:
            return "401"
        except PermissionDenied:
            return "403"
        return "200"


@pytest.fixture
def cached(make_container: Callable[..., Container]) -> Cached:
    gw = make_container()
    assert gw.settings.key_cache_seconds == DELAY
    return Cached(gw)


def record_of(cached: Cached, key: str) -> Any:
    return cached.gw.store.get_key(parse_key(key)[0])


def test_a_disabled_key_works_until_the_cache_time_and_not_after(cached: Cached) -> None:
    key = add_key(cached.gw)
    assert cached.outcome(key) == "200"
    cached.gw.store.save_key(record_of(cached, key).with_changes(enabled=False))  # `chatgw keys disable`
    cached.clock.advance(JUST_BEFORE)
    assert cached.outcome(key) == "200"  # the documented delay: still cached
    cached.clock.advance(0.001)
    assert cached.outcome(key) == "403"
    assert cached.store.reads == 2


def test_a_deleted_key_works_until_the_cache_time_and_not_after(cached: Cached) -> None:
    key = add_key(cached.gw)
    assert cached.outcome(key) == "200"
    assert cached.gw.store.delete_key(parse_key(key)[0])  # `chatgw keys delete`
    cached.clock.advance(JUST_BEFORE)
    assert cached.outcome(key) == "200"
    cached.clock.advance(0.001)
    assert cached.outcome(key) == "401"
    cached.clock.advance(DELAY)
    assert cached.outcome(key) == "401"  # and stays gone (it is not cached as a record again)


def test_a_rotated_key_old_secret_until_the_cache_time_new_secret_at_once(cached: Cached) -> None:
    old = add_key(cached.gw)
    key_id = parse_key(old)[0]
    assert cached.outcome(old) == "200"
    secret = new_secret()  # `chatgw keys rotate`
    cached.gw.store.save_key(
        record_of(cached, old).with_changes(secret_hash=hash_secret(secret, cached.gw.settings.pepper))
    )
    new = format_key(key_id, secret)
    cached.clock.advance(SECRET_RECHECK_SECONDS)
    assert cached.outcome(new) == "200"  # the new secret is not refused for the cache's 30 s
    assert cached.outcome(old) == "401"  # and once the new record is read, the old secret is done
    cached.clock.advance(DELAY)
    assert (cached.outcome(old), cached.outcome(new)) == ("401", "200")


def test_without_the_new_secret_the_old_one_works_until_the_cache_time(cached: Cached) -> None:
    old = add_key(cached.gw)
    assert cached.outcome(old) == "200"
    cached.gw.store.save_key(record_of(cached, old).with_changes(secret_hash=hash_secret(new_secret())))
    cached.clock.advance(JUST_BEFORE)
    assert cached.outcome(old) == "200"
    cached.clock.advance(0.001)
    assert cached.outcome(old) == "401"


def test_wrong_secrets_for_a_known_key_cost_at_most_one_read_a_recheck_interval(cached: Cached) -> None:
    key = add_key(cached.gw)
    key_id = parse_key(key)[0]
    assert cached.outcome(key) == "200" and cached.store.reads == 1
    wrong = format_key(key_id, new_secret())
    assert [cached.outcome(wrong) for _ in range(50)] == ["401"] * 50
    assert cached.store.reads == 1  # within the recheck interval: the cached record answers
    cached.clock.advance(SECRET_RECHECK_SECONDS)
    assert [cached.outcome(wrong) for _ in range(50)] == ["401"] * 50
    assert cached.store.reads == 2  # one re-read, then the interval starts again
    assert cached.outcome(key) == "200" and cached.store.reads == 2


def test_a_cached_key_is_read_once_per_cache_time(cached: Cached) -> None:
    key = add_key(cached.gw)
    for _ in range(3):
        assert [cached.outcome(key) for _ in range(20)] == ["200"] * 20
        cached.clock.advance(DELAY)
    assert cached.store.reads == 3


def test_the_cache_is_bounded_and_drops_its_oldest_entry(cached: Cached) -> None:
    cached.service.key_cache = KeyCache(cached.clock, DELAY, size=3)
    keys = [add_key(cached.gw) for _ in range(4)]
    assert [cached.outcome(k) for k in keys] == ["200"] * 4 and cached.store.reads == 4
    # the first key was dropped to make room for the fourth: disabling it shows at once ...
    cached.gw.store.save_key(record_of(cached, keys[0]).with_changes(enabled=False))
    cached.gw.store.save_key(record_of(cached, keys[3]).with_changes(enabled=False))
    assert cached.outcome(keys[0]) == "403" and cached.store.reads == 5
    # ... while the newest is still cached; reading the first back dropped the second
    assert cached.outcome(keys[3]) == "200" and cached.store.reads == 5
    assert cached.outcome(keys[1]) == "200" and cached.store.reads == 6


def test_a_cache_time_of_zero_reads_the_store_every_time(make_container: Callable[..., Container]) -> None:
    cached = Cached(make_container(), key_cache_seconds=0.0)
    key = add_key(cached.gw)
    assert [cached.outcome(key) for _ in range(5)] == ["200"] * 5 and cached.store.reads == 5
    cached.gw.store.save_key(record_of(cached, key).with_changes(enabled=False))
    assert cached.outcome(key) == "403"  # no delay at all
