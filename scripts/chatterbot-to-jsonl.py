#!/usr/bin/env python3
"""Turns the English dialogs of the chatterbot-corpus package into an mlx-lm dataset.

    python3 scripts/chatterbot-to-jsonl.py OUT_DIR [--format text|chat] [--valid-every N]

Source: the PyPI package `chatterbot-corpus` (pinned in scripts/requirements-test.txt),
by Gunther Cox, BSD 3-Clause licence; its data/english/*.yml files hold
`conversations:` lists of [question, answer, ...] turns. Each (question, first answer)
pair becomes one row: `{"text": "Q: ...\\nA: ..."}` (default) or a chat row
`{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`. Rows are kept in
file and corpus order; every N-th row (default 5) goes to valid.jsonl, every N-th of
the rest to test.jsonl, the others to train.jsonl, so the split is the same on every
machine. Prints the row counts as JSON.
"""

import argparse
import json
import os
from pathlib import Path

import chatterbot_corpus
import yaml


def pairs():
    data = Path(os.path.dirname(chatterbot_corpus.__file__)) / "data" / "english"
    for path in sorted(data.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conv in doc.get("conversations") or []:
            turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
            if len(turns) >= 2:
                yield turns[0], turns[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--format", choices=["text", "chat"], default="text")
    ap.add_argument("--valid-every", type=int, default=5)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "valid": [], "test": []}
    rest = 0
    for i, (q, ans) in enumerate(pairs()):
        if a.format == "text":
            row = {"text": f"Q: {q}\nA: {ans}"}
        else:
            row = {
                "messages": [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": ans},
                ]
            }
        if i % a.valid_every == a.valid_every - 1:
            splits["valid"].append(row)
        else:
            rest += 1
            split = "test" if rest % a.valid_every == 0 else "train"
            splits[split].append(row)
    for name, rows in splits.items():
        tmp = out / f".{name}.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out / f"{name}.jsonl")
    print(json.dumps({k: len(v) for k, v in splits.items()}))


if __name__ == "__main__":
    main()
