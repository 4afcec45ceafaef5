"""The version is written once, in `chatgw/version.py`: the installed distribution (pyproject.toml
reads it), `chatgw --version` and the app's OpenAPI document say that one."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest

from chatgw import __version__
from chatgw.cli.main import main
from chatgw.compose import Container

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())


def test_pyproject_reads_the_version_from_the_package() -> None:
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "chatgw.version.__version__"}


def test_the_distribution_the_cli_and_the_app_say_the_same_version(
    make_container: Callable[..., Container], capsys: pytest.CaptureFixture[str]
) -> None:
    assert version("chatgw") == __version__  # the editable install `make install` made
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"chatgw {__version__}"
    assert make_container().app.version == __version__
