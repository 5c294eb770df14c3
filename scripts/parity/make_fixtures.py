#!/usr/bin/env python3
"""Build mlx-lm parity fixtures: tiny random-weight models + mlx-lm's greedy tokens.

    python3 scripts/parity/make_fixtures.py [OUT_DIR]     # default target/parity-fixtures
    python3 scripts/parity/make_fixtures.py OUT_DIR --force

Everything is made by mlx-lm itself (pinned in scripts/requirements-test.txt):
  * a byte-level BPE tokenizer (Python `tokenizers`, GPT-2/SmolLM2 style, ChatML
    template like SmolLM2's), loaded through mlx-lm's `load_tokenizer` and written
    back by mlx-lm's `save` (so tokenizer files are what mlx-lm writes);
  * float32 models built from mlx-lm's own classes (`mlx_lm.models.llama`, `qwen2`,
    `qwen3`), seeded, saved with `mlx_lm.utils.save` (model.safetensors + index,
    config.json via `save_config`, tokenizer, README.md model card);
  * quantized copies made with `mlx_lm.convert.convert` (4-bit g64, 8-bit g32, and a
    mixed per-layer copy through a `quant_predicate`);
  * for every model, mlx-lm's greedy tokens (`generate_step`, 20 tokens, EOS never
    stops it because `generate_step` has no EOS check) and the first-step logits.

Deterministic: fixed seeds, sorted iteration, no wall-clock data in the fixtures.
Idempotent: if OUT_DIR/index.json carries the same build key (hash of these scripts,
versions, BLAS) nothing is done; otherwise everything is rebuilt in a temporary
directory beside OUT_DIR and renamed into place.

BLAS: OpenBLAS (/usr/lib/x86_64-linux-gnu/libopenblas.so.0) IS preloaded with
LD_PRELOAD when present (see _common.py), like the Rust binary links it ahead of
libmlx; PARITY_BLAS=reference keeps the wheel's reference BLAS. index.json records
which one was used. Runs in ~5 s on 2 CPU cores (~6.7 MB written).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.setup_env()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

FORMAT_VERSION = 1
MAX_TOKENS = 20
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 640
# Acceptance of a random model (all its variants, all prompts); else the next seed.
MIN_DISTINCT = 5  # distinct tokens among the MAX_TOKENS generated
# Logit gap between the best and second-best token at every step, relative to the
# standard deviation of that step's logits: float32 reassociation differences are
# ~1e-6 of the logit scale, so 1e-3 leaves a wide safety factor for exact tokens.
MIN_REL_MARGIN = 1e-3
SEED_ATTEMPTS = 12

# SmolLM2-135M-Instruct's chat template, verbatim.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
    "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' "
    "+ message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = """\
The quick brown fox jumps over the lazy dog. A small model learns to predict the next
word from the words that came before it. Once upon a time, in a small village by the
sea, there lived an old fisherman and his daughter. Every morning they walked down to
the harbour, checked the nets, and talked about the weather, the price of bread, and
the ships that sailed past on their way to the city.

What is the capital of France? The capital of France is Paris. What is the capital of
Italy? The capital of Italy is Rome. Berlin is the capital of Germany, and Madrid is
the capital of Spain. Water boils at 100 degrees Celsius at sea level; it freezes at 0.
There are 7 days in a week, 12 months in a year, and 24 hours in a day.

Hello! How can I help you today? I would like to know how a computer stores numbers.
A computer stores numbers as bits, zeros and ones, grouped into bytes of eight bits.
Text is stored as bytes too: the letter A is 65, the letter a is 97, and a space is 32.
Some characters need more than one byte, like the e in café, the i in naïve, or the
dash in "2024 — a good year". Prices rose 12% in 2024, from $3.50 to $3.92 per cup.

The user asked the assistant a question, and the assistant gave a short, helpful
answer. Good answers are clear, correct, and kind. If you do not know, say so. Think
step by step: first read the question, then find the facts, then write the answer.
Models are trained on text, evaluated on held-out data, and served to many users.
The weights are stored in files; the tokenizer turns text into numbers and back.

def add(a, b):
    return a + b

for i in range(10):
    print(i * i)

