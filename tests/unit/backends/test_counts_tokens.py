"""Which backends a door's count_tokens route may ask: those whose upstream counts itself."""

from __future__ import annotations

from chatgw.backends import BackendDeps, build_backend
from chatgw.backends.base import CountsTokens

MODEL_ID = "anthropic.claude-fake-v1:0"


def test_the_backends_that_count_tokens_say_so() -> None:
    deps = BackendDeps()  # nothing is called: no client is made
    counting = {
        "anthropic": {"base_url": "http://127.0.0.1:9"},
        "bedrock": {"model_id": MODEL_ID},
    }
    for kind, options in counting.items():
        assert isinstance(build_backend(kind, "m", options, deps), CountsTokens)
    assert isinstance(build_backend("bedrock", "m", {"model_id": MODEL_ID, "api": "invoke"}, deps), CountsTokens)
    assert not isinstance(build_backend("echo", "m", {}, deps), CountsTokens)
    assert not isinstance(build_backend("openai", "m", {"base_url": "http://127.0.0.1:9/v1"}, deps), CountsTokens)
