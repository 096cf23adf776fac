"""Reward over-optimisation: PPO against the reward model with a weak KL penalty, RM score vs oracle score.

    python benchmarks/overoptimisation.py --run-dir runs/bench      # uses RUN_DIR/sft and RUN_DIR/reward

Runs llmkit PPO with beta = --beta (default 0.01, ten times weaker than the default) and a larger learning
rate for --steps steps into RUN_DIR/ppo_weak_kl, then groups the steps by their KL to the reference and prints,
per group, the mean reward-model score and the mean oracle score of the same rollouts. Gao et al. (2022): the
proxy keeps rising while the true score peaks and falls.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from llmkit.loaders import read_jsonl
from llmkit.rl import ppo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default="runs/bench", type=Path)
    ap.add_argument("--beta", type=float, default=0.01, help="PPO's KL coefficient β")
    ap.add_argument("--learning-rate", type=float, default=5e-5)
    ap.add_argument("--steps", type=int, default=100, help="PPO steps (PPOConfig.max_steps)")
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    start = time.perf_counter()
    result = ppo.run(ppo.config_for("tiny", beta=args.beta, learning_rate=args.learning_rate, max_steps=args.steps,
                                    stage_name="ppo_weak_kl"), args.run_dir, overwrite=args.overwrite, progress=False)
    log = [r for r in read_jsonl(result.output_dir / "log.jsonl") if "kl" in r]
    size = max(1, len(log) // args.groups)
    m = result.metrics
    print(f"PPO, beta {args.beta}, learning rate {args.learning_rate}, {args.steps} steps of 32 rollouts; "
          f"{time.perf_counter() - start:.0f} s. Rollouts of each group of {size} consecutive steps:\n")
    print("| steps | KL to SFT (per sequence) | RM score | oracle score | response length |")
    print("|---|---:|---:|---:|---:|")
    for i in range(0, len(log), size):
        g = log[i:i + size]
        mean = {k: sum(r[k] for r in g) / len(g) for k in ("kl", "score", "oracle_score", "response_length")}
        print(f"| {g[0]['step']}-{g[-1]['step']} | {mean['kl']:.2f} | {mean['score']:.2f} | {mean['oracle_score']:.3f} | "
              f"{mean['response_length']:.1f} |")
    print(f"\nHeld-out evaluation after the run: oracle win-rate vs SFT {m['oracle_win_rate']:.2f}, RM score "
          f"{m['eval_rm_score']:.2f} (SFT {m['eval_rm_score_sft']:.2f}), KL {m['eval_kl_per_token']:.3f}/token, "
          f"QA held-out {m['qa_heldout']:.2f} (SFT {m['sft_qa_heldout']:.2f}), trained {m['qa_trained']:.2f} "
          f"(SFT {m['sft_qa_trained']:.2f})")


if __name__ == "__main__":
    main()
