#!/usr/bin/env python3
"""Makes the quickstart's example dataset, examples/datasets/unicode-names/.

Source: the Unicode Character Database (character names), as Python's standard
`unicodedata` module ships it. Licence: the Unicode License v3 (permissive,
MIT-like: use, copy, modify and distribute with the copyright notice), see
https://www.unicode.org/license.txt. No download: the data comes with Python.

Rows are chat conversations in mlx-lm's `{"messages": [...]}` format that teach
a model to answer "what is the Unicode name of X" and "which character is NAME"
in one fixed style. Deterministic: the same Python (UCD version) gives the same
files, byte for byte.

    python3 scripts/make-example-dataset.py [OUT_DIR]
"""

import json
import os
import random
import sys
import unicodedata

# Blocks with familiar, printable characters (start, end inclusive).
BLOCKS = [
    (0x00C0, 0x00FF),  # Latin-1 Supplement letters
    (0x0391, 0x03C9),  # Greek
    (0x0410, 0x044F),  # Cyrillic
    (0x2190, 0x21FF),  # Arrows
    (0x2200, 0x22FF),  # Mathematical Operators
    (0x20A0, 0x20C0),  # Currency Symbols
    (0x2600, 0x26FF),  # Miscellaneous Symbols
]
TRAIN, VALID, TEST = 320, 40, 40


def characters():
    out = []
    for start, end in BLOCKS:
        for cp in range(start, end + 1):
            ch = chr(cp)
            name = unicodedata.name(ch, "")
            if name and unicodedata.category(ch)[0] in "LSN":
                out.append((cp, ch, name))
    return out


def row(cp, ch, name, ask_name):
    code = f"U+{cp:04X}"
    if ask_name:
        q = f"What is the Unicode name of the character {ch}?"
        a = f"{ch} is {code}, {name}."
    else:
        q = f"Which character is {name}?"
        a = f"{name} is {ch} ({code})."
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "examples", "datasets", "unicode-names")
    os.makedirs(out_dir, exist_ok=True)
    chars = characters()
    rng = random.Random(20240601)
    rng.shuffle(chars)
    need = TRAIN + VALID + TEST
    if len(chars) < need:
        sys.exit(f"only {len(chars)} characters, need {need}")
    rows = [row(*c, ask_name=(i % 2 == 0)) for i, c in enumerate(chars[:need])]
    splits = {"train": rows[:TRAIN], "valid": rows[TRAIN:TRAIN + VALID], "test": rows[TRAIN + VALID:]}
    for split, data in splits.items():
        path = os.path.join(out_dir, f"{split}.jsonl")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for r in data:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    print(f"{out_dir}: {TRAIN}/{VALID}/{TEST} rows (UCD {unicodedata.unidata_version})")


if __name__ == "__main__":
    main()