Spring, summer, autumn, winter. Red, orange, yellow, green, blue, indigo, violet.
One, two, three, four, five, six, seven, eight, nine, ten. The end.
"""

PROMPTS = [
    {"name": "fox", "prompt": "The quick brown fox"},
    {
        "name": "village",
        "prompt": "Once upon a time, in a small village by the sea, there lived an old "
        "fisherman and his daughter. Every morning they walked down to the harbour, "
        "checked the nets, and talked about the weather, the price of bread, and",
    },
    {"name": "unicode", "prompt": "Café prices rose 12% in 2024 — naïve"},
    {
        "name": "chat",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    },
]

# Base float32 architectures. Hidden 64 and every linear input a multiple of 32, so all
# layers quantize at group 32; qwen2's intermediate 160 is NOT a multiple of 64, so its
# down_proj stays unquantized at group 64 (mlx-lm's rule).
BASES = [
    {
        "name": "llama-tied",
        "seed": 2001,
        "features": ["gqa", "tied-embeddings (key omitted: mlx-lm default true)"],
        "config": {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5,
            "vocab_size": None,
            "max_position_embeddings": 2048,
            "rope_theta": 10000.0,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
    },
    {
        "name": "llama-untied-llama3rope",
        "seed": 10002,
        "features": ["gqa", "lm_head", "rope_scaling llama3", "generation_config eos list"],
        "generation_config": {"bos_token_id": 1, "eos_token_id": [2, 0]},
        "config": {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 64,
            "num_hidden_layers": 3,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5,
            "vocab_size": None,
            "max_position_embeddings": 131072,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "factor": 32.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
    },
    {
        "name": "mistral-traditional",
        "seed": 3,
        "features": ["model_type mistral (= llama)", "rope_traditional", "mqa", "lm_head"],
        "config": {
            "model_type": "mistral",
            "architectures": ["MistralForCausalLM"],
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "rms_norm_eps": 1e-6,
            "vocab_size": None,
            "max_position_embeddings": 4096,
            "rope_theta": 10000.0,
            "rope_traditional": True,
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
    },
    {
        "name": "qwen2-bias",
        "seed": 4,
        "features": ["gqa", "q/k/v biases", "tied-embeddings", "intermediate 160 (not /64)"],
        "config": {
            "model_type": "qwen2",
            "architectures": ["Qwen2ForCausalLM"],
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "intermediate_size": 160,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-6,
            "vocab_size": None,
            "max_position_embeddings": 32768,
            "rope_theta": 1000000.0,
            "tie_word_embeddings": True,
            "bos_token_id": 0,
            "eos_token_id": 2,
        },
    },
    {
        "name": "qwen3-qknorm",
        "seed": 5,
        "features": ["gqa", "q/k norms", "head_dim 32 != hidden/heads", "lm_head"],
        "config": {
            "model_type": "qwen3",
            "architectures": ["Qwen3ForCausalLM"],
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
            "rms_norm_eps": 1e-6,
            "vocab_size": None,
            "max_position_embeddings": 40960,
            "rope_theta": 1000000.0,
            "tie_word_embeddings": False,
            "bos_token_id": 0,
            "eos_token_id": 2,
        },
    },
]

QUANTS = [
    {"suffix": "q4-g64", "bits": 4, "group_size": 64},
    {"suffix": "q8-g32", "bits": 8, "group_size": 32},
]
# One mixed copy per base listed here: per-layer overrides through a quant_predicate.
MIXED_BASES = ["llama-untied-llama3rope", "qwen3-qknorm"]


def mixed_predicate(path, module):
    """4-bit g64 by default; lm_head and layer 1's v_proj 8-bit g32; layer 0's
    down_proj left in float (False: mlx-lm writes no config entry for it)."""
    if path == "lm_head":
        return {"group_size": 32, "bits": 8, "mode": "affine"}
    if path.endswith("layers.1.self_attn.v_proj"):
        return {"group_size": 32, "bits": 8, "mode": "affine"}
    if path.endswith("layers.0.mlp.down_proj"):
        return False
    return True


def build_key():
    import mlx.core as mx
    import mlx_lm
    import tokenizers
    import transformers

    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for f in ("make_fixtures.py", "_common.py"):
        h.update((here / f).read_bytes())
    versions = {
        "mlx": mx.__version__,
        "mlx_lm": mlx_lm.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }
    blas = _common.blas_in_use()
    h.update(json.dumps([versions, blas], sort_keys=True).encode())
    return h.hexdigest(), versions, blas


def train_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS], trainer=trainer)
    out.mkdir(parents=True)
    tok.save(str(out / "tokenizer.json"))
    tok_cfg = {
        "add_prefix_space": False,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
        "tokenizer_class": "GPT2Tokenizer",
        "vocab_size": tok.get_vocab_size(),
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    return tok.get_vocab_size()


def init_weights(model, seed):
    """Seeded normal init, scaled so greedy decoding is not degenerate: norm weights
    around 1 (not exactly 1, so a loader that drops them is caught), biases small.
    The final norm gets zero-mean weights: with tied embeddings a positive final norm
    makes every token predict itself (the same token repeated forever)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    mx.random.seed(seed)
    new = []
    for path, p in sorted(tree_flatten(model.parameters()), key=lambda kv: kv[0]):
        leaf = path.rsplit(".", 1)[-1]
        if path == "model.norm.weight":
            v = mx.random.normal(p.shape)
        elif "norm" in path and leaf == "weight":
            v = 1.0 + 0.2 * mx.random.normal(p.shape)
        elif leaf == "bias":
            v = 0.1 * mx.random.normal(p.shape)
        elif "embed_tokens" in path:
            v = 1.0 * mx.random.normal(p.shape)
        else:
            v = mx.random.normal(p.shape) * (1.5 / (p.shape[-1] ** 0.5))
        new.append((path, v.astype(mx.float32)))
    model.update(tree_unflatten(new))
    mx.eval(model.parameters())


