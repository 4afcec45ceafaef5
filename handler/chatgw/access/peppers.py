"""Key peppers: the server-side secrets mixed into key hashes, versioned so that they rotate.

Where they live (one reader, used by compose at container start and by the CLI):
- in AWS, a Secrets Manager secret the stack generates (`CHATGW_PEPPER_SECRET` names its ARN), a JSON
  object `{"current": "v1", "v1": "...", "v2": "..."}` (flat, so that CloudFormation's
  GenerateSecretString can write the first version);
- locally, `pepper.json` in the state folder, same shape, mode 0600, generated on first use.
A key record names the version it was hashed with; a record without one is a legacy key, hashed with
`CHATGW_KEY_PEPPER` (empty by default), as every key was before versions existed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypedDict

from chatgw.settings import Settings, SettingsError, private_dir

LEGACY = "legacy"
"""How a key without a pepper version is shown (`chatgw pepper status`)."""
PEPPER_FILE = "pepper.json"
LOCK_FILE = "pepper.lock"
CURRENT = "current"
_VERSION = re.compile(r"^v(\d+)$")


class PepperError(SettingsError):
    """The peppers cannot be read or make no sense: the gateway does not start, the CLI stops."""


class Stamp(TypedDict):
    """A key record's pepper fields."""

    pepper_version: str | None
    pepper_id: str | None


@dataclass(frozen=True, slots=True)
class Peppers:
    current: str | None
    """The version new and rotated keys use; None: legacy (no versioned pepper store)."""
    versions: Mapping[str, bytes] = field(default_factory=dict)
    legacy: bytes = b""
    legacy_stored: bool = False
    """The legacy pepper came from the store itself (an upgraded stack's `legacy` entry): keep it there."""

    def get(self, version: str | None) -> bytes | None:
        """The pepper of a key's version, None if this set does not know it."""
        return self.legacy if version is None else self.versions.get(version)

    def for_new_key(self) -> tuple[bytes, Stamp]:
        """The pepper to hash a new or rotated key with, and the fields that name it in the record."""
        if self.current is None:
            return self.legacy, {"pepper_version": None, "pepper_id": None}
        pepper = self.versions[self.current]
        return pepper, {"pepper_version": self.current, "pepper_id": fingerprint(pepper)}


def fingerprint(pepper: bytes) -> str:
    """Names a (generated, 256-bit) pepper without revealing it: HMAC of a constant, 12 hex digits."""
    return hmac.new(pepper, b"chatgw pepper fingerprint", hashlib.sha256).hexdigest()[:12]


def parse(text: str, legacy: bytes, where: str) -> Peppers:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise PepperError(f"{where}: not JSON (expected {{'current': 'v1', 'v1': '...'}})") from None
    if not isinstance(data, dict) or not isinstance(data.get(CURRENT), str):
        raise PepperError(f"{where}: expected a JSON object with 'current' naming a version")
    stored = isinstance(data.get(LEGACY), str)
    if stored:  # an upgraded stack's old KeyPepper, moved into the secret
        legacy = data[LEGACY].encode()
    versions = {k: v.encode() for k, v in data.items() if k not in (CURRENT, LEGACY) and isinstance(v, str)}
    if bad := [k for k in versions if not _VERSION.match(k)]:
        raise PepperError(f"{where}: version names must look like v1, v2, ...: {', '.join(sorted(bad))}")
    if data[CURRENT] not in versions:
        raise PepperError(f"{where}: 'current' is {data[CURRENT]!r}, which the secret does not hold")
    if short := [k for k, v in versions.items() if len(v) < 16]:
        raise PepperError(f"{where}: pepper {', '.join(sorted(short))} is shorter than 16 characters")
    return Peppers(str(data[CURRENT]), versions, legacy, stored)


def render(peppers: Peppers) -> str:
    data = {CURRENT: peppers.current, **{k: v.decode() for k, v in sorted(peppers.versions.items())}}
    if peppers.legacy_stored:
        data[LEGACY] = peppers.legacy.decode()
    return json.dumps(data)


def rotated(peppers: Peppers) -> Peppers:
    """A new version, made current; the old ones stay so that their keys keep working."""
    numbers = [int(m.group(1)) for v in peppers.versions if (m := _VERSION.match(v))]
    version = f"v{max(numbers, default=0) + 1}"
    return replace(peppers, current=version, versions={**peppers.versions, version: new_pepper().encode()})


def new_pepper() -> str:
    return secrets.token_urlsafe(32)


# sources ----------------------------------------------------------------------------------------


