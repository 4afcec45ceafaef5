from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.lock import locked
from tests.support.tools import ROOT


def project() -> dict[str, object]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"])


@pytest.mark.parametrize(
    ("lock", "extra"),
    [("handler/requirements.txt", None), ("requirements-local.txt", "local"), ("requirements-dev.txt", "dev")],
)
def test_each_lock_pins_what_pyproject_asks_for_with_hashes(lock: str, extra: str | None) -> None:
    """`make lock` after changing pyproject.toml's dependencies keeps this green."""
    pins = locked(ROOT / lock)
    spec = project()
    wanted = [Requirement(r) for r in spec["dependencies"]]  # type: ignore[attr-defined]
    extras = spec["optional-dependencies"]
    if extra:
        for r in extras[extra]:  # type: ignore[index]
            req = Requirement(r)
            if canonicalize_name(req.name) == "chatgw":
                wanted += [Requirement(x) for e in req.extras for x in extras[e]]  # type: ignore[index]
            else:
                wanted.append(req)
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{lock}: {req.name} is not locked (run make lock)"
        assert all(req.specifier.contains(v, prereleases=True) for v in pins[name]), f"{lock}: {req} vs {pins[name]}"


def test_the_lambda_lock_is_for_python_313_arm64() -> None:
    header = (ROOT / "handler" / "requirements.txt").read_text().splitlines()[1]
    assert "--python-version 3.13" in header and "--python-platform aarch64-manylinux" in header
    assert "chatgw" not in locked(ROOT / "handler" / "requirements.txt")


def test_installs_use_the_locks_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r $(DEV_LOCK)" in makefile
    assert "--require-hashes -r $(LOCAL_LOCK)" in makefile
    assert "LAMBDA_LOCK := handler/requirements.txt" in makefile


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make run") < readme.index("make test")