@contextlib.contextmanager
def quiet():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield buf


def make_base(out_dir: Path, tok_dir: Path, base: dict, vocab: int, seed: int):
    from mlx_lm.utils import _get_classes, load_tokenizer, save

    config = copy.deepcopy(base["config"])
    config["vocab_size"] = vocab
    src = out_dir / f".src-{base['name']}"
    shutil.copytree(tok_dir, src)
    if "generation_config" in base:
        (src / "generation_config.json").write_text(
            json.dumps(base["generation_config"], indent=2) + "\n"
        )
    model_cls, args_cls = _get_classes(config)
    model = model_cls(args_cls.from_dict(config))
    init_weights(model, seed)
    tokenizer = load_tokenizer(src)
    dst = out_dir / f"{base['name']}-f32"
    with quiet():
        save(dst, src, model, tokenizer, config)
    shutil.rmtree(src)
    return dst


def make_quant(f32_dir: Path, dst: Path, bits, group_size, predicate=None):
    from mlx_lm.convert import convert

    with quiet():
        convert(
            str(f32_dir),
            mlx_path=str(dst),
            quantize=True,
            q_bits=bits,
            q_group_size=group_size,
            quant_predicate=predicate,
        )
    return dst


def reference(model_dir: Path):
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.models.cache import make_prompt_cache

    model, tokenizer, config = load(str(model_dir), return_config=True)
    eos = sorted(tokenizer.eos_token_ids)
    prompts = []
    for p in PROMPTS:
        text, ids = _common.encode_prompt(
            tokenizer, prompt=p.get("prompt"), messages=p.get("messages")
        )
        gen, lps, _ = _common.greedy_generate(model, ids, MAX_TOKENS, eos_ids=None)
        # First-step logits computed the way generate_step does: prompt[:-1] prefilled
        # into a fresh KV cache, then the last prompt token.
        cache = make_prompt_cache(model)
        if len(ids) > 1:
            model(mx.array(ids[:-1])[None], cache=cache)
        logits = model(mx.array(ids[-1:])[None], cache=cache)[0, -1].astype(mx.float32)
        lse = mx.logsumexp(logits)
        mx.eval(logits, lse)
        assert mx.allclose(logits - lse, lps[0], atol=1e-5).item(), "logits mismatch"
        assert int(mx.argmax(logits).item()) == gen[0]
        chosen, margins, rel = [], [], []
        for tok, lp in zip(gen, lps):
            top2 = mx.sort(lp)[-2:]
            margins.append(float(top2[1] - top2[0]))
            rel.append(margins[-1] / float(mx.std(lp)))
            chosen.append(float(lp[tok]))
        entry = {"name": p["name"], "kind": "chat" if "messages" in p else "text"}
        if "messages" in p:
            entry["messages"] = p["messages"]
        entry.update(
            {
                "prompt": text,
                "prompt_ids": ids,
                "generated_ids": gen,
                "generated_text": tokenizer.decode(gen),
                "streamed_text": _common.streamed_text(tokenizer, gen),
                "generated_logprobs": chosen,
                "top2_margins": margins,
                "min_rel_margin": min(rel),
                "first_logits": logits.tolist(),
                "first_logsumexp": float(lse),
            }
        )
        prompts.append(entry)
    return {"eos_token_ids": eos, "config_quantization": config.get("quantization")}, prompts


