"""The closed-world bars of every stage on the embedded default (tiny preset, bundled data).

    python benchmarks/closed_world.py --run-dir runs/bench --markdown

Runs (or reuses) data -> pretrain -> full SFT -> LoRA SFT -> reward model -> PPO, GRPO, RLOO, DPO in one run
folder and reports:
- pretraining wall time and base fact completion (bar: >= 0.8; the pipeline's time is `benchmarks/pipeline_time.py`'s);
- held-out / trained QA accuracy after full SFT and the base model's on the same questions
  (bar: held-out >= 0.6 while the base model's <= 0.1);
- LoRA (the tiny preset's rank, 4): trainable fraction (bar: <= 5 %) and held-out accuracy relative to full SFT (bar: >= 90 %);
- reward model: pairwise accuracy on the eval split (bar: >= 0.9), on held-out people, agreement with the oracle;
- PPO: oracle win-rate against SFT (bar: its 95 % interval over prompts above 0.5), oracle score at least 0.05
  above SFT's, at the KL it reports, QA at most 5 points below SFT's; GRPO, RLOO, DPO and KTO in the same table, on
  the same steps and learning rate.
"""

from __future__ import annotations

import argparse
import os
import time

from llmkit import data, pretrain, reward, sft
from llmkit.evaluate import pairwise_accuracy
from llmkit.formats import read_preferences
from llmkit.loaders import bundled_path
from llmkit.registry import stage
from llmkit.reward_model import RewardModel
from llmkit.rl import ppo

TRL_METHODS = ("grpo", "rloo", "dpo", "kto")


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
                     ("lora", lambda: sft.run(sft.config_for("tiny", lora=True), args.run_dir, args.overwrite, progress=False)),
                     ("reward", lambda: reward.run(reward.config_for("tiny"), args.run_dir, args.overwrite, progress=False)),
                     ("ppo", lambda: ppo.run(ppo.config_for("tiny"), args.run_dir, args.overwrite, progress=False)),
                     *((m, lambda m=m: stage(m).run(stage(m).config_for("tiny"), args.run_dir, overwrite=args.overwrite,
                                                    progress=False)) for m in TRL_METHODS)):
        start = time.perf_counter()
        result = fn()
        timings[name] = (time.perf_counter() - start, result)
    pre = timings["pretrain"][1].metrics
    full = timings["sft"][1].metrics
    lora = timings["lora"][1].metrics
    rm = timings["reward"][1].metrics
    heldout = pairwise_accuracy(RewardModel.load(timings["reward"][1].output_dir),
                                read_preferences(bundled_path("preferences_heldout.jsonl")))["accuracy"]
    rows = [
        ("pretrain: wall time (s)", f"{pre['train_seconds']:.0f} training · {timings['pretrain'][0]:.0f} stage", ""),
        ("pretrain: base fact completion", f"{pre['fact_completion']:.2f}", ">= 0.8"),
        ("SFT (full): held-out QA", f"{full['qa_heldout']:.2f}", ">= 0.6"),
        ("SFT (full): trained-entity QA", f"{full['qa_trained']:.2f}", ""),
        ("base model: held-out QA", f"{full['base_qa_heldout']:.2f}", "<= 0.1"),
        ("SFT (full): answers ending with EOS", f"{full['format_ok_heldout']:.2f}", ""),
        ("SFT (full): P(EOS) where those answers end", f"{full['eos_probability_heldout']:.2f}", ""),
        ("SFT (full): wall time (s)", f"{full['train_seconds']:.0f}", ""),
        ("LoRA: trainable fraction", f"{lora['trainable_fraction']:.2%}", "<= 5%"),
        ("LoRA: held-out QA", f"{lora['qa_heldout']:.2f}", ""),
        ("LoRA / full held-out QA", f"{lora['qa_heldout'] / max(full['qa_heldout'], 1e-9):.2f}", ">= 0.90"),
        ("LoRA: trained-entity QA", f"{lora['qa_trained']:.2f}", ""),
        ("LoRA: P(EOS) where its answers end", f"{lora['eos_probability_heldout']:.2f}", ""),
        ("LoRA: wall time (s)", f"{lora['train_seconds']:.0f}", ""),
        ("RM: pairwise accuracy, eval split (new questions, SFT people)", f"{rm['eval_accuracy']:.2f}", ">= 0.9"),
        ("RM: pairwise accuracy, held-out people", f"{heldout:.2f}", ""),
        ("RM: agrees with the oracle on fresh SFT answer pairs", f"{rm['oracle_agreement']:.2f} of {rm['oracle_decided_pairs']}", ""),
        ("RM: wall time (s)", f"{rm['train_seconds']:.0f}", ""),
    ]
    for name in ("ppo", *TRL_METHODS):
        m = timings[name][1].metrics
        rows += [
            (f"{name.upper()}: oracle win-rate vs SFT [95 % interval]", f"{m['oracle_win_rate']:.2f} "
             f"[{m['oracle_win_rate_ci_low']:.2f}, {m['oracle_win_rate_ci_high']:.2f}]", "interval above 0.5"),
            (f"{name.upper()}: KL to SFT per token (per sequence)", f"{m['eval_kl_per_token']:.3f} ({m['eval_kl_per_sequence']:.2f})", ""),
            (f"{name.upper()}: oracle score (SFT)", f"{m['eval_oracle_score']:.3f} ({m['eval_oracle_score_sft']:.3f})",
             "at least 0.05 above"),
            (f"{name.upper()}: QA held-out / trained (SFT)", f"{m['qa_heldout']:.2f} / {m['qa_trained']:.2f} "
             f"({m['sft_qa_heldout']:.2f} / {m['sft_qa_trained']:.2f})", "at most 0.05 below"),
            (f"{name.upper()}: response length (SFT)", f"{m['eval_response_length']:.1f} ({m['eval_response_length_sft']:.1f})", ""),
            (f"{name.upper()}: wall time (s), steps", f"{m['train_seconds']:.0f}, {m['steps']}", ""),
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
