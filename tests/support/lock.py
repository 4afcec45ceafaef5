"""The lock files read as pins: each distribution's exact versions, every one hashed."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.utils import canonicalize_name

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked(path: Path) -> dict[str, list[str]]:
    """Each locked distribution's versions (a universal lock may pin one per Python version), and
    that every requirement is an exact `==` with at least one `--hash`."""
    pins: dict[str, list[str]] = {}
    blocks = re.split(r"\n(?=\S)", path.read_text())
    for block in blocks:
        if not block.strip() or block.startswith("#"):
            continue
        match = PIN.match(block)
        assert match, f"{path.name}: not an exact pin: {block.splitlines()[0]}"
        assert "--hash=sha256:" in block, f"{path.name}: {match.group(1)} has no hash"
        pins.setdefault(canonicalize_name(match.group(1)), []).append(match.group(2))
    return pins