def build_family(tmp, tok_dir, base, seed, vocab, versions, blas):
    """The f32 model of one base, its quantized copies, and their references.
    Returns (index entries, problems)."""
    f32 = make_base(tmp, tok_dir, base, vocab, seed)
    plan = [(f32, None)]
    for q in QUANTS:
        dst = tmp / f"{base['name']}-{q['suffix']}"
        plan.append((make_quant(f32, dst, q["bits"], q["group_size"]), q))
    if base["name"] in MIXED_BASES:
        dst = tmp / f"{base['name']}-mixed"
        plan.append((make_quant(f32, dst, 4, 64, mixed_predicate), "mixed"))

    entries, problems = [], []
    for folder, q in plan:
        name = folder.name
        meta, prompts = reference(folder)
        min_distinct = min(len(set(e["generated_ids"])) for e in prompts)
        min_margin = min(e["min_rel_margin"] for e in prompts)
        for e in prompts:
            if len(set(e["generated_ids"])) < MIN_DISTINCT:
                problems.append(f"{name}/{e['name']}: degenerate generation")
            if e["min_rel_margin"] < MIN_REL_MARGIN:
                problems.append(f"{name}/{e['name']}: near tie {e['min_rel_margin']:.1e}")
        ref = {
            "format": FORMAT_VERSION,
            "model": name,
            "mlx_version": versions["mlx"],
            "mlx_lm_version": versions["mlx_lm"],
            "blas": blas,
            "max_tokens": MAX_TOKENS,
            "sampler": "greedy (argmax), EOS not a stop",
            "eos_token_ids": meta["eos_token_ids"],
            "prompts": prompts,
        }
        ref_path = tmp / f"{name}.reference.json"
        ref_path.write_text(json.dumps(ref) + "\n")
        cfg = json.loads((folder / "config.json").read_text())
        entries.append(
            {
                "name": name,
                "path": name,
                "reference": ref_path.name,
                "model_type": cfg["model_type"],
                "base": base["name"],
                "features": base["features"],
                "seed": seed,
                "dtype": "float32",
                "quantization": cfg.get("quantization"),
                "size_bytes": dir_size(folder),
                "min_rel_margin": min_margin,
                "min_distinct": min_distinct,
            }
        )
    return entries, problems


def dir_size(p: Path):
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def build(tmp: Path, key: str, versions: dict, blas: str):
    import mlx.core as mx

    t0 = time.time()
    tmp.mkdir(parents=True)
    tok_dir = tmp / "tokenizer"
    vocab = train_tokenizer(tok_dir)
    print(f"tokenizer: vocab {vocab} ({time.time() - t0:.1f}s)", file=sys.stderr)

    models, problems, seeds = [], [], {}
    for base in BASES:
        for attempt in range(SEED_ATTEMPTS):
            seed = base["seed"] + 1000 * attempt
            t1 = time.time()
            family, bad = build_family(tmp, tok_dir, base, seed, vocab, versions, blas)
            if not bad or attempt == SEED_ATTEMPTS - 1:
                break
            for m in family:
                shutil.rmtree(tmp / m["path"])
                (tmp / m["reference"]).unlink()
        seeds[base["name"]] = seed
        problems += bad
        models += family
        print(
            f"{base['name']}: seed {seed} (attempt {attempt + 1}), "
            f"{time.time() - t1:.1f}s",
            file=sys.stderr,
        )
        for m in family:
            print(
                f"  {m['name']:34s} {m['size_bytes'] / 1024:6.0f} KiB  "
                f"min top-2 margin/std {m['min_rel_margin']:.4f}  "
                f"distinct tokens >= {m['min_distinct']}",
                file=sys.stderr,
            )
    index = {
        "format": FORMAT_VERSION,
        "build_key": key,
        "generator": "scripts/parity/make_fixtures.py",
        "versions": versions,
        "blas": blas,
        "max_tokens": MAX_TOKENS,
        "tokenizer": "tokenizer",
        "vocab_size": vocab,
        "prompts": [p["name"] for p in PROMPTS],
        "seeds": seeds,
        "problems": problems,
        "models": models,
    }
    (tmp / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    mx.clear_cache()
    return index, time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", nargs="?", default="target/parity-fixtures")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = ap.parse_args()
    out = Path(args.out_dir).resolve()

    key, versions, blas = build_key()
    idx = out / "index.json"
    if not args.force and idx.exists():
        try:
            if json.loads(idx.read_text()).get("build_key") == key:
                print(f"parity fixtures up to date: {out}", file=sys.stderr)
                return 0
        except (OSError, ValueError):
            pass

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        index, secs = build(tmp, key, versions, blas)
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"parity fixtures: {len(index['models'])} models, {dir_size(out) / 1e6:.1f} MB, "
        f"{secs:.1f}s, blas={blas}, mlx {versions['mlx']}, mlx-lm {versions['mlx_lm']} -> {out}",
        file=sys.stderr,
    )
    for p in index["problems"]:
        print(f"WARNING: {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
