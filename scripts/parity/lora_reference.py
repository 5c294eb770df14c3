#!/usr/bin/env python3
"""mlx-lm references for the engine's training tests (run by crates/engine/tests/train_*.rs).

    python3 scripts/parity/lora_reference.py train --model DIR --data DIR --adapters DIR \\
        --out OUT_DIR [--batch-size B] [--max-seq-length N] [--seed S] [--lr LR] \\
        [--iters N] [--val-batches N] [--steps-per-eval N] [--mask-prompt]
    python3 scripts/parity/lora_reference.py generate --model DIR --adapters DIR \\
        --prompt TEXT [--max-tokens N]

`train` loads the model, applies LoRA from the adapter folder's adapter_config.json and
initial weights (as `mlx_lm.lora --resume-adapter-file`), and writes OUT_DIR/ref.json:
  examples      [[tokens, offset]] of train.jsonl as mlx-lm's datasets.py makes them
  first_batch   {tokens, lengths}: the first batch of iterate_batches(seed)
  loss, ntoks   default_loss of that batch with the initial adapters
  OUT_DIR/sgd.safetensors, adam.safetensors: the adapters after one step on that batch
    (nn.value_and_grad + optimizer.update, as the trainer's step)
  trajectory    {train: [loss per step], val: [[iter, loss]]} of mlx-lm's tuner `train`
    for --iters steps with Adam (steps_per_report=1), after np.random.seed(seed)
Datasets are given to iterate_batches as plain lists of (tokens, offset), so rows are
sorted by token length (mlx_lm.lora's CacheDataset sorts by the number of JSON keys).
`tokenize` prints [[tokens, offset]] of train.jsonl (honours --mask-prompt).
`generate` prints {"generated_ids"}: greedy tokens with the adapters (mlx_lm.utils.load).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.setup_env()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import types  # noqa: E402


def train_refs(a):
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.datasets import load_local_dataset
    from mlx_lm.tuner.trainer import TrainingArgs, default_loss, iterate_batches, train
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    adapters = Path(a.adapters)
    cfg = json.loads((adapters / "adapter_config.json").read_text())

    def fresh_model():
        model, tok = load(a.model)
        model.freeze()
        linear_to_lora_layers(
            model,
            cfg["num_layers"],
            cfg["lora_parameters"],
            use_dora=cfg.get("fine_tune_type") == "dora",
        )
        model.load_weights(str(adapters / "adapters.safetensors"), strict=False)
        return model, tok

    model, tok = fresh_model()
    args = types.SimpleNamespace(mask_prompt=a.mask_prompt)
    train_set, valid_set, _ = load_local_dataset(Path(a.data), tok, args)
    examples = [train_set.process(train_set[i]) for i in range(len(train_set))]
    examples = [(list(map(int, t)), int(o)) for t, o in examples]
    valid = [valid_set.process(valid_set[i]) for i in range(len(valid_set))]

    batch, lengths = next(
        iterate_batches(examples, a.batch_size, a.max_seq_length, seed=a.seed)
    )
    loss, ntoks = default_loss(model, batch, lengths)
    mx.eval(loss, ntoks)
    ref = {
        "examples": examples,
        "first_batch": {"tokens": batch.tolist(), "lengths": lengths.tolist()},
        "loss": loss.item(),
        "ntoks": ntoks.item(),
    }

    for name, opt in [
        ("sgd", optim.SGD(learning_rate=a.lr)),
        ("adam", optim.Adam(learning_rate=a.lr)),
    ]:
        m, _ = fresh_model()
        vg = nn.value_and_grad(m, default_loss)
        (_, _), g = vg(m, batch, lengths)
        opt.update(m, g)
        params = dict(tree_flatten(m.trainable_parameters()))
        mx.eval(params)
        mx.save_safetensors(str(out / f"{name}.safetensors"), params)

    m, _ = fresh_model()
    losses, vals = [], []

    class CB:
        def on_train_loss_report(self, info):
            losses.append(info["train_loss"])

        def on_val_loss_report(self, info):
            vals.append([info["iteration"], info["val_loss"]])

    np.random.seed(a.seed)
    targs = TrainingArgs(
        batch_size=a.batch_size,
        iters=a.iters,
        val_batches=a.val_batches,
        steps_per_report=1,
        steps_per_eval=a.steps_per_eval,
        steps_per_save=10**9,
        max_seq_length=a.max_seq_length,
        adapter_file=str(out / "trained.safetensors"),
    )
    with contextlib.redirect_stdout(sys.stderr):
        train(
            model=m,
            optimizer=optim.Adam(learning_rate=a.lr),
            train_dataset=examples,
            val_dataset=valid,
            args=targs,
            training_callback=CB(),
        )
    ref["trajectory"] = {"train": losses, "val": vals}
    (out / "ref.json").write_text(json.dumps(ref))


def tokenize(a):
    import types

    from mlx_lm.tuner.datasets import load_local_dataset
    from mlx_lm.utils import load

    _, tok = load(a.model)
    args = types.SimpleNamespace(mask_prompt=a.mask_prompt)
    train_set, _, _ = load_local_dataset(Path(a.data), tok, args)
    examples = [train_set.process(train_set[i]) for i in range(len(train_set))]
    print(json.dumps([(list(map(int, t)), int(o)) for t, o in examples]))


def generate(a):
    import mlx.core as mx
    from mlx_lm.generate import generate_step
    from mlx_lm.utils import load

    model, tok = load(a.model, adapter_path=a.adapters)
    ids = tok.encode(a.prompt)
    out = []
    for t, _ in generate_step(mx.array(ids), model, max_tokens=a.max_tokens):
        out.append(int(t))
    print(json.dumps({"prompt_ids": ids, "generated_ids": out}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["train", "generate", "tokenize"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapters")
    ap.add_argument("--data")
    ap.add_argument("--out")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-seq-length", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--val-batches", type=int, default=25)
    ap.add_argument("--steps-per-eval", type=int, default=200)
    ap.add_argument("--mask-prompt", action="store_true")
    ap.add_argument("--prompt", default="hello")
    ap.add_argument("--max-tokens", type=int, default=12)
    a = ap.parse_args()
    {"train": train_refs, "generate": generate, "tokenize": tokenize}[a.mode](a)


if __name__ == "__main__":
    main()
