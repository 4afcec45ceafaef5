"""The token estimate never undercounts: against real tokenizers' counts on a mixed corpus
(recorded by bench/estimator/measure.py, so no tokenizer is needed here), and over the whole
request (tools, schemas, images, files), which the old estimate ignored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chatgw.conversation import Conversation
from chatgw.metering.estimate import FILE_REFERENCE_TOKENS, IMAGE_TOKENS, count_tokens, estimate_prompt_tokens
from tests.support.conversations import conversation_of

ESTIMATOR = Path(__file__).resolve().parents[3] / "bench" / "estimator"
CORPUS: dict[str, str] = json.loads((ESTIMATOR / "corpus.json").read_text())
REFERENCE: dict[str, dict[str, int]] = json.loads((ESTIMATOR / "reference.json").read_text())


@pytest.mark.parametrize("sample", sorted(CORPUS))
def test_never_below_a_real_tokenizer_and_not_far_above(sample: str) -> None:
    estimate, real = count_tokens(CORPUS[sample]), REFERENCE[sample]
    assert estimate >= max(real.values()), (estimate, real)
    assert estimate <= 1.8 * real["cl100k_base"], (estimate, real)


@pytest.mark.parametrize("text", ["中" * 100_000, "\uff58" * 5000, "a1B2c3D4" * 1000, "😀" * 100, "x" * 10_000])
def test_text_without_spaces_counts_every_character(text: str) -> None:
    assert count_tokens(text) >= len(text) // 5  # the old estimate counted '中' * 100000 as 1 token


def request(**fields: Any) -> Conversation:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return conversation_of(body)


def test_the_whole_request_counts() -> None:
    base = estimate_prompt_tokens(request())
    schema = {
        "type": "object",
        "properties": {
            f"field_{i}": {"type": "string", "description": "The value of this field in the answer, as text."}
            for i in range(300)
        },
    }
    tools = [{"type": "function", "function": {"name": f"f{i}", "parameters": schema}} for i in range(13)]
    assert len(json.dumps(tools)) > 360_000
    assert estimate_prompt_tokens(request(tools=tools)) > base + 60_000  # the old estimate: base
    answer_format = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    assert estimate_prompt_tokens(request(response_format=answer_format)) > base + 5_000
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 400}}
    file = {"type": "file", "file": {"file_id": "file-1"}}
    parts = [{"type": "text", "text": "look"}, image, file]
    assert estimate_prompt_tokens(request(messages=[{"role": "user", "content": parts}])) > (
        base + IMAGE_TOKENS + FILE_REFERENCE_TOKENS - 10
    )
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": json.dumps({"q": "y" * 4000})}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "z " * 3000},
    ]
    assert estimate_prompt_tokens(request(messages=messages)) > base + 3000 + 800
