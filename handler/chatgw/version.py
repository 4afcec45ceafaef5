"""The gateway's version, written once: here. pyproject.toml reads it (`[tool.setuptools.dynamic]`),
so the installed distribution says the same, and the Lambda package (a copy of `handler/`, not an
installed distribution) knows it too. A literal, not a package-metadata lookup: that lookup scans
every distribution on `sys.path` at each cold start (~5 ms of CPU here)."""

from __future__ import annotations

__version__ = "0.1.0"
