"""API keys: their format, the hash kept at rest, the record, and the permission checks.

A key is `cgw_<key_id>_<secret>`: `key_id` is public (it names the key in logs, the CLI and
the ledger), `secret` carries 192 random bits and is never stored: only
HMAC-SHA256(pepper, secret) is.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from chatgw.errors import PERMISSION_MESSAGE, AuthenticationFailed, PermissionDenied

PREFIX = "cgw"
KEY_PATTERN = re.compile(r"^cgw_([a-z0-9]{8,32})_([A-Za-z0-9]{32,128})$")
KEY_ID_PATTERN = re.compile(r"^[a-z0-9]{8,32}$")
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_SECRET_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"  # noqa: S105


def new_key_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def new_secret() -> str:
    # 33 base62 characters carry 196 bits.
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(33))


def format_key(key_id: str, secret: str) -> str:
    return f"{PREFIX}_{key_id}_{secret}"


def parse_key(presented: str) -> tuple[str, str]:
    """Split a presented key into (key_id, secret); a malformed key is a 401 with no store read."""
    match = KEY_PATTERN.match(presented)
    if match is None:
        raise AuthenticationFailed("Invalid API key format.")
    return match.group(1), match.group(2)


def hash_secret(secret: str, pepper: bytes = b"") -> str:
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(secret: str, stored_hash: str, pepper: bytes = b"") -> bool:
    return hmac.compare_digest(hash_secret(secret, pepper), stored_hash)


def redact(presented: str) -> str:
    """What may be logged of a presented key: its public id, or nothing."""
    match = KEY_PATTERN.match(presented)
    return f"cgw_{match.group(1)}_***" if match else "***"


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_token_budget: int | None = None
    max_tokens_per_request: int | None = None
    shards: int | None = None
    """DynamoDB: counters spread over this many items, each with its share of the limits (hot keys)."""
    max_concurrent: int | None = None
    """Requests of the key in flight at once (streamed or buffered: each holds a Lambda environment)."""
    shard_epoch: int | None = None
    """DynamoDB: bumped by every change of `shards` (names the shard items: store/dynamodb/shards.py)."""

    @property
    def needs_admission(self) -> bool:
        """Whether a request must pass through the store's counters before the backend."""
        counted = (self.requests_per_minute, self.tokens_per_minute, self.monthly_token_budget, self.max_concurrent)
        return any(v is not None for v in counted)

    def to_dict(self) -> dict[str, int]:
        return {k: v for k, v in _asdict(self).items() if v is not None}


def _asdict(limits: Limits) -> dict[str, int | None]:
    return {
        "requests_per_minute": limits.requests_per_minute,
        "tokens_per_minute": limits.tokens_per_minute,
        "monthly_token_budget": limits.monthly_token_budget,
        "max_tokens_per_request": limits.max_tokens_per_request,
        "shards": limits.shards,
        "max_concurrent": limits.max_concurrent,
        "shard_epoch": limits.shard_epoch,
    }


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    name: str
    secret_hash: str
    created_at: datetime
    owner: str | None = None
    expires_at: datetime | None = None
    enabled: bool = True
    allowed_models: tuple[str, ...] = ("*",)
    allow_streaming: bool = True
    limits: Limits = field(default_factory=Limits)
    tags: dict[str, str] = field(default_factory=dict)
    pepper_version: str | None = None
    """The pepper version the secret was hashed with (access/peppers.py); None: a legacy key."""
    pepper_id: str | None = None
    """A fingerprint of that pepper (peppers.fingerprint): tells a wrong pepper from a wrong key."""

    def with_changes(self, **changes: Any) -> KeyRecord:
        return replace(self, **changes)

    def public_dict(self) -> dict[str, Any]:
        """Everything about the key except its hash: what the CLI shows."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "owner": self.owner,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "enabled": self.enabled,
            "allowed_models": list(self.allowed_models),
            "allow_streaming": self.allow_streaming,
            "limits": self.limits.to_dict(),
            "tags": dict(self.tags),
        }


def new_key(name: str, *, pepper: bytes = b"", now: datetime | None = None, **fields: Any) -> tuple[str, KeyRecord]:
    """A fresh key: the whole key string (shown once) and the record to store."""
    key_id, secret = new_key_id(), new_secret()
    record = KeyRecord(
        key_id=key_id,
        name=name,
        secret_hash=hash_secret(secret, pepper),
        created_at=now or datetime.now(UTC),
        **fields,
    )
    return format_key(key_id, secret), record


def check_usable(record: KeyRecord, now: datetime) -> None:
    if not record.enabled:
        raise PermissionDenied(f"{PERMISSION_MESSAGE} This key is disabled.")
    if record.expires_at is not None and record.expires_at <= now:
        raise PermissionDenied(f"{PERMISSION_MESSAGE} This key has expired.")


def pattern_matches(pattern: str, model: str) -> bool:
    """`*` is the only wildcard (any run of characters); every other character is literal, so that
    a model named `m[1]` or `gpt-4?` is matched by its own name (not read as a glob class)."""
    if "*" not in pattern:
        return model == pattern
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, model, flags=re.DOTALL) is not None


def model_allowed(record: KeyRecord, model: str) -> bool:
    return any(pattern_matches(pattern, model) for pattern in record.allowed_models)
