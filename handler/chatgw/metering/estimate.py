"""A tokenizer-free token estimate, used by the echo model, for reservations, and when a backend
reports no usage. It leans high on purpose: a budget must not be dodged by text an estimate
undercounts. Measured against cl100k_base and o200k_base on a mixed corpus (English, CJK, Cyrillic,
Arabic, Indic, emoji, code, JSON, base64, hex: `bench/estimator/`), it is 1.1 to 1.7 times the real
count with cl100k and 1.1 to 4.2 times with o200k, and never below either.

`estimate_prompt_tokens(conversation)` counts the whole request: every message's text, names, tool
calls and tool results, tool definitions, a JSON schema answer format, the door's other parameters,
and a fixed allowance for each image, audio clip and file (their bytes are not text). `answer_text`
and `event_text` are the one measure of an answer's text, buffered or streamed."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

from chatgw.conversation import (
    Answer,
    Audio,
    Conversation,
    Document,
    Event,
    Image,
    Part,
    Reasoning,
    Refusal,
    Text,
    ToolCall,
    ToolResult,
)

MESSAGE_OVERHEAD = 3
"""Per message, and once for the answer's priming, as OpenAI counts chat messages."""
IMAGE_TOKENS = 1_600
"""An image, whatever its size: the most Bedrock's Claude charges (~1.15 MP), more than a GPT-4o
high-detail image (at most 1,445); a `detail: low` image is 85 on OpenAI, counted the same."""
AUDIO_TOKENS_PER_KB = 1
"""Input audio, per KB of base64 (about 20 tokens a second of MP3, twice what OpenAI counts)."""
FILE_TOKENS_PER_KB = 50
FILE_REFERENCE_TOKENS = 4_000
"""A file sent by `file_id`: its size is unknown here, so a fixed guess (a known limit)."""
MARGIN_DIVISOR = 20

_PIECE = re.compile(r"[A-Za-z0-9]+| (?=[0-9])|[^\x00-\x7f]+|\s+|[^\sA-Za-z0-9]")
_SUBWORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


def _char_weight(ch: str) -> float:
    """Tokens per character of scripts without ASCII letters (BPE vocabularies hold few of their
    merges; CJK runs have no spaces at all, so every character counts)."""
    o = ord(ch)
    if o < 0x400:
        return 0.7  # Latin extended, Greek
    if o < 0x530:
        return 0.5  # Cyrillic
    if o < 0x800:
        return 0.9  # Armenian, Hebrew, Arabic, Syriac, Thaana
    if o < 0x1000:
        return 1.5  # Indic scripts, Thai, Lao, Tibetan
    if o < 0x10000:
        return 1.3  # CJK, kana, Hangul, symbols
    return 3.0  # emoji and other characters past the BMP


def _alnum_tokens(run: str) -> int:
    subwords = _SUBWORD.findall(run)
    tokens = 0
    for sub in subwords:
        if sub[0].isdigit():
            tokens += -(-len(sub) // 3)  # BPE vocabularies split numbers in threes
        elif sub.isupper() and len(sub) > 1:
            tokens += -(-len(sub) // 3)
        else:
            tokens += -(-len(sub) // 5)
    if len(run) >= 6 and len(subwords) * 3 > len(run):  # random-looking: ids, base64, hex
        tokens = max(tokens, math.ceil(len(run) * 0.6))
    return tokens


def count_tokens(text: str) -> int:
    tokens = 0
    for match in _PIECE.finditer(text):
        piece = match.group()
        first = piece[0]
        if not first.isascii():
            tokens += math.ceil(sum(_char_weight(ch) for ch in piece))
        elif first.isalnum():
            tokens += _alnum_tokens(piece)
        elif first.isspace():
            # a single space joins the word after it; not a number (digits never take a space)
            if piece != " " or text[match.end() : match.end() + 1].isdigit():
                tokens += 1 + (len(piece) - 1) // 8
        else:
            tokens += 1
    return tokens + tokens // MARGIN_DIVISOR  # 5% more; small counts stay exact


def _json_tokens(value: Any) -> int:
    if not value:
        return 0
    return count_tokens(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_plain))


def _plain(value: Any) -> Any:
    """A door's parameter object (a pydantic model) as JSON data."""
    dump = getattr(value, "model_dump", None)
    return dump(mode="json", exclude_none=True, by_alias=True) if callable(dump) else str(value)


def _parts_tokens(parts: Iterable[Part], image_tokens: int = IMAGE_TOKENS) -> int:
    tokens = 0
    for part in parts:
        if isinstance(part, Text | Refusal):
            tokens += count_tokens(part.text)
        elif isinstance(part, Image):
            tokens += image_tokens
        elif isinstance(part, Audio):
            tokens += 10 + AUDIO_TOKENS_PER_KB * (len(part.data) // 1024 + 1)
        elif isinstance(part, Document):
            data = part.data
            tokens += FILE_REFERENCE_TOKENS if data is None else 100 + FILE_TOKENS_PER_KB * (len(data) // 1024 + 1)
            tokens += count_tokens(part.name or "")
        elif isinstance(part, ToolCall):
            tokens += MESSAGE_OVERHEAD + count_tokens(part.id) + count_tokens(part.name)
            tokens += count_tokens(part.arguments)
        elif isinstance(part, ToolResult):
            tokens += count_tokens(part.id) + _parts_tokens(part.content, image_tokens)
        elif isinstance(part, Reasoning):
            tokens += count_tokens(part.text) + len(part.signature or "") // 4 + len(part.encrypted or "") // 4
    return tokens


def estimate_prompt_tokens(conversation: Conversation, image_tokens: int = IMAGE_TOKENS) -> int:
    """The prompt tokens of the whole request, never knowingly fewer than an upstream would count:
    every message, tool definitions, the answer format's schema, and the door's other parameters
    (a predicted output, metadata) as JSON."""
    tokens = MESSAGE_OVERHEAD
    for message in conversation.messages:
        tokens += MESSAGE_OVERHEAD + count_tokens(message.role) + _parts_tokens(message.parts, image_tokens)
        tokens += count_tokens(message.name or "")
    for tool in conversation.tools:
        definition = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        tokens += MESSAGE_OVERHEAD + _json_tokens({k: v for k, v in definition.items() if v is not None})
    response_format = conversation.response_format
    if response_format is not None and response_format.schema is not None:
        tokens += MESSAGE_OVERHEAD + count_tokens(response_format.name or "") + _json_tokens(response_format.schema)
    tokens += _json_tokens(dict(conversation.params))
    return tokens


def image_count(conversation: Conversation) -> int:
    def count(parts: Iterable[Part]) -> int:
        return sum(1 if isinstance(p, Image) else count(p.content) if isinstance(p, ToolResult) else 0 for p in parts)

    return sum(count(m.parts) for m in conversation.messages)


def answer_text(answer: Answer) -> str:
    """The text of a buffered answer that its output tokens are estimated from."""
    return "".join(part_text(part) for output in answer.outputs for part in output.parts)


def part_text(part: Part) -> str:
    if isinstance(part, Text | Refusal | Reasoning):
        return part.text
    if isinstance(part, ToolCall):
        return part.name + part.arguments
    return ""


def event_text(event: Event) -> str:
    """The text a stream's event adds to the answer: `answer_text` of the answer it builds up, so
    that one answer is estimated alike buffered and streamed."""
    text = ""
    for delta in event.deltas:
        text += delta.text + delta.refusal + delta.reasoning
        if delta.tool is not None:
            text += (delta.tool.name or "") + delta.tool.arguments
    return text
