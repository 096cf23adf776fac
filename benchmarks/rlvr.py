"""RL with a rule reward on the closed world's verifiable tasks: GRPO against the exact-answer check, from the
tiny SFT model, measured on two test sets against SFT.

    python benchmarks/rlvr.py --run-dir runs/bench      # builds data, pretrain and sft there if missing

The policy trains on `tasks_train.jsonl` (6,400 questions about the people of the SFT data, each asked once in
the run) and answers, greedily, `tasks_heldout.jsonl` (people neither SFT nor RL saw) and `tasks_eval.jsonl` (new
questions about the people RL trained on, none asked in training or demonstrated in SFT). Each gain is paired over
the same questions, with its 95 % interval; closed-world QA and the KL to SFT say what the gain cost, and a table
by kind of task says where the gain is. The budget is larger than the loss lab's (`benchmarks/loss_lab.py`: 40
steps of 32 answers, where no verifier row's interval cleared zero): 400 steps of 128 answers, 8 per question.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from data_stage import commit, matmul_peak, provenance

from llmkit import runs
from llmkit.loaders import read_jsonl
from llmkit.oracle import Oracle
from llmkit.pipeline import run_pipeline, stage_summary, write_report
from llmkit.rl import grpo

STAGE = "rlvr_grpo"
SETTINGS = dict(reward="verifier", loss_type="dr_grpo", max_steps=400, batch_size=128, num_generations=8,
                learning_rate=5e-5, beta=0.02, temperature=1.0, save_every=50, stage_name=STAGE)
SPLITS = (("task", "held-out people (tasks_heldout.jsonl)"),
          ("task_new", "new questions about RL's people (tasks_eval.jsonl)"))


def table(m: dict) -> str:
    lines = ["| test set | questions | SFT exact | GRPO exact | gain | 95 % interval |", "|---|---:|---:|---:|---:|---|"]
    for key, label in SPLITS:
        lines.append(f"| {label} | {m[key + '_questions']} | {m[key + '_accuracy_sft']:.3f} | {m[key + '_accuracy']:.3f} "
                     f"| {100 * m[key + '_gain']:+.2f} points | [{100 * m[key + '_gain_ci_low']:+.2f}, "
                     f"{100 * m[key + '_gain_ci_high']:+.2f}] |")
    lines += ["", f"Held-out QA {m['qa_heldout']:.3f} (SFT {m['sft_qa_heldout']:.3f}), trained QA {m['qa_trained']:.3f} "
              f"(SFT {m['sft_qa_trained']:.3f}); KL to SFT {m['eval_kl_per_token']:.3f} per token; groups with one "
              f"reward for all their answers {m['health_zero_std_groups']:.0%}; training {m['train_seconds']:.0f} s."]
    return "\n".join(lines)


def by_kind(samples: Path) -> str:
    """Exact answers per kind of task and test set, from the stage's task_samples.jsonl: where the gain is."""
    oracle = Oracle()
    count = defaultdict(lambda: [0, 0, 0])
    for row in read_jsonl(samples):
        kind = (oracle.task(row["prompt"]) or ("other",))[0]
        c = count[(kind, row["split"])]
        c[0], c[1], c[2] = c[0] + 1, c[1] + row["sft_correct"], c[2] + row["policy_correct"]
    lines = ["| task | test set | questions | SFT exact | GRPO exact |", "|---|---|---:|---:|---:|"]
    names = dict(SPLITS)
    for (kind, split), (n, sft, pol) in sorted(count.items()):
        lines.append(f"| {kind} | {names.get(split, split).split(' (')[0]} | {n} | {sft / n:.2f} | {pol / n:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench"))
    ap.add_argument("--preset", default="tiny")
    args = ap.parse_args()
    if not runs.finished(args.run_dir / "sft"):
        run_pipeline(args.run_dir, args.preset, stages=("data", "pretrain", "sft"), progress=False)
    config = grpo.config_for(args.preset, **SETTINGS)
    done = runs.read_stage_config(args.run_dir / STAGE) if runs.finished(args.run_dir / STAGE) else None
    if done is not None and any(done.get(k) != v for k, v in SETTINGS.items()):
        raise SystemExit(f"{args.run_dir / STAGE} was trained with other settings; move it away")
    start = time.perf_counter()
    result = grpo.run(config, args.run_dir, progress=True)
    took = time.perf_counter() - start
    print("\n" + provenance(f"Commit {commit()}, {matmul_peak()}; preset {args.preset}; "
                            f"{'reused' if result.reused else f'{took:.0f} s'}."))
    print("GRPO settings: " + ", ".join(f"{k}={v}" for k, v in SETTINGS.items() if k != "stage_name") + "\n")
    print(table(result.metrics))
    print("\nThe stage's measurements with their bars (also in RUN_DIR/report.md):\n" + stage_summary(result))
    print(f"report: {write_report(args.run_dir)}")
    print("\n" + by_kind(args.run_dir / STAGE / "task_samples.jsonl"))


if __name__ == "__main__":
    main()
