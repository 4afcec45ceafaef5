"""The model catalog: `CHATGW_MODELS` (a JSON file path or inline JSON) to backends.

{"<public name>": {"backend": "openai" | "anthropic" | "bedrock" | "echo",
                   "description": "...", "price_per_million_tokens": {"input": 0.15, "output": 0.6,
                   "cached_input": 0.075, "cache_write": 0.1875}, "max_output_tokens": 4096,
                   "fallbacks": ["<other public name>", ...], "aliases": ["<more names>", ...],
                   ...backend options}}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatgw.backends import ADAPTERS, BackendDeps, CatalogError, ChatBackend, build_backend
from chatgw.conversation import Conversation
from chatgw.errors import ModelNotFound, UnsupportedParameter
from chatgw.metering.estimate import image_count
from chatgw.metering.price import Price
from chatgw.observability import logs
from chatgw.store.base import DOOR_MARK

COMMON_FIELDS = (
    "backend",
    "description",
    "price_per_million_tokens",
    "fallbacks",
    "max_output_tokens",
    "max_image_tokens",
    "account_params",
    "aliases",
)
ACCOUNT_PARAMS = ("service_tier", "store", "safety_identifier")
"""Parameters that act on the operator's upstream account: a cost tier the ledger's prices do not
know, stored conversations, end-user identities. Refused unless the model's `account_params` lists
them (a harmless value passes: `service_tier` "auto"/"default", `store` false)."""
HARMLESS = {"service_tier": ("auto", "default"), "store": (False,)}
PRICE_FIELDS = {"input", "output", "cached_input", "cache_write"}
ECHO_IMAGE_TOKENS = 85
"""What an image reserves on echo, which never reads one."""
ECHO_DESCRIPTION = (
    "Development model: answers deterministically by echoing the last user message. Not a language model."
)
DEFAULT_MODELS: dict[str, dict[str, Any]] = {"echo": {"backend": "echo"}}
NOTHING_CONFIGURED = (
    "CHATGW_MODELS is not set: this gateway serves only the built-in echo development model "
    "(no language model). Set CHATGW_MODELS (the stack's Models parameter) to serve real models."
)


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    backend: ChatBackend
    description: str
    price: Price | None = None
    fallbacks: tuple[str, ...] = ()
    max_output_tokens: int | None = None
    account_params: frozenset[str] = frozenset()
    max_image_tokens: int | None = None
    """What one image may cost at most on this model; unset, the model takes no images."""
    aliases: tuple[str, ...] = ()
    """More names that reach this entry (Claude Code asks for dated names); a key's model
    permission applies to the entry's `name`."""

    @property
    def development(self) -> bool:
        return self.backend.kind == "echo"

    @property
    def native_dialect(self) -> str | None:
        """The dialect the backend's upstream speaks, when a door of that dialect may send it the
        client's own body (`Original`); None for a backend that only translates."""
        dialect = getattr(self.backend, "native_dialect", None)
        return dialect if isinstance(dialect, str) else None

    @property
    def image_tokens(self) -> int | None:
        """What an image reserves on this model (echo's own small figure: it reads no image)."""
        return ECHO_IMAGE_TOKENS if self.development and self.max_image_tokens is None else self.max_image_tokens

    def check(self, request: Conversation) -> None:
        """Raise `UnsupportedParameter` for what this model may not take: images when the catalog
        does not say what one may cost, an account parameter the catalog does not allow for it, or
        what its backend cannot honour."""
        if self.image_tokens is None and image_count(request):
            raise UnsupportedParameter(
                f"The model '{self.name}' takes no images: its catalog entry sets no `max_image_tokens` "
                "(what one image may cost, which its reservation needs).",
                param="messages",
            )
        for param in ACCOUNT_PARAMS:
            value = request.params.get(param)
            if param not in request.given or param in self.account_params or self.development:
                continue
            if value is None or value in HARMLESS.get(param, ()):
                continue
            raise UnsupportedParameter(
                f"The parameter `{param}` is not allowed for model '{self.name}': it acts on the operator's "
                "upstream account (the catalog's `account_params` can allow it).",
                param=param,
            )
        self.backend.check(request)


class Catalog:
    def __init__(self, entries: Mapping[str, ModelEntry]) -> None:
        self._entries = dict(entries)
        self._aliases = {alias: e.name for e in self._entries.values() for alias in e.aliases}

    def get(self, name: str) -> ModelEntry:
        entry = self._entries.get(name) or self._entries.get(self._aliases.get(name, ""))
        if entry is None:
            raise ModelNotFound(f"The model `{name}` does not exist.", param="model")
        return entry

    def chain(self, name: str) -> list[ModelEntry]:
        """The model followed by its fallbacks, in the order they are tried."""
        entry = self.get(name)
        return [entry, *(self._entries[f] for f in entry.fallbacks)]

    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    async def aclose(self) -> None:
        for entry in self._entries.values():
            await entry.backend.aclose()


SSM_PREFIX = "ssm:"