class Source(Protocol):
    label: str

    def load(self) -> Peppers: ...

    def save(self, peppers: Peppers) -> None: ...

    def rotate(self) -> Peppers:
        """Add a version and make it current, never losing one another rotation added meanwhile."""
        ...


class LegacySource:
    """No versioned store: every key is hashed with CHATGW_KEY_PEPPER (or nothing)."""

    label = "CHATGW_KEY_PEPPER (legacy, unversioned)"

    def __init__(self, legacy: bytes) -> None:
        self.legacy = legacy

    def load(self) -> Peppers:
        return Peppers(None, {}, self.legacy)

    def save(self, peppers: Peppers) -> None:
        raise PepperError(
            "no versioned pepper store: name one with --pepper-secret ARN or --stack NAME (or a --state-dir)"
        )

    def rotate(self) -> Peppers:
        self.save(self.load())  # raises: nowhere to keep a new version
        return self.load()


class FileSource:
    """`pepper.json` in a state folder, mode 0600; created on first load only when `create`."""

    def __init__(self, state_dir: Path, legacy: bytes, *, create: bool) -> None:
        self.path = state_dir / PEPPER_FILE
        self.label = str(self.path)
        self.legacy = legacy
        self.create = create

    def load(self) -> Peppers:
        try:
            return parse(self.path.read_text(), self.legacy, self.label)
        except FileNotFoundError:
            if not self.create:
                return Peppers(None, {}, self.legacy)
        except OSError as exc:
            raise PepperError(f"cannot read {self.path}: {exc.strerror}") from None
        peppers = rotated(Peppers(None, {}, self.legacy))
        self.save(peppers, exclusive=True)
        return self.load()  # another process may have won the race: read what is there

    def rotate(self) -> Peppers:
        """Read, add and write under an exclusive lock on `pepper.lock` (flock: released by the kernel
        when the process dies), so that two rotations at the same instant each add their version."""
        try:
            private_dir(self.path.parent)
            fd = os.open(self.path.with_name(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PepperError(f"cannot lock {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            new = rotated(self.load())
            self.save(new)
            return new
        finally:
            os.close(fd)  # closing releases the lock

    def save(self, peppers: Peppers, *, exclusive: bool = False) -> None:
        tmp = self.path.with_name(f".{PEPPER_FILE}.{os.getpid()}.{threading.get_ident()}")
        try:
            private_dir(self.path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(render(peppers) + "\n")
            if exclusive:
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, self.path)
                tmp.unlink()
            else:
                os.replace(tmp, self.path)
        except OSError as exc:
            raise PepperError(f"cannot write {self.path}: {exc.strerror}") from None


class SecretSource:
    """A Secrets Manager secret (name or ARN), read with the caller's credentials."""

    def __init__(self, secret_id: str, legacy: bytes, client: Callable[[], Any] | None = None) -> None:
        self.secret_id = secret_id
        self.label = f"secret {secret_id}"
        self.legacy = legacy
        self._client = client or (lambda: _secrets_client(secret_id))

    def load(self) -> Peppers:
        try:
            # AWSCURRENT named, not implied: a rotation moves that stage (moto's default does not follow it)
            read = self._client().get_secret_value(SecretId=self.secret_id, VersionStage=AWS_CURRENT)
            text = read.get("SecretString")
        except Exception as exc:  # botocore's errors, reduced to their code: never a value
            raise PepperError(f"cannot read the pepper {self.label}: {_aws_problem(exc)}") from None
        return parse(str(text or ""), self.legacy, self.label)

    def save(self, peppers: Peppers) -> None:
        try:
            self._client().put_secret_value(SecretId=self.secret_id, SecretString=render(peppers))
        except Exception as exc:
            raise PepperError(f"cannot write the pepper {self.label}: {_aws_problem(exc)}") from None

    def rotate(self) -> Peppers:
        """A compare-and-swap on the AWSCURRENT stage (Secrets Manager has no conditional put): the new
        value is written as a version staged AWSPENDING only, then AWSCURRENT is moved to it with
        `RemoveFromVersionId` naming the version this rotation read, which Secrets Manager refuses if
        AWSCURRENT has moved since. The loser reads again and adds its version on top."""
        client = self._client()
        for _ in range(ROTATE_ATTEMPTS):
            try:
                read = client.get_secret_value(SecretId=self.secret_id, VersionStage=AWS_CURRENT)
                new = rotated(parse(str(read.get("SecretString") or ""), self.legacy, self.label))
                token = str(uuid.uuid4())
                written = client.put_secret_value(
                    SecretId=self.secret_id,
                    SecretString=render(new),
                    ClientRequestToken=token,
                    VersionStages=[PENDING],
                )
            except PepperError:
                raise
            except Exception as exc:
                raise PepperError(f"cannot rotate the pepper {self.label}: {_aws_problem(exc)}") from None
            try:
                client.update_secret_version_stage(
                    SecretId=self.secret_id,
                    VersionStage=AWS_CURRENT,
                    MoveToVersionId=written["VersionId"],
                    RemoveFromVersionId=read["VersionId"],
                )
            except Exception as exc:
                # Refused (InvalidParameterException) because AWSCURRENT moved, or failed for another
                # reason: which one is read from the stage itself rather than from the error's code.
                if self._current_version(client) == read["VersionId"]:
                    raise PepperError(f"cannot rotate the pepper {self.label}: {_aws_problem(exc)}") from None
                continue  # another rotation moved AWSCURRENT first: build on its value
            with contextlib.suppress(Exception):  # tidy only: a stale AWSPENDING label harms nothing
                client.update_secret_version_stage(
                    SecretId=self.secret_id, VersionStage=PENDING, RemoveFromVersionId=written["VersionId"]
                )
            return new
        raise PepperError(f"cannot rotate the pepper {self.label}: it kept changing ({ROTATE_ATTEMPTS} tries)")

    def _current_version(self, client: Any) -> str | None:
        try:
            return str(client.get_secret_value(SecretId=self.secret_id, VersionStage=AWS_CURRENT)["VersionId"])
        except Exception as exc:
            raise PepperError(f"cannot rotate the pepper {self.label}: {_aws_problem(exc)}") from None


AWS_CURRENT, PENDING = "AWSCURRENT", "AWSPENDING"
ROTATE_ATTEMPTS = 20


def _secrets_client(secret_id: str) -> Any:
    from chatgw import aws

    parts = secret_id.split(":")
    region = parts[3] if secret_id.startswith("arn:") and len(parts) > 4 and parts[3] else None
    return aws.client("secretsmanager", region)


def _aws_problem(exc: Exception) -> str:
    name = type(exc).__name__
    if name == "NoCredentialsError":
        return "no AWS credentials found (configure them: aws configure, AWS_PROFILE, or the environment)"
    if name == "NoRegionError":
        return "no AWS region (set AWS_REGION or --region, or give the secret's full ARN)"
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return str(code or name)


def source_for(settings: Settings, *, create: bool) -> Source:
    """The gateway's peppers: the secret CHATGW_PEPPER_SECRET names, else (SQLite) the state
    folder's file, else (DynamoDB without a secret) the legacy pepper alone."""
    if settings.pepper_secret:
        return SecretSource(settings.pepper_secret, settings.pepper)
    if not settings.uses_dynamodb:
        return FileSource(settings.state_dir, settings.pepper, create=create)
    return LegacySource(settings.pepper)


# the running gateway's view ---------------------------------------------------------------------


class PepperBook:
    """The peppers a container loaded at start. A key of a version it does not know (the pepper
    rotated after this container started) makes it read the source again, at most every
    `refresh_s` seconds."""

    def __init__(
        self,
        source: Source,
        *,
        refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.peppers = source.load()
        self._refresh_s = refresh_s
        self._clock = clock
        self._loaded = clock() - refresh_s  # the first unknown version may reload at once
        self._lock = threading.Lock()
        self._fingerprints: dict[bytes, str] = {}

    @classmethod
    def legacy(cls, pepper: bytes) -> PepperBook:
        return cls(LegacySource(pepper))

    def get(self, version: str | None) -> bytes | None:
        return self.peppers.get(version)

    @property
    def label(self) -> str:
        return self.source.label

    def fingerprint(self, version: str | None) -> str | None:
        """The fingerprint of a version this book holds (cached; one HMAC per version)."""
        pepper = self.peppers.get(version)
        if pepper is None:
            return None
        if pepper not in self._fingerprints:
            self._fingerprints[pepper] = fingerprint(pepper)
        return self._fingerprints[pepper]

    def reload_for(self, version: str | None) -> tuple[bytes | None, str]:
        """The pepper of `version`, reading the source again if allowed; else (None, why).
        Blocking (may call Secrets Manager): run it off the event loop."""
        with self._lock:
            if self.peppers.get(version) is None and self._clock() - self._loaded >= self._refresh_s:
                self._loaded = self._clock()
                try:
                    self.peppers = self.source.load()
                except PepperError as exc:
                    return None, str(exc)
            found = self.peppers.get(version)
            known = ", ".join(sorted(self.peppers.versions)) or "none"
            return found, "" if found is not None else f"{self.source.label} holds versions: {known}"
