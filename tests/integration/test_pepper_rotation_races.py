"""`chatgw pepper rotate` run several times at the same instant: each rotation adds its own version,
in the state folder's `pepper.json` (a file lock) and in Secrets Manager (a moto server on loopback:
AWSCURRENT moved only from the version the rotation read)."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from chatgw.access import peppers as peppers_module
from chatgw.access.peppers import FileSource, Peppers, SecretSource
from tests.support.dynamo import MotoServer

ROTATIONS = 4


@pytest.fixture
def all_read_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Holds each rotation, after it has read the peppers, until all of them have read (or 2 s went by):
    without a lock every rotation then builds on the same versions, the race at its widest. With one,
    the first waits out the barrier alone and breaks it, and the others pass it at once."""
    barrier = threading.Barrier(ROTATIONS, timeout=2.0)
    real = peppers_module.rotated

    def rotated(peppers: Peppers) -> Peppers:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return real(peppers)

    monkeypatch.setattr(peppers_module, "rotated", rotated)


def rotate_at_once(rotate: Callable[[], Peppers]) -> list[str]:
    with ThreadPoolExecutor(ROTATIONS) as pool:
        results = [pool.submit(rotate) for _ in range(ROTATIONS)]
        return sorted(str(r.result(timeout=60).current) for r in results)


def test_concurrent_rotations_of_the_state_folder_each_add_a_version(tmp_path: Path, all_read_first: None) -> None:
    FileSource(tmp_path, b"", create=True).load()  # v1, as `chatgw serve` makes it
    made = rotate_at_once(lambda: FileSource(tmp_path, b"", create=False).rotate())
    after = FileSource(tmp_path, b"", create=False).load()
    every = [f"v{n}" for n in range(2, ROTATIONS + 2)]
    assert made == sorted(every)  # each rotation made its own version
    assert sorted(after.versions) == sorted(["v1", *every]) and after.current in every


def test_concurrent_rotations_of_the_secret_each_add_a_version(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, all_read_first: None
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_server.endpoint)
    client = boto3.client("secretsmanager", region_name="us-east-1")
    first = json.dumps({"current": "v1", "v1": "generated-by-cloudformation-0123456789"})
    arn = str(client.create_secret(Name=f"chatgw-pepper-{uuid.uuid4().hex[:8]}", SecretString=first)["ARN"])

    made = rotate_at_once(lambda: SecretSource(arn, b"").rotate())
    # read by its stage: moto moves AWSCURRENT but not the version an unnamed read returns, as AWS does
    current = json.loads(client.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])
    every = [f"v{n}" for n in range(2, ROTATIONS + 2)]
    assert made == sorted(every)
    assert sorted(k for k in current if k != "current") == sorted(["v1", *every])
    assert current["v1"] == "generated-by-cloudformation-0123456789"  # an old version's value never changes
    assert SecretSource(arn, b"").load().current == current["current"]
