"""The closed-world bars of pretraining and SFT on the embedded default (tiny preset, bundled data).

    python benchmarks/closed_world.py --run-dir runs/bench --markdown

Runs (or reuses) data -> pretrain -> full SFT -> LoRA SFT in one run folder and reports:
- pretraining wall time and base fact completion (bar: >= 0.8 within 4 minutes on 2 CPU cores);
- held-out / trained QA accuracy after full SFT and the base model's on the same questions
  (bar: held-out >= 0.6 while the base model's <= 0.1);
- LoRA (r=8): trainable fraction (bar: <= 5 %) and held-out accuracy relative to full SFT (bar: >= 90 %).
"""

from __future__ import annotations

import argparse
import os
import time

from llmkit import data, pretrain, sft


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default="runs/bench")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    timings = {}
    for name, fn in (("data", lambda: data.run(data.config_for("tiny"), args.run_dir, args.overwrite, progress=False)),
                     ("pretrain", lambda: pretrain.run(pretrain.config_for("tiny"), args.run_dir, args.overwrite, progress=False)),
                     ("sft", lambda: sft.run(sft.config_for("tiny"), args.run_dir, args.overwrite, progress=False)),
                     ("lora", lambda: sft.run(sft.config_for("tiny", lora=True), args.run_dir, args.overwrite, progress=False))):
        start = time.perf_counter()
        result = fn()
        timings[name] = (time.perf_counter() - start, result)
    pre = timings["pretrain"][1].metrics
    full = timings["sft"][1].metrics
    lora = timings["lora"][1].metrics
    rows = [
        ("pretrain: wall time (s)", f"{pre['train_seconds']:.0f} training · {timings['pretrain'][0]:.0f} stage", "<= 240"),
        ("pretrain: base fact completion", f"{pre['fact_completion']:.2f}", ">= 0.8"),
        ("SFT (full): held-out QA", f"{full['qa_heldout']:.2f}", ">= 0.6"),
        ("SFT (full): trained-entity QA", f"{full['qa_trained']:.2f}", ""),
        ("base model: held-out QA", f"{full['base_qa_heldout']:.2f}", "<= 0.1"),
        ("SFT (full): answers ending with EOS", f"{full['format_ok_heldout']:.2f}", ""),
        ("SFT (full): wall time (s)", f"{full['train_seconds']:.0f}", ""),
        ("LoRA r=8: trainable fraction", f"{lora['trainable_fraction']:.2%}", "<= 5%"),
        ("LoRA r=8: held-out QA", f"{lora['qa_heldout']:.2f}", ""),
        ("LoRA / full held-out QA", f"{lora['qa_heldout'] / max(full['qa_heldout'], 1e-9):.2f}", ">= 0.90"),
        ("LoRA r=8: trained-entity QA", f"{lora['qa_trained']:.2f}", ""),
        ("LoRA r=8: wall time (s)", f"{lora['train_seconds']:.0f}", ""),
    ]
    if args.markdown:
        print(f"Machine: {os.cpu_count()} CPU cores. Run folder: {args.run_dir}\n")
        print("| measurement | value | bar |\n|---|---:|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} |")
    else:
        for r in rows:
            print(f"{r[0]:40s} {r[1]:>24s}  {r[2]}")


if __name__ == "__main__":
    main()
