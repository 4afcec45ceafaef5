"""Validation of a model's backend options, with messages that name the model and the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatgw.backends import CatalogError


class Options:
    def __init__(self, name: str, options: Mapping[str, Any], known: set[str]) -> None:
        self.name = name
        self._options = options
        for field in sorted(set(options) - known):
            raise self.error(field, f"is not an option of this backend (known: {', '.join(sorted(known))})")

    def error(self, field: str, problem: str) -> CatalogError:
        return CatalogError(f"CHATGW_MODELS: model '{self.name}': field '{field}' {problem}")

    def has(self, field: str) -> bool:
        return self._options.get(field) is not None

    def string(self, field: str, default: str | None = None) -> str | None:
        value = self._options.get(field, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise self.error(field, "must be a non-empty string")
        return value

    def number(self, field: str, default: float, minimum: float) -> float:
        value = self._options.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.error(field, f"must be a number >= {minimum}")
        return float(value)

    def integer(self, field: str, default: int, minimum: int, maximum: int) -> int:
        value = self._options.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.error(field, f"must be an integer from {minimum} to {maximum}")
        return value

    def string_map(self, field: str) -> dict[str, str]:
        value = self._options.get(field, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise self.error(field, "must be an object of string to string")
        return dict(value)

    def string_list(self, field: str) -> list[str]:
        value = self._options.get(field, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(field, "must be a list of strings")
        return list(value)
