"""Closed-world QA of finished checkpoints on every question, and how right each kind of answer is.

    python benchmarks/rl_qa.py runs/bench/sft runs/bench/ppo runs/bench/grpo ...

The first folder is the baseline (the SFT model); its tokenizer is used for all. Per checkpoint: greedy QA
accuracy on all 320 held-out and 480 trained questions (`llmkit.evaluate.qa_accuracy`, as the RL stages report
it), the points gained or lost against the baseline, the oracle win-rate its metrics.json recorded (if any), and
on the held-out questions, per first flaw of the answer (`Oracle.flaw`: right, wrong, rude, rambling, …), how
many answers had it and how many of those still got the fact right. That last table is what shows why a
policy that dropped the demonstrators' habits answers more questions right than the SFT model that had them.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmkit.evaluate import qa_accuracy
from llmkit.generation import chat_generate
from llmkit.loaders import bundled_path, read_jsonl
from llmkit.oracle import Oracle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="model folders; the first is the baseline")
    args = ap.parse_args()

    splits = {s: read_jsonl(bundled_path(f"qa_{s}.jsonl")) for s in ("heldout", "trained")}
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoints[0], local_files_only=True)
    oracle = Oracle()
    rows, flaws = [], {}
    for folder in args.checkpoints:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
        prompts = [r["prompt"] for r in splits["heldout"]]
        counts = collections.Counter()  # the greedy answers qa_accuracy gives, judged as it judges them
        for p, a in zip(prompts, chat_generate(model, tokenizer, prompts)):
            counts[oracle.flaw(p, a["text"]), oracle.is_correct(p, a["text"])] += 1
        flaws[folder] = counts
        qa = {"heldout": sum(n for (_, right), n in counts.items() if right) / len(prompts),
              "trained": qa_accuracy(model, tokenizer, splits["trained"], oracle)["accuracy"]}
        metrics = folder / "metrics.json"
        win = json.loads(metrics.read_text()).get("oracle_win_rate") if metrics.exists() else None
        rows.append((folder, qa, win))

    base = rows[0][1]
    print(f"Questions: {len(splits['heldout'])} held-out, {len(splits['trained'])} trained; baseline {rows[0][0]}\n")
    print("| checkpoint | oracle win-rate vs SFT | QA held-out (points vs baseline) | QA trained (points) |")
    print("|---|---:|---:|---:|")
    for folder, qa, win in rows:
        d = {s: 100 * (qa[s] - base[s]) for s in qa}
        print(f"| {folder} | {'' if win is None else f'{win:.3f}'} | {qa['heldout']:.3f} ({d['heldout']:+.1f}) "
              f"| {qa['trained']:.3f} ({d['trained']:+.1f}) |")
    kinds = sorted({k for c in flaws.values() for k, _ in c})
    print("\nHeld-out questions by the answer's first flaw: answers (of them with the fact right)\n")
    print("| checkpoint | " + " | ".join(kinds) + " |\n|---|" + "---:|" * len(kinds))
    for folder, c in flaws.items():
        cells = [f"{c[k, True] + c[k, False]} ({c[k, True]})" for k in kinds]
        print(f"| {folder} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
