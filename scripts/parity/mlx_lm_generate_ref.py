#!/usr/bin/env python3
"""Greedy reference tokens from mlx-lm for any model folder, as one JSON object.

    python3 scripts/parity/mlx_lm_generate_ref.py MODEL_DIR --prompt TEXT \\
        [--chat] [--system TEXT] [--max-tokens N] [--ignore-eos]

Prints {"prompt_ids", "generated_ids", "text", "streamed_text", "finish_reason",
"eos_token_ids", "prompt", "mlx_version", "mlx_lm_version", "blas"} on stdout:
`text` is tokenizer.decode(generated_ids); `streamed_text` is what mlx-lm's streaming
detokenizer yields (what `mlx_lm.generate` prints; BPE: first leading space dropped).

The prompt is built exactly as the `mlx_lm.generate` CLI builds it: with --chat the
tokenizer's chat template is rendered (add_generation_prompt=True, an optional system
message first) and encoded without special tokens; otherwise the text is encoded with
special tokens. `\\n` and `\\t` in --prompt are NOT unescaped (unlike the CLI): pass
real newlines. Decoding is greedy (mlx-lm's `generate_step` with its default argmax
sampler). Like `mlx_lm.generate`, it stops at an EOS token (model config /
generation_config.json / tokenizer eos) without emitting it; --ignore-eos produces
exactly --max-tokens tokens.

BLAS: OpenBLAS (/usr/lib/x86_64-linux-gnu/libopenblas.so.0) IS preloaded with
LD_PRELOAD when present, matching the Rust binary; PARITY_BLAS=reference disables it.
Runs offline (HF_HUB_OFFLINE=1): MODEL_DIR must be a local folder.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.setup_env()

import argparse  # noqa: E402
import json  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="Greedy reference generation with mlx-lm")
    ap.add_argument("model", help="model folder (mlx-lm layout)")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--chat", action="store_true", help="apply the chat template")
    ap.add_argument("--system", default=None, help="system message (with --chat)")
    ap.add_argument("--max-tokens", type=int, default=100)
    ap.add_argument("--ignore-eos", action="store_true", help="never stop on EOS")
    args = ap.parse_args()

    if not Path(args.model).is_dir():
        sys.exit(f"mlx_lm_generate_ref: not a folder: {args.model}")

    import mlx.core as mx
    import mlx_lm
    from mlx_lm import load

    model, tokenizer = load(args.model)
    messages = None
    if args.chat:
        messages = []
        if args.system is not None:
            messages.append({"role": "system", "content": args.system})
        messages.append({"role": "user", "content": args.prompt})
    text, ids = _common.encode_prompt(tokenizer, prompt=args.prompt, messages=messages)
    eos = sorted(tokenizer.eos_token_ids)
    gen, _, finish = _common.greedy_generate(
        model, ids, args.max_tokens, eos_ids=None if args.ignore_eos else set(eos)
    )
    out = {
        "prompt": text,
        "prompt_ids": ids,
        "generated_ids": gen,
        "text": tokenizer.decode(gen),
        "streamed_text": _common.streamed_text(tokenizer, gen),
        "finish_reason": finish,
        "eos_token_ids": eos,
        "mlx_version": mx.__version__,
        "mlx_lm_version": mlx_lm.__version__,
        "blas": _common.blas_in_use(),
    }
    json.dump(out, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