def read_source(source: str | None, deps: BackendDeps | None = None) -> dict[str, Any]:
    """Parse `CHATGW_MODELS`: inline JSON, `ssm:/parameter/name` (read once, at start, so a catalog
    of any size fits), or a file path (relative paths from the working directory: in Lambda that
    is the package, so `catalog.json` is handler/catalog.json). Unset means the echo model alone."""
    if source is None or not source.strip():
        return dict(DEFAULT_MODELS)
    text = source
    if source.startswith(SSM_PREFIX):
        text = _read_parameter(source[len(SSM_PREFIX) :], deps or BackendDeps())
    elif not source.lstrip().startswith("{"):
        path = Path(source).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise CatalogError(f"CHATGW_MODELS: cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"CHATGW_MODELS: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise CatalogError("CHATGW_MODELS: must be a non-empty JSON object of model name to options")
    return data


def _read_parameter(name: str, deps: BackendDeps) -> str:
    parts = name.split(":")
    region = parts[3] if name.startswith("arn:") and len(parts) > 4 and parts[3] else None
    try:
        client: Any = deps.aws_client("ssm", region)
        return str(client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
    except Exception as exc:  # botocore's errors, reduced to their code
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
        raise CatalogError(f"CHATGW_MODELS: cannot read the SSM parameter {name}: {code}") from None


def _price(name: str, value: Any) -> Price | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not {"input", "output"} <= set(value) <= PRICE_FIELDS
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value.values())
    ):
        raise CatalogError(
            f"CHATGW_MODELS: model '{name}': field 'price_per_million_tokens' must be "
            '{"input": <number >= 0>, "output": <number >= 0>} with optional "cached_input" and "cache_write"'
        )
    optional = {k: float(value[k]) for k in ("cached_input", "cache_write") if k in value}
    return Price(float(value["input"]), float(value["output"]), **optional)


def _max_output(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CatalogError(f"CHATGW_MODELS: model '{name}': field 'max_output_tokens' must be an integer >= 1")
    return value


def _positive(name: str, field: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CatalogError(f"CHATGW_MODELS: model '{name}': field '{field}' must be an integer >= 1")
    return value


def _account_params(name: str, value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not set(value) <= set(ACCOUNT_PARAMS):
        raise CatalogError(
            f"CHATGW_MODELS: model '{name}': field 'account_params' must be a list of {', '.join(ACCOUNT_PARAMS)}"
        )
    return frozenset(value)


def _aliases(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(a, str) and a for a in value):
        raise CatalogError(f"CHATGW_MODELS: model '{name}': field 'aliases' must be a list of model names")
    return tuple(value)


def _check_aliases(entries: Mapping[str, ModelEntry]) -> None:
    """An alias names one entry: never a model's own name, never two entries."""
    owner: dict[str, str] = {}
    for entry in entries.values():
        for alias in entry.aliases:
            if alias in entries:
                raise CatalogError(f"CHATGW_MODELS: model '{entry.name}': alias '{alias}' is the name of a model")
            if owner.setdefault(alias, entry.name) != entry.name:
                raise CatalogError(
                    f"CHATGW_MODELS: model '{entry.name}': alias '{alias}' is also an alias of '{owner[alias]}'"
                )


def load_catalog(source: str | None, deps: BackendDeps) -> Catalog:
    data = read_source(source, deps)
    nothing_configured = source is None or not source.strip()
    if nothing_configured:  # said at init (CloudWatch in Lambda) and in every model list
        logs.event("catalog_default", logging.WARNING, message=NOTHING_CONFIGURED)
    entries: dict[str, ModelEntry] = {}
    for name, spec in data.items():
        if not isinstance(spec, dict):
            raise CatalogError(f"CHATGW_MODELS: model '{name}': must be an object")
        if DOOR_MARK in name:  # the ledger's per-model rows put it between a model and its door
            raise CatalogError(f"CHATGW_MODELS: model {name!r}: a name may not hold the control character U+001F")
        kind = spec.get("backend")
        if kind not in ADAPTERS:
            raise CatalogError(
                f"CHATGW_MODELS: model '{name}': field 'backend' must be one of {sorted(ADAPTERS)}, got {kind!r}"
            )
        fallbacks = spec.get("fallbacks", [])
        if not isinstance(fallbacks, list) or not all(isinstance(f, str) for f in fallbacks):
            raise CatalogError(f"CHATGW_MODELS: model '{name}': field 'fallbacks' must be a list of model names")
        for twice in {f for f in fallbacks if fallbacks.count(f) > 1}:  # it would be tried twice
            raise CatalogError(f"CHATGW_MODELS: model '{name}': field 'fallbacks' names '{twice}' twice")
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            raise CatalogError(f"CHATGW_MODELS: model '{name}': field 'description' must be a string")
        options = {k: v for k, v in spec.items() if k not in COMMON_FIELDS}
        backend = build_backend(kind, name, options, deps)
        if description is None:
            description = ECHO_DESCRIPTION if kind == "echo" else f"{name} ({kind} backend)"
            if nothing_configured:
                description = f"{description} {NOTHING_CONFIGURED}"
        elif kind == "echo" and "development" not in description.lower():
            description = f"Development model. {description}"
        entries[name] = ModelEntry(
            name=name,
            backend=backend,
            description=description,
            price=_price(name, spec.get("price_per_million_tokens")),
            fallbacks=tuple(fallbacks),
            max_output_tokens=_max_output(name, spec.get("max_output_tokens")),
            max_image_tokens=_positive(name, "max_image_tokens", spec.get("max_image_tokens")),
            account_params=_account_params(name, spec.get("account_params")),
            aliases=_aliases(name, spec.get("aliases")),
        )
    for entry in entries.values():
        for fallback in entry.fallbacks:
            if fallback not in entries or fallback == entry.name:
                raise CatalogError(
                    f"CHATGW_MODELS: model '{entry.name}': fallback '{fallback}' is not another model of the catalog"
                )
    _check_aliases(entries)
    return Catalog(entries)
