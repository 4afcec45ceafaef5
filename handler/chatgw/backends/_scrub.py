"""One scrubber for every message that comes from an upstream (HTTP error bodies, in-band `{"error"}`
bodies and SSE error events, Bedrock's messages) before it reaches a client.

It removes the credentials this gateway sends (the upstream key, every configured header value) and
any prefix of them of `MIN_PREFIX` characters or more (upstreams echo `sk-proj-abc...`), then
anything shaped like a credential whoever it belongs to (`Bearer ...`, `sk-...`, AWS access key ids,
`api_key=...`)."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
MIN_PREFIX = 8
"""A run of this many characters of a secret, or more, from its start, is scrubbed."""
MIN_SECRET = 4
"""Shorter configured values (a header `"1"`) are not secrets worth a blind replace."""
MAX_MESSAGE = 300
"""Upstream messages are cut to this many characters (after scrubbing)."""

_SHAPES = (
    re.compile(
        r"(?i)\b(api[_-]?key|x-api-key|secret|password|authorization)(\"?\s*[:=]\s*\"?)(?:bearer\s+)?[^\s\"',;]+"
    ),
    re.compile(r"(?i)\b(bearer)(\s+)[^\s\"',;]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-*.]{6,}"),
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
)


def _shape(match: re.Match[str]) -> str:
    groups = [g for g in match.groups() if g is not None]
    return "".join(groups) + MASK if groups else MASK


def _without(text: str, secret: str) -> str:
    """`text` with every run of `secret`'s leading characters (at least MIN_PREFIX, or the whole
    secret when it is shorter) replaced by MASK."""
    head = secret[: min(MIN_PREFIX, len(secret))]
    out: list[str] = []
    start = 0
    while (found := text.find(head, start)) >= 0:
        end = found + len(head)
        while end < len(text) and end - found < len(secret) and text[end] == secret[end - found]:
            end += 1
        out.append(text[start:found] + MASK)
        start = end
    out.append(text[start:])
    return "".join(out)


def scrub(text: str, secrets: Iterable[str | None] = (), limit: int = MAX_MESSAGE) -> str:
    """`text` without the given secrets, their prefixes, or anything shaped like a credential."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True):
        text = _without(text, secret)
    for shape in _SHAPES:
        text = shape.sub(_shape, text)
    return text[:limit]
