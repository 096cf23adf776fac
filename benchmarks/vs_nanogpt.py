"""Pretraining against the best-known CPU recipe: nanoGPT's shakespeare-char run and `llmkit pretrain` on the
same text split, scored by one evaluator in bits per byte, with both wall times.

    python benchmarks/vs_nanogpt.py --nanogpt ~/src/nanoGPT
    python benchmarks/vs_nanogpt.py --nanogpt ~/src/nanoGPT --llmkit "--max-steps 600" --skip-nanogpt

nanoGPT runs from the user's checkout as its README's CPU recipe says (`train.py config/train_shakespeare_char.py
--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4
--n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`, plus `--dtype=float32`: a CPU has
no float16 training), on the split its `data/shakespeare_char/prepare.py` makes: the first 90 % of `input.txt` to
train on, the last 10 % to validate. Nothing of nanoGPT is copied here; its prepare.py runs if train.bin is
missing (it needs `input.txt` there, or the network to fetch it). llmkit pretrains on the same first 90 % as a
text file (`llmkit pretrain --train-data`, the tiny preset, its own BPE; it holds out the last 5 % of that for its
early stopping) with the flags in `--llmkit`.

One evaluator scores both on the same 10 %: each model's tokens of the validation text, cut into windows of its
context length; every token but the first is predicted once, and the summed negative log-likelihood in bits is
divided by the UTF-8 bytes predicted. Wall time: each training process from start to exit, evaluations included.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch
from data_stage import commit, matmul_peak, provenance

NANOGPT_RECIPE = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                  "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                  "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0", "--dtype=float32"]
# Depth 2 (width 128, ~0.9 M parameters with its 4k BPE), 250 steps of 8 x 128 tokens (under one epoch) at a peak
# learning rate of 3e-3, no evaluation or checkpoint on the way. The tiny preset's defaults (`--max-steps 1100`,
# depth 4) reach a lower bits per byte at about 3x nanoGPT's time; runs that chose these: BENCHMARKS.md.
LLMKIT_DEFAULT = "--depth 2 --max-steps 250 --learning-rate 0.003 --eval-every 1000 --save-every 1000"


def bits_per_byte(nll_sum, ids: list[int], context: int, predicted_bytes: int) -> float:
    """The evaluator: `nll_sum(x, y)` is a model's summed negative log-likelihood (nats) of targets y given x,
    both (1, n) tensors; windows of `context` tokens step through `ids` so that each token but the first is a
    target exactly once."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(ids) - 1, context):
            x = torch.tensor([ids[i:i + context]])
            y = torch.tensor([ids[i + 1:i + context + 1]])
            total += nll_sum(x[:, : y.shape[1]], y)
    return total / math.log(2) / predicted_bytes


def score_nanogpt(checkout: Path, out_dir: Path, val_text: str) -> float:
    sys.path.insert(0, str(checkout))
    from model import GPT, GPTConfig  # nanoGPT's own model.py, from the user's checkout

    ckpt = torch.load(out_dir / "ckpt.pt", map_location="cpu", weights_only=False)
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    model.eval()
    meta = pickle.loads((checkout / "data" / "shakespeare_char" / "meta.pkl").read_bytes())
    ids = [meta["stoi"][c] for c in val_text]

    def nll(x, y):
        _, loss = model(x, y)
        return loss.item() * y.numel()

    return bits_per_byte(nll, ids, ckpt["model_args"]["block_size"], len(val_text[1:].encode()))


def score_llmkit(stage_dir: Path, val_text: str) -> float:
    from transformers import AutoTokenizer

    from llmkit import runs
    from llmkit.model import MODEL_SIZES, load_causal_lm

    tokenizer = AutoTokenizer.from_pretrained(stage_dir)
    model = load_causal_lm(stage_dir)
    model.eval()
    ids = tokenizer(val_text, add_special_tokens=False)["input_ids"]
    first = len(tokenizer.decode(ids[:1]).encode())

    def nll(x, y):
        logits = model(input_ids=x).logits.float()
        return torch.nn.functional.cross_entropy(logits[0], y[0], reduction="sum").item()

    config = runs.read_stage_config(stage_dir)
    context = config.get("seq_len") or MODEL_SIZES[config["model_size"]].seq_len  # what it trained on
    return bits_per_byte(nll, ids, context, len(val_text.encode()) - first)


