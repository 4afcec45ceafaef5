"""The `bedrock` backend's catalog entry: `"api": "converse"` (the default: Converse and ConverseStream,
every model, `bedrock_converse.py`) or `"api": "invoke"` (InvokeModel with Anthropic's own body, for
Claude, `bedrock_invoke.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatgw.backends._options import Options
from chatgw.backends.base import BackendDeps
from chatgw.backends.bedrock_converse import BedrockBackend
from chatgw.backends.bedrock_invoke import BedrockInvokeBackend

OPTIONS = {"model_id", "region", "max_retries", "api", "beta_flags"}
APIS = ("converse", "invoke")


def from_options(name: str, options: Mapping[str, Any], deps: BackendDeps) -> BedrockBackend:
    opts = Options(name, options, OPTIONS)
    model_id = opts.string("model_id")
    if model_id is None:
        raise opts.error("model_id", "is required (a Bedrock model id or inference profile ARN)")
    api = opts.string("api", APIS[0])
    if api not in APIS:
        raise opts.error("api", f"must be one of {', '.join(APIS)}")
    kwargs: dict[str, Any] = {
        "model_id": model_id,
        "region": opts.string("region"),
        "max_retries": opts.integer("max_retries", 2, minimum=0, maximum=2),
        "deps": deps,
    }
    if api == "invoke":
        return BedrockInvokeBackend(name, beta_flags=frozenset(opts.string_list("beta_flags")), **kwargs)
    if opts.has("beta_flags"):
        raise opts.error("beta_flags", 'applies only to "api": "invoke" (Converse takes no beta flags)')
    return BedrockBackend(name, **kwargs)
