"""Where an upstream's API key comes from: an environment variable, a Secrets Manager secret or an
SSM parameter. Read on first use (never at import or catalog build), then cached for the container."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from chatgw.backends.base import BackendDeps
from chatgw.errors import UpstreamError


class KeySource:
    def __init__(self, model: str, kind: str, name: str, deps: BackendDeps) -> None:
        self.model = model
        self.kind = kind  # "env", "secret" or "parameter"
        self.name = name
        self._deps = deps
        self._value: str | None = None
        self._lock = asyncio.Lock()
        deps.forget_on_restore(self.forget)

    def forget(self) -> None:
        """Read the key again on next use (after a SnapStart restore: the key may have rotated since)."""
        self._value = None

    @property
    def cached(self) -> str | None:
        """The key, if it was read already (to scrub it from upstream error messages)."""
        return self._value

    async def get(self) -> str:
        if self._value is None:
            async with self._lock:
                if self._value is None:
                    self._value = await self._read()
        return self._value

    async def _read(self) -> str:
        if self.kind == "env":
            value = os.environ.get(self.name, "")
            if not value:
                raise self._fail(f"the environment variable {self.name} is not set")
            return value
        try:
            value = await asyncio.to_thread(self._read_aws)
        except UpstreamError:
            raise
        except Exception as exc:  # botocore's errors: the code only, never a value
            code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
            raise self._fail(f"reading {self.name} failed ({code})") from None
        if not value:
            raise self._fail(f"{self.name} is empty")
        return value

    def _read_aws(self) -> str:
        region = _region_of(self.name)
        if self.kind == "secret":
            client: Any = self._deps.aws_client("secretsmanager", region)
            text = str(client.get_secret_value(SecretId=self.name).get("SecretString") or "")
            return _from_secret_text(text)
        client = self._deps.aws_client("ssm", region)
        return str(client.get_parameter(Name=self.name, WithDecryption=True)["Parameter"]["Value"])

    def _fail(self, problem: str) -> UpstreamError:
        return UpstreamError(f"The gateway cannot read the upstream key of model '{self.model}': {problem}.")


def _region_of(name: str) -> str | None:
    """The region of an ARN (`arn:aws:secretsmanager:REGION:...`): a secret may live in another region."""
    parts = name.split(":")
    return parts[3] if name.startswith("arn:") and len(parts) > 4 and parts[3] else None


def _from_secret_text(text: str) -> str:
    """A plain-text secret, or a JSON object holding it as `api_key` (or as its only value)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            return stripped
        if isinstance(data, dict):
            if isinstance(data.get("api_key"), str):
                return str(data["api_key"])
            values = [v for v in data.values() if isinstance(v, str)]
            if len(values) == 1:
                return values[0]
            return ""
    return stripped
