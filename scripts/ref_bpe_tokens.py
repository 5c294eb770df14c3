#!/usr/bin/env python3
"""Independent reference token ids for a GGUF's gpt2-style (byte-level BPE) vocabulary.

Reads the vocabulary and merges with the `gguf` package and tokenizes with a plain
Python implementation of byte-level BPE (OpenAI's GPT-2 algorithm): no `tokenizers`,
no llama.cpp. Used to produce the expected ids in crates/engine/tests/tokenizer_gguf.rs.

    pip install gguf regex
    python3 scripts/ref_bpe_tokens.py MODEL.gguf 'text one' 'text two' ...

Supports tokenizer.ggml.pre = smollm/starcoder (digits split one by one, then the
GPT-2 regex) and default/gpt2. Prints one JSON object {text: ids}.
"""
import json
import sys

import regex
from gguf import GGUFReader

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def main():
    r = GGUFReader(sys.argv[1])
    f = r.fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    merges = f["tokenizer.ggml.merges"].contents()
    pre = f["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in f else "default"
    assert f["tokenizer.ggml.model"].contents() == "gpt2"
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    ranks = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
    specials = sorted((t for t, ty in zip(tokens, types) if ty == 3), key=len, reverse=True)
    special_re = regex.compile("(" + "|".join(regex.escape(s) for s in specials) + ")")
    b2u = bytes_to_unicode()
    pat = regex.compile(GPT2)

    def bpe(word):
        parts = list(word)
        while len(parts) > 1:
            best = min(
                ((ranks.get((parts[i], parts[i + 1]), 1 << 60), i) for i in range(len(parts) - 1))
            )
            if best[0] == 1 << 60:
                break
            i = best[1]
            a, b = parts[i], parts[i + 1]
            # merge every occurrence of the pair, left to right
            out, j = [], 0
            while j < len(parts):
                if j < len(parts) - 1 and parts[j] == a and parts[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(parts[j])
                    j += 1
            parts = out
        return [vocab[p] for p in parts]

    def pieces(text):
        if pre in ("smollm", "starcoder", "refact", "codeshell"):
            chunks = regex.split(r"(\p{N})", text)
        elif pre in ("default", "gpt2"):
            chunks = [text]
        else:
            raise SystemExit(f"unsupported pre-tokenizer {pre}")
        for c in chunks:
            if c:
                yield from pat.findall(c)

    def encode(text):
        ids = []
        for seg in special_re.split(text):
            if not seg:
                continue
            if seg in vocab and seg in specials:
                ids.append(vocab[seg])
                continue
            for p in pieces(seg):
                ids.extend(bpe("".join(b2u[b] for b in p.encode("utf-8"))))
        return ids

    print(json.dumps({t: encode(t) for t in sys.argv[2:]}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