def timed(command: list[str], cwd: Path, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{shlex.join(command)} failed ({done.returncode}); its output: {log}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanogpt", type=Path, required=True, help="a nanoGPT checkout (github.com/karpathy/nanoGPT)")
    ap.add_argument("--work-dir", type=Path, default=Path("runs/vs_nanogpt"))
    ap.add_argument("--llmkit", default=LLMKIT_DEFAULT, help=f"llmkit pretrain's flags (default: {LLMKIT_DEFAULT!r})")
    ap.add_argument("--skip-nanogpt", action="store_true", help="reuse the work folder's nanoGPT run")
    args = ap.parse_args()
    checkout, work = args.nanogpt.resolve(), args.work_dir.resolve()
    data_dir = checkout / "data" / "shakespeare_char"
    if not (checkout / "train.py").exists():
        raise SystemExit(f"{checkout}: no train.py; give a nanoGPT checkout")
    if not (data_dir / "input.txt").exists():
        raise SystemExit(f"{data_dir / 'input.txt'} is missing: put tiny shakespeare there (nanoGPT's prepare.py "
                         "fetches it from github.com/karpathy/char-rnn)")
    if not (data_dir / "train.bin").exists():
        subprocess.run([sys.executable, "prepare.py"], cwd=data_dir, check=True)
    text = (data_dir / "input.txt").read_text()
    cut = int(len(text) * 0.9)  # prepare.py's split
    train_text, val_text = text[:cut], text[cut:]
    work.mkdir(parents=True, exist_ok=True)
    results = json.loads((work / "results.json").read_text()) if (work / "results.json").exists() else {}

    if not args.skip_nanogpt or "nanogpt" not in results:
        out_dir = work / "nanogpt"
        seconds = timed([sys.executable, "train.py", *NANOGPT_RECIPE, f"--out_dir={out_dir}"], checkout,
                        work / "nanogpt.log")
        results["nanogpt"] = {"seconds": seconds, "bpb": score_nanogpt(checkout, out_dir, val_text),
                              "command": "python train.py " + " ".join(NANOGPT_RECIPE)}
    (work / "train_text").mkdir(exist_ok=True)
    (work / "train_text" / "input.txt").write_text(train_text)
    run_dir = work / "llmkit"
    flags = shlex.split(args.llmkit)
    seconds = timed([sys.executable, "-m", "llmkit", "pretrain", "--run-dir", str(run_dir), "--overwrite", "--quiet",
                     "--train-data", str(work / "train_text" / "input.txt"), "--no-closed-world", *flags], Path.cwd(),
                    work / "llmkit.log")
    results["llmkit"] = {"seconds": seconds, "bpb": score_llmkit(run_dir / "pretrain", val_text),
                         "command": "llmkit pretrain --train-data TRAIN_90% " + " ".join(flags)}
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    n, m = results["nanogpt"], results["llmkit"]
    print("\n" + provenance(f"Commit {commit()}, {matmul_peak()}; nanoGPT {commit(checkout)}."))
    print(f"Validation: the last 10 % of tiny shakespeare, {len(val_text.encode()):,} bytes.\n")
    print("| run | command | wall time (s) | validation bits per byte |\n|---|---|---:|---:|")
    for name, r in (("nanoGPT", n), ("llmkit", m)):
        print(f"| {name} | `{r['command']}` | {r['seconds']:.0f} | {r['bpb']:.3f} |")
    ratio, met = m["seconds"] / n["seconds"], m["seconds"] <= 0.5 * n["seconds"] and m["bpb"] <= n["bpb"]
    print(f"\nllmkit / nanoGPT wall time: {ratio:.2f}; bits per byte {m['bpb'] - n['bpb']:+.3f}. Target: nanoGPT's "
          f"bits per byte or lower in at most 0.5x its time: {'met' if met else 'not met'}.")


if __name__ == "__main__":
    main()
