"""Shared helpers for the parity scripts (imported before mlx is imported).

BLAS: MLX's Linux CPU wheel links the reference BLAS, whose `cblas_*` symbols are
resolved dynamically. When OpenBLAS is present we re-exec Python with it in
LD_PRELOAD, so float32 matmuls run on OpenBLAS -- the same BLAS the Rust binary links
ahead of libmlx -- which is both faster and numerically what the engine computes.
Set PARITY_BLAS=reference to keep the wheel's reference BLAS. The BLAS actually
mapped into the process is reported by `blas_in_use()` and recorded in the outputs.
"""

import os
import sys

OPENBLAS = "/usr/lib/x86_64-linux-gnu/libopenblas.so.0"
_MARK = "PARITY_BLAS_REEXEC"


def setup_env():
    """Offline Hugging Face, quiet transformers, and OpenBLAS preloaded if present.

    Must run before mlx / transformers are imported; may re-exec the process.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    want = os.environ.get("PARITY_BLAS", "openblas")
    is_script = bool(sys.argv and sys.argv[0] and os.path.isfile(sys.argv[0]))
    if (
        want == "openblas"
        and is_script
        and os.path.exists(OPENBLAS)
        and not os.environ.get(_MARK)
    ):
        preload = os.environ.get("LD_PRELOAD", "")
        if "openblas" not in preload:
            env = dict(os.environ)
            env["LD_PRELOAD"] = (OPENBLAS + " " + preload).strip()
            env[_MARK] = "1"
            os.execve(sys.executable, [sys.executable] + sys.argv, env)


def blas_in_use():
    """'openblas' if libopenblas is mapped into this process, else 'reference'."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return "unknown"
    return "openblas" if "libopenblas" in maps else "reference"


def encode_prompt(tokenizer, prompt=None, messages=None):
    """Token ids exactly as `mlx_lm.generate` (the CLI) builds them.

    Chat: the template is rendered to a string with add_generation_prompt=True, then
    encoded without special tokens. Plain text: encoded with special tokens (the
    tokenizer decides whether that adds a BOS).
    """
    if messages is not None:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return text, tokenizer.encode(text, add_special_tokens=False)
    return prompt, tokenizer.encode(prompt, add_special_tokens=True)


def greedy_generate(model, prompt_ids, max_tokens, eos_ids=None):
    """mlx-lm's own greedy loop (`generate_step`, default argmax sampler).

    `generate_step` itself never stops on EOS (that check lives in
    `stream_generate`), so with eos_ids=None all max_tokens are produced. With
    eos_ids, stop like `stream_generate` does: the EOS token is not emitted.
    Returns (ids, per-step log-probabilities as mx arrays, finish_reason).
    """
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    ids, logprobs = [], []
    finish = "length"
    for tok, lp in generate_step(mx.array(prompt_ids), model, max_tokens=max_tokens):
        tok = int(tok)
        if eos_ids is not None and tok in eos_ids:
            finish = "stop"
            break
        ids.append(tok)
        logprobs.append(lp)
    return ids, logprobs, finish


def streamed_text(tokenizer, ids):
    """Text as mlx-lm's streaming detokenizer (what `mlx_lm.generate` prints) builds
    it; for BPE tokenizers it drops the leading space of the first token."""
    detok = tokenizer.detokenizer
    detok.reset()
    for t in ids:
        detok.add_token(t)
    detok.finalize()
    return detok.text
