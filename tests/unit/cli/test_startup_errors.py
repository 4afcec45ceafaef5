"""What an operator sees when the CLI cannot start: one line naming the problem, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chatgw import __version__
from chatgw.cli import main as cli


@pytest.mark.parametrize(
    ("models", "fragment"),
    [
        ('{"x": {"backend": "echo", "bogus": 1}}', "model 'x': unknown field 'bogus'"),
        ("/nonexistent/models.json", "cannot read /nonexistent/models.json"),
        ('{"x": {"backend": "llama"}}', "model 'x': field 'backend'"),
    ],
)
def test_a_bad_catalog_is_one_line(tmp_path: Path, models: str, fragment: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "chatgw.cli.main", "invoke", "events/rest-v1-chat.json", "--state-dir", str(tmp_path)],
        env={"CHATGW_MODELS": models, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert fragment in out.stderr
    assert out.stderr.startswith("chatgw: CHATGW_MODELS")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"chatgw {__version__}"
