"""The version is written once, in pyproject.toml: `chatgw --version` and the app's OpenAPI
document say that one, and a copy of chatgw that is not installed says it does not know."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from chatgw import __version__
from chatgw.cli.main import main
from chatgw.compose import Container
from chatgw.version import UNKNOWN, installed_version

PROJECT = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())["project"]


def test_the_cli_and_the_app_say_the_projects_version(
    make_container: Callable[..., Container], capsys: pytest.CaptureFixture[str]
) -> None:
    assert __version__ == PROJECT["version"]
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"chatgw {PROJECT['version']}"
    assert make_container().app.version == PROJECT["version"]


def test_a_copy_that_is_not_installed_says_so() -> None:
    assert installed_version("chatgw-not-installed-anywhere") == UNKNOWN
