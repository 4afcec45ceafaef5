"""What the admin commands share: their error, key ids, the clock, and plain tables."""

from __future__ import annotations

from datetime import UTC, datetime

from chatgw.access.keys import KEY_ID_PATTERN


class CliError(Exception):
    """A refusal the operator can fix: printed on stderr, exit code `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def key_id_arg(text: str) -> str:
    if not KEY_ID_PATTERN.match(text):
        raise CliError(f"no such key: {text!r} is not a key id", code=1)
    return text


def now() -> datetime:
    return datetime.now(UTC)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    for line in [headers, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=False)).rstrip())
