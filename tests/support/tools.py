"""Where the repository is, and what a test does when a tool it needs is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

STRICT_ENV = "CHATGW_TEST_STRICT"
"""Set by `make test` (and so by CI): a tool a test needs that is missing fails the test."""
WITHOUT_ENV = "CHATGW_TEST_WITHOUT"
"""Tools left out on purpose, comma-separated (e.g. `python3.13`): their tests are skipped, by name."""


def missing_tool(tool: str, how: str) -> None:
    """A test cannot run because `tool` is missing: under `make test` that fails loudly (a skip would
    hide that part of the suite); with plain `pytest` it is a skip that says how to get the tool.
    Leaving a tool out on purpose is `CHATGW_TEST_WITHOUT=<tool>`, which the skip reason repeats."""
    if tool in {t.strip() for t in os.environ.get(WITHOUT_ENV, "").split(",")}:
        pytest.skip(f"{tool} left out on purpose ({WITHOUT_ENV})")
    message = f"{tool} is missing: {how}"
    if os.environ.get(STRICT_ENV) == "1":
        pytest.fail(f"{message} (`make test` runs every test; {WITHOUT_ENV}={tool} leaves it out on purpose)")
    pytest.skip(f"{message} (under `make test` this is a failure)")
