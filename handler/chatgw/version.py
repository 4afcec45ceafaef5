"""The gateway's version, once: the installed distribution's (pyproject.toml's `version`)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

UNKNOWN = "0+unknown"
"""Where chatgw runs from its folder without being installed (the Lambda package copies `handler/`)."""


def installed_version(distribution: str = "chatgw") -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return UNKNOWN


__version__ = installed_version()
