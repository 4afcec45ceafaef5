"""The official OpenAI and Anthropic SDKs as clients of the gateway."""

from __future__ import annotations

from typing import Any

_sdk_clients: list[Any] = []


def openai_client(base_url: str, api_key: str, **options: Any) -> Any:
    """The official SDK's client, closed after the test (an unclosed one leaks its socket)."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key, **options)
    _sdk_clients.append(client)
    return client


def anthropic_client(base_url: str, api_key: str, **options: Any) -> Any:
    """The anthropic SDK's client (no retries, a 30 s timeout unless told), closed after the test."""
    import anthropic

    client = anthropic.Anthropic(base_url=base_url, api_key=api_key, **{"max_retries": 0, "timeout": 30, **options})
    _sdk_clients.append(client)
    return client


def close_sdk_clients() -> None:
    """Close every client `openai_client` and `anthropic_client` made (the root conftest does it after each test)."""
    while _sdk_clients:
        _sdk_clients.pop().close()
