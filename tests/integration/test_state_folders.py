"""The folders chatgw makes for its state (the SQLite ledger and key hashes, the peppers, the development
key, the metrics token) are its owner's alone: 0700, each missing parent too, under a umask of 022
(the usual one, which would leave them 0755), from a fresh path through each command that makes one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatgw.cli import main as chatgw_cli
from tests.support.servers import free_port, stop, wait_healthy


def modes(top: Path, state: Path) -> dict[str, int]:
    """The mode of `state` and of each folder between `top` (excluded) and it."""
    folders = [state, *[p for p in state.parents if top in p.parents]]
    return {str(p.relative_to(top)): stat.S_IMODE(p.stat().st_mode) for p in folders}


@pytest.fixture
def umask_022(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("CHATGW_KEYS_TABLE", "CHATGW_USAGE_TABLE", "CHATGW_PEPPER_SECRET", "CHATGW_MODELS"):
        monkeypatch.delenv(name, raising=False)
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_serve_makes_its_state_folder_0700(tmp_path: Path, umask_022: None) -> None:
    state = tmp_path / "fresh" / "nested" / ".chatgw"
    port = free_port()
    command = [sys.executable, "-m", "chatgw.cli.main", "serve", "--metrics", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--state-dir", str(state)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, umask=0o022
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        assert modes(tmp_path, state) == {"fresh/nested/.chatgw": 0o700, "fresh/nested": 0o700, "fresh": 0o700}
        assert {p.name for p in state.iterdir()} >= {"chatgw.db", "dev-key", "pepper.json", "metrics-token"}
    finally:
        stop(process)


@pytest.mark.parametrize(
    "argv", [["keys", "create", "--name", "ci"], ["pepper", "rotate"]], ids=["keys-create", "pepper-rotate"]
)
def test_the_cli_makes_its_state_folder_0700(
    argv: list[str], tmp_path: Path, umask_022: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "fresh" / "state"
    monkeypatch.setenv("CHATGW_STATE_DIR", str(state))  # --state-dir must name a folder that exists
    assert chatgw_cli.main([*argv, "--json"]) == 0
    assert modes(tmp_path, state) == {"fresh/state": 0o700, "fresh": 0o700}
    assert stat.S_IMODE((state / "pepper.json").stat().st_mode) == 0o600


def test_a_folder_that_exists_keeps_the_mode_its_owner_gave_it(tmp_path: Path, umask_022: None) -> None:
    """chatgw tightens what it makes, not a folder someone else made (CHATGW_STATE_DIR=. is allowed)."""
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o750)
    from chatgw.settings import private_dir

    private_dir(mine / "state")
    assert stat.S_IMODE(mine.stat().st_mode) == 0o750
    assert stat.S_IMODE((mine / "state").stat().st_mode) == 0o700
