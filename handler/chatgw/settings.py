"""Every knob of the running gateway, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path


class SettingsError(ValueError):
    pass


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


MAX_REQUEST_TIMEOUT_S = 900.0
"""Lambda's cap on an invocation; a request outside Lambda may not live longer either: a count of a
request in flight is dropped by its lease two generations after admission (limits.LEASE_SECONDS)."""


def _float(
    env: Mapping[str, str], name: str, default: float, minimum: float = 0.0, maximum: float | None = None
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be <= {maximum:g}, got {value:g}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    models: str | None = None
    """CHATGW_MODELS: the model catalog, a JSON file path or inline JSON; unset: `echo` alone."""
    keys_table: str | None = None
    """CHATGW_KEYS_TABLE: DynamoDB keys table; with CHATGW_USAGE_TABLE selects the DynamoDB store."""
    usage_table: str | None = None
    """CHATGW_USAGE_TABLE: DynamoDB usage table."""
    state_dir: Path = Path(".chatgw")
    """CHATGW_STATE_DIR: folder of the embedded SQLite store when no tables are set."""
    key_cache_seconds: float = 30.0
    """CHATGW_KEY_CACHE_SECONDS: how long a container reuses a key record: the revocation delay."""
    key_pepper: str = ""
    """CHATGW_KEY_PEPPER: the legacy pepper, of keys made before peppers had versions (empty by default)."""
    pepper_secret: str | None = None
    """CHATGW_PEPPER_SECRET: the Secrets Manager secret (ARN or name) holding the versioned peppers."""
    max_body_bytes: int = 6 * 1024 * 1024
    """CHATGW_MAX_BODY_BYTES: larger request bodies are refused with 413."""
    request_timeout_s: float = 300.0
    """CHATGW_REQUEST_TIMEOUT_S: deadline of one request when Lambda gives none."""
    keepalive_s: float = 15.0
    """CHATGW_KEEPALIVE_S: idle seconds before a stream sends `: keep-alive`."""
    drain_seconds: float = 30.0
    """CHATGW_DRAIN_SECONDS: after a client leaves a stream, how long the backend is still read (its
    answer dropped) for its real usage; 0 closes the backend at once and meters an estimate."""
    usage_ttl_days: int = 90
    """CHATGW_USAGE_TTL_DAYS: how long usage events are kept (aggregates are kept)."""
    log_level: str = "INFO"
    """CHATGW_LOG_LEVEL."""
    log_prompts: bool = False
    """CHATGW_LOG_PROMPTS: log request messages (off: prompts are never logged)."""
    max_images: int = 20
    """CHATGW_MAX_IMAGES: the most images one request may hold (each reserves its model's
    `max_image_tokens`)."""
    default_max_output_tokens: int = 4096
    """CHATGW_DEFAULT_MAX_OUTPUT_TOKENS: the output cap a token-limited key's request reserves (and
    is sent) when neither the request, the key nor the model's `max_output_tokens` sets one."""
    log_sample_rate: float = 1.0
    """CHATGW_LOG_SAMPLE_RATE: share (0..1) of successful requests whose `completion` line is written;
    every other line (errors, refusals) always is."""
    metrics: str = "off"
    """CHATGW_METRICS: `emf` writes CloudWatch embedded-metric-format lines (stderr), `off` does not
    (default: `emf` in Lambda, `off` elsewhere)."""
    metrics_namespace: str = "chatgw"
    """CHATGW_METRICS_NAMESPACE: the CloudWatch namespace of the metrics."""
    metrics_token: str = ""
    """CHATGW_METRICS_TOKEN: `chatgw serve --metrics` only: the bearer token `/metrics` asks for
    (unset: one generated into the state folder's `metrics-token`)."""

    @property
    def uses_dynamodb(self) -> bool:
        return bool(self.keys_table and self.usage_table)

    @property
    def pepper(self) -> bytes:
        return self.key_pepper.encode()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        keys_table = env.get("CHATGW_KEYS_TABLE") or None
        usage_table = env.get("CHATGW_USAGE_TABLE") or None
        if bool(keys_table) != bool(usage_table):
            raise SettingsError("CHATGW_KEYS_TABLE and CHATGW_USAGE_TABLE must be set together")
        level = env.get("CHATGW_LOG_LEVEL", "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"CHATGW_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        in_lambda = bool(env.get("AWS_LAMBDA_FUNCTION_NAME"))
        metrics = (env.get("CHATGW_METRICS") or ("emf" if in_lambda else "off")).lower()
        if metrics not in ("emf", "off"):
            raise SettingsError(f"CHATGW_METRICS must be emf or off, got {metrics!r}")
        sample_rate = _float(env, "CHATGW_LOG_SAMPLE_RATE", 1.0)
        if sample_rate > 1:
            raise SettingsError(f"CHATGW_LOG_SAMPLE_RATE must be from 0 to 1, got {sample_rate}")
        return cls(
            models=env.get("CHATGW_MODELS") or None,
            keys_table=keys_table,
            usage_table=usage_table,
            state_dir=Path(env.get("CHATGW_STATE_DIR") or ".chatgw"),
            key_cache_seconds=_float(env, "CHATGW_KEY_CACHE_SECONDS", 30.0),
            key_pepper=env.get("CHATGW_KEY_PEPPER", ""),
            pepper_secret=env.get("CHATGW_PEPPER_SECRET") or None,
            max_body_bytes=_int(env, "CHATGW_MAX_BODY_BYTES", 6 * 1024 * 1024, minimum=1024),
            # at most Lambda's 900 s: a request must end within the in-flight lease (limits.LEASE_SECONDS)
            request_timeout_s=_float(
                env, "CHATGW_REQUEST_TIMEOUT_S", 300.0, minimum=1.0, maximum=MAX_REQUEST_TIMEOUT_S
            ),
            keepalive_s=_float(env, "CHATGW_KEEPALIVE_S", 15.0, minimum=0.01),
            drain_seconds=_float(env, "CHATGW_DRAIN_SECONDS", 30.0),
            usage_ttl_days=_int(env, "CHATGW_USAGE_TTL_DAYS", 90, minimum=1),
            log_level=level,
            log_prompts=_bool(env, "CHATGW_LOG_PROMPTS", False),
            default_max_output_tokens=_int(env, "CHATGW_DEFAULT_MAX_OUTPUT_TOKENS", 4096, minimum=1),
            max_images=_int(env, "CHATGW_MAX_IMAGES", 20, minimum=0),
            log_sample_rate=sample_rate,
            metrics=metrics,
            metrics_namespace=env.get("CHATGW_METRICS_NAMESPACE") or "chatgw",
            metrics_token=_metrics_token(env),
        )


def _metrics_token(env: Mapping[str, str]) -> str:
    token = env.get("CHATGW_METRICS_TOKEN") or ""
    if token and len(token) < 16:
        raise SettingsError("CHATGW_METRICS_TOKEN must be at least 16 characters")
    return token


SETTING_NAMES = [f.name for f in fields(Settings)]


def private_dir(path: Path) -> Path:
    """Make a state folder and each missing parent 0700: they hold key hashes, the ledger, the
    peppers and the development key. `mkdir(mode=...)` alone is not enough: the umask narrows it
    further only, but `parents=True` makes the parents with the default mode, so each folder made
    here is created and then chmod-ed. A folder that already exists is left as its owner set it."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # made by another process in between: not ours to change
            continue
        os.chmod(folder, 0o700)
    return path
