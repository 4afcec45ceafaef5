"""Plain-dict forms of store records, shared by the adapters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chatgw.access.keys import KeyRecord, Limits
from chatgw.store.base import DEFAULT_DOOR, UsageEvent


def key_to_dict(record: KeyRecord) -> dict[str, Any]:
    data = {**record.public_dict(), "secret_hash": record.secret_hash}
    if record.pepper_version is not None:
        data["pepper_version"] = record.pepper_version
    if record.pepper_id is not None:
        data["pepper_id"] = record.pepper_id
    return data


def key_from_dict(data: dict[str, Any]) -> KeyRecord:
    limits = {k: int(v) for k, v in (data.get("limits") or {}).items()}
    expires = data.get("expires_at")
    return KeyRecord(
        key_id=str(data["key_id"]),
        name=str(data["name"]),
        secret_hash=str(data["secret_hash"]),
        created_at=datetime.fromisoformat(str(data["created_at"])),
        owner=data.get("owner"),
        expires_at=datetime.fromisoformat(str(expires)) if expires else None,
        enabled=bool(data.get("enabled", True)),
        allowed_models=tuple(str(m) for m in data.get("allowed_models", ["*"])),
        allow_streaming=bool(data.get("allow_streaming", True)),
        limits=Limits(**limits),
        tags={str(k): str(v) for k, v in (data.get("tags") or {}).items()},
        pepper_version=str(data["pepper_version"]) if data.get("pepper_version") else None,
        pepper_id=str(data["pepper_id"]) if data.get("pepper_id") else None,
    )


def event_from_dict(data: dict[str, Any]) -> UsageEvent:
    ttft = data.get("ttft_ms")
    cost = data.get("cost")
    return UsageEvent(
        key_id=str(data["key_id"]),
        request_id=str(data["request_id"]),
        at=datetime.fromisoformat(str(data["at"])),
        model=str(data["model"]),
        backend=str(data["backend"]),
        prompt_tokens=int(data["prompt_tokens"]),
        completion_tokens=int(data["completion_tokens"]),
        status=data["status"],
        streamed=bool(data["streamed"]),
        latency_ms=int(data["latency_ms"]),
        ttft_ms=int(ttft) if ttft is not None else None,
        estimated=bool(data.get("estimated", False)),
        served_model=str(data.get("served_model") or ""),
        cached_tokens=int(data.get("cached_tokens") or 0),
        cache_write_tokens=int(data.get("cache_write_tokens") or 0),
        reasoning_tokens=int(data.get("reasoning_tokens") or 0),
        door=str(data.get("door") or DEFAULT_DOOR),
        cost=float(cost) if cost is not None else None,
        reserved_tokens=int(data.get("reserved_tokens") or 0),
        pending=tuple(str(p) for p in data.get("pending") or ()),
    )
