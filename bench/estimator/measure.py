"""The estimator's error on a mixed corpus, against real tokenizers (cl100k_base, o200k_base).

    pip install bpe-openai==0.1.4   # ships the vocabularies inside the wheel: no network at run time
    python -m bench.estimator.measure [--write]

Prints, per sample, the estimate, the real counts and the ratios; `--write` stores the real counts in
`reference.json` (read by tests/unit/metering/test_estimate.py, which needs no tokenizer) and the table in
`results.md`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from chatgw.metering.estimate import count_tokens

HERE = Path(__file__).parent
ENCODINGS = ("cl100k_base", "o200k_base")
_OLD = re.compile(r"\w+|[^\w\s]")  # the estimator before issue 16


def main(argv: list[str]) -> int:
    import bpe_openai

    corpus: dict[str, str] = json.loads((HERE / "corpus.json").read_text())
    encoders = {name: bpe_openai.get_encoding(name) for name in ENCODINGS}
    reference = {
        sample: {name: len(enc.encode(text, disallowed_special=())) for name, enc in encoders.items()}
        for sample, text in corpus.items()
    }
    rows = [
        "| sample | chars | old estimate | estimate | cl100k | ratio | o200k | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    totals = {"estimate": 0, "old": 0, **dict.fromkeys(ENCODINGS, 0)}
    for sample, text in corpus.items():
        estimate, old = count_tokens(text), len(_OLD.findall(text))
        real = reference[sample]
        totals["estimate"] += estimate
        totals["old"] += old
        for name in ENCODINGS:
            totals[name] += real[name]
        ratios = [f"{real[n]} | {estimate / real[n]:.2f}" for n in ENCODINGS]
        rows.append(f"| {sample} | {len(text)} | {old} | {estimate} | {' | '.join(ratios)} |")
    ratios = [f"{totals[n]} | {totals['estimate'] / totals[n]:.2f}" for n in ENCODINGS]
    rows.append(f"| **all** | | {totals['old']} | {totals['estimate']} | {' | '.join(ratios)} |")
    table = "\n".join(rows)
    print(table)
    if "--write" in argv:
        (HERE / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
        (HERE / "results.md").write_text(
            "# Estimator error (bench/estimator/measure.py, bpe-openai 0.1.4)\n\n"
            "ratio = estimate / real count; below 1.00 would be an undercount.\n\n" + table + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
