from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chatgw.access.keys import (
    KEY_PATTERN,
    check_usable,
    hash_secret,
    model_allowed,
    new_key,
    parse_key,
    redact,
    secret_matches,
)
from chatgw.errors import AuthenticationFailed, PermissionDenied


def test_new_key_round_trips_and_stores_only_a_hash() -> None:
    key, record = new_key("app", pepper=b"pepper")
    assert KEY_PATTERN.match(key)
    key_id, secret = parse_key(key)
    assert key_id == record.key_id
    assert secret not in record.secret_hash and secret not in str(record.public_dict())
    assert secret_matches(secret, record.secret_hash, b"pepper")
    assert not secret_matches(secret, record.secret_hash, b"other pepper")
    assert not secret_matches(secret + "x", record.secret_hash, b"pepper")
    assert len(secret) * 5.95 >= 128  # base62 characters carry 5.95 bits each


def test_keys_are_unique() -> None:
    keys = {new_key("k")[0] for _ in range(200)}
    assert len(keys) == 200


@pytest.mark.parametrize(
    "presented",
    ["", "sk-abc", "cgw_", "cgw_abc_def", "cgw_ABCDEFGH_" + "a" * 40, "cgw_abcdefgh_" + "a" * 20, "x" * 5000],
)
def test_malformed_keys_are_refused(presented: str) -> None:
    with pytest.raises(AuthenticationFailed):
        parse_key(presented)


def test_redact_never_shows_the_secret() -> None:
    key, record = new_key("app")
    assert redact(key) == f"cgw_{record.key_id}_***"
    assert redact("garbage-secret") == "***"


def test_hash_is_hmac_sha256_hex() -> None:
    assert len(hash_secret("s")) == 64
    assert hash_secret("s", b"p") != hash_secret("s")


def test_disabled_and_expired_keys_are_refused() -> None:
    now = datetime.now(UTC)
    _, record = new_key("app")
    check_usable(record, now)
    with pytest.raises(PermissionDenied, match="disabled"):
        check_usable(record.with_changes(enabled=False), now)
    with pytest.raises(PermissionDenied, match="expired"):
        check_usable(record.with_changes(expires_at=now - timedelta(seconds=1)), now)
    check_usable(record.with_changes(expires_at=now + timedelta(days=1)), now)


def test_model_patterns() -> None:
    _, record = new_key("app", allowed_models=("gpt-4o*", "echo"))
    assert model_allowed(record, "echo")
    assert model_allowed(record, "gpt-4o-mini")
    assert not model_allowed(record, "gpt-5")
    assert not model_allowed(record, "ECHO")
