"""What the Messages door does with what it cannot translate, toward a backend of another dialect.

A backend of Anthropic's dialect gets the client's own body (`Conversation.original`): every field
arrives as sent. Toward any other backend, each such field is looked up here once:

- it changes the answer (a server tool, an MCP server, a structured-output schema, ...): a 400
  naming it, because the model would silently do something else than asked;
- it does not (metadata, a context-window edit, a display setting): dropped, with a debug log line.

A field this table does not list is taken to change the answer: the next field a client invents is
refused by name rather than ignored in silence. The README's "Anthropic Messages door" states this."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from chatgw.errors import UnsupportedParameter
from chatgw.observability import logs

CHANGES_ANSWER: Mapping[str, bool] = {
    # top-level fields this door knows but the conversation has no field for
    "anthropic-beta": False,  # the header's flags: the features they enable are fields, judged by name
    "metadata": False,  # the end user's id, for the provider's abuse checks
    "service_tier": False,  # a capacity tier; the catalog's `account_params` still governs it
    "context_management": False,  # server-side pruning of old turns: the other backend sees them all
    "thinking": False,  # adaptive or disabled thinking: thinking is not part of the answer's text
    "container": True,  # code execution's container
    "mcp_servers": True,  # remote tools the model would call
    "output_config": True,  # an output setting other than `effort` and `format`
}
"""Field -> whether it changes the answer. What blocks and tools carry beyond the conversation model
has a door-made name "<where>:<type>" (`tools:web_search_20250305`, `content:server_tool_use`,
`image:file`, `document:url`): not listed, so it changes the answer."""


def changes_answer(name: str) -> bool:
    return CHANGES_ANSWER.get(name, True)


def split(names: Iterable[str]) -> tuple[set[str], set[str]]:
    """(the names that change the answer, the ones that may be dropped)."""
    changing = {n for n in names if changes_answer(n)}
    return changing, set(names) - changing


def enforce(params: Mapping[str, Any], model: str, request_id: str) -> None:
    """Toward a backend of another dialect: a 400 for the first field that changes the answer, and a
    debug line for what is dropped."""
    changing, dropped = split(params)
    if changing:
        name = sorted(changing)[0]
        shown = _shown(name)
        raise UnsupportedParameter(
            f"{shown} is not supported by model '{model}': only a backend of Anthropic's Messages API can honour it.",
            param=name.split(":", 1)[0],
        )
    if dropped:
        logs.event(
            "messages_fields_dropped",
            logging.DEBUG,
            request_id=request_id,
            model=model,
            fields=sorted(dropped),
        )


def _shown(name: str) -> str:
    if ":" not in name:
        return f"The parameter `{name}`"
    where, kind = name.split(":", 1)
    return {
        "tools": f"The tool type `{kind}`",
        "content": f"The content block type `{kind}`",
        "image": f"An image of source type `{kind}`",
        "document": f"A document of source type `{kind}`",
    }.get(where, f"`{name}`")
